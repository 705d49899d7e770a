"""S3c-Math: spontaneous step-level self-correction (Yan et al., 2024, "S^3c-Math: Spontaneous
Step-level Self-correction Makes Large Language Models Better Mathematical Reasoners", arXiv:2409.01524).

The model learns to notice, *while it writes a solution*, that the step it has just written is wrong,
and to write the corrected step right after it, in the same response (no second turn, no prompt)::

    Q:47+85\\nS:7+5+0=12,4+8+1=14!4+8+1=13\\nA:132
                       ^^^^^^^^ wrong step (loss masked)
                               ^ reflection mark (trained)
                                ^^^^^^^^ corrected step and the rest (trained)

Data construction (the paper's step-level sampling on existing solution paths):

1. the current policy samples ``samples_per_problem`` solutions of each training problem at
   ``temperature``;
2. a **step verifier** names the first wrong step of every wrong sample
   (:func:`~selfgen.data.reasoning.step_feedback`: the first step that differs from the task's
   reference steps); samples whose error cannot be located at a step the sample actually wrote (an
   answer-only error, a missing or surplus step) give no correction example;
3. a located wrong step ``w_k`` becomes a correction example: the correct prefix ``t_1..t_{k-1}``, the
   policy's own wrong step ``w_k``, the reflection mark, then the correct step ``t_k`` and the rest of
   the correct solution ``t_{k+1}.., answer`` (:func:`correction_example`); every problem also keeps
   its clean worked solution (the paper trains on the correction data together with the original
   step-by-step data).

Loss: SFT, ``L = -(1/|C'|) sum_{t in C'} log pi(y_t | x, y_<t)`` where ``C'`` is the completion minus
the wrong step's tokens (``TextPair.weighted_spans`` weight 0): the model is never trained to produce
the wrong step, only to react to it (mark) and to continue correctly from it.

``mode: clean`` is the matched control, SFT on the same problems' clean solutions only (the correction
examples dropped), with the same number of optimiser steps and the same batch size.

Evaluation (held-out, greedy): accuracy, and the spontaneous corrections: ``correction_rate`` (share
of completions with a reflection mark), ``correction_fix_rate`` (share of problems where the step
before the first mark was wrong, a correction follows, and the final answer is right),
``correction_false_alarm_rate`` (a mark after a correct step), ``correction_accuracy`` (accuracy
among completions with a mark). With ``eval_samples`` > 0 the same on that many T = ``temperature``
samples per problem (``sampled_*``). Per-problem results go to ``output_dir/eval_items-<k>.jsonl``
(and ``eval_samples-<k>.jsonl``) for paired comparisons.

Departures from the paper: the step verifier is the task's rule-based step critic (reference steps),
not Monte Carlo rollouts from sampled steps; the reflection is a single mark (``!``), not a written
explanation of the error (the paper's GPT-4 reflections; the tiny model has no language for it); the
wrong steps come from the policy's own full samples rather than from one sampled step at each prefix of
a reference path; one round by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...data.problems import Problem
from ...data.reasoning import reference_steps, step_feedback
from ...data.tasks import completion_text, solution_steps
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .objectives import SFTCollator, SFTObjective, TextPair

REFLECTION_MARK = "!"
EVAL_SAMPLE_SEED = 7_001  # the sampled held-out evaluation (same draws for every run)
S3C_MODES = ("s3c", "clean")


@dataclass
class S3cConfig(IterativeConfig):
    task: str = "add_hard"
    iterations: int = 1
    problems_per_iteration: int = 2000
    samples_per_problem: int = 1
    temperature: float = 1.0
    max_train_steps: int = 200
    train_batch_size: int = 32
    learning_rate: float = 3e-4
    eval_problems: int = 500
    mode: str = "s3c"  # s3c (correction + clean examples) | clean (the SFT control: clean examples only)
    eval_samples: int = 0  # > 0: also this many T = `temperature` samples per held-out problem (sampled_* metrics)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in S3C_MODES:
            raise ValueError(f"mode must be one of {S3C_MODES}, got {self.mode!r}")


def located_wrong_step(task, problem: Problem, completion: str) -> int | None:
    """0-based index of the first wrong step of a wrong ``completion`` that the completion itself wrote and
    the reference has at that position; ``None`` for a right completion or an error not at such a step."""
    feedback = step_feedback(task, problem, completion)
    if feedback.correct or feedback.step is None:
        return None
    index = feedback.step - 1
    written, reference = solution_steps(completion), reference_steps(task, problem)
    return index if index < min(len(written), len(reference)) else None


def correction_example(prompt: str, steps: list[str], answer: str, index: int, wrong_step: str) -> TextPair:
    """``prompt`` -> ``S:t_1,..,t_{k-1},w_k!t_k,..,t_n\\nA:answer`` with ``w_k`` = ``wrong_step`` at
    ``index`` = k-1 given loss weight 0 (the wrong step's characters, not the mark)."""
    if wrong_step == steps[index]:
        raise ValueError(f"wrong_step must differ from the correct step at index {index}, got {wrong_step!r}")
    head = "S:" + "".join(f"{step}," for step in steps[:index])
    completion = head + wrong_step + REFLECTION_MARK + ",".join(steps[index:]) + f"\nA:{answer}"
    return TextPair(prompt, completion, weighted_spans=((len(head), len(head) + len(wrong_step), 0.0),))


def corrections(completion: str) -> list[tuple[int, str, str]]:
    """The spontaneous corrections of a completion: ``(step index, wrong step, corrected step)`` for every
    step ``a!b`` of its ``S:`` line (the corrected step is what follows the last mark)."""
    found = []
    for index, step in enumerate(solution_steps(completion)):
        if REFLECTION_MARK in step:
            before, after = step.split(REFLECTION_MARK, 1)
            found.append((index, before, after.split(REFLECTION_MARK)[-1]))
    return found


def correction_stats(task, problems: list[Problem], completions: list[str], correct: list[bool]) -> dict[str, float]:
    """Held-out spontaneous-correction rates (see the module docstring); the first mark of a completion counts."""
    marked = fixed = false_alarms = marked_right = 0
    for problem, completion, right in zip(problems, completions, correct):
        found = corrections(completion)
        if not found:
            continue
        marked += 1
        marked_right += right
        index, wrong, _ = found[0]
        reference = reference_steps(task, problem)
        was_wrong = index >= len(reference) or wrong != reference[index]
        fixed += was_wrong and right
        false_alarms += not was_wrong
    n = max(len(completions), 1)
    return {
        "correction_rate": marked / n,
        "correction_fix_rate": fixed / n,
        "correction_false_alarm_rate": false_alarms / n,
        "correction_accuracy": marked_right / marked if marked else float("nan"),
    }


class S3cTrainer(IterativeTrainer):
    """S3c-Math on the shared driver: each iteration samples, locates wrong steps, SFTs on the
    correction + clean examples (``mode: clean``: the clean ones only)."""

    config_class = S3cConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "correction_rate", "correction_fix_rate")

    def examples(self, problems: list[Problem], completions: list[list[str]]) -> tuple[list[TextPair], int]:
        """Every problem's clean worked solution, plus (``mode: s3c``) one correction example from the
        first of its samples with a located wrong step; returns the examples and the correction count."""
        pairs, found = [], 0
        for problem, samples in zip(problems, completions):
            prompt, worked = self.prompt(problem), self.task.worked_solution(problem)
            steps, answer = solution_steps(worked), problem.answer
            pairs.append(TextPair(prompt, completion_text(steps, answer)))
            for sample in samples:
                index = located_wrong_step(self.task, problem, sample)
                if index is not None:
                    found += 1
                    if self.config.mode == "s3c":
                        pairs.append(correction_example(prompt, steps, answer, index, solution_steps(sample)[index]))
                    break
        return pairs, found

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        rollouts = self.solve(problems, seed=iteration)
        per_problem = [[r.text for r in rollouts[i * config.samples_per_problem : (i + 1) * config.samples_per_problem]] for i in range(len(problems))]
        pairs, found = self.examples(problems, per_problem)
        logs = {
            "train_accuracy": sum(self.verify(p, r.text) for p, r in zip([p for p in problems for _ in range(config.samples_per_problem)], rollouts)) / len(rollouts),
            "located_wrong_steps": found / len(problems),
            "correction_examples": float(found if config.mode == "s3c" else 0),
        }
        return Round(SFTObjective(), pairs, SFTCollator(self.tokenizer, config.max_length), logs)

    def evaluate(self) -> dict[str, float]:
        rollouts = self.solve(self.eval_set, temperature=0.0, num_samples=1)
        texts = [r.text for r in rollouts]
        correct = [self.verify(p, text) for p, text in zip(self.eval_set, texts)]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.evaluations = getattr(self, "evaluations", -1) + 1
        with open(self.output_dir / f"eval_items-{self.evaluations}.jsonl", "w") as handle:
            for problem, text, right in zip(self.eval_set, texts, correct):
                handle.write(json.dumps({"id": problem.id, "correct": right, "completion": text}) + "\n")
        metrics = {"accuracy": sum(correct) / len(correct), **correction_stats(self.task, self.eval_set, texts, correct)}
        if self.config.eval_samples:
            n = self.config.eval_samples
            sampled = [r.text for r in self.solve(self.eval_set, num_samples=n, seed=EVAL_SAMPLE_SEED)]
            problems = [p for p in self.eval_set for _ in range(n)]
            right = [self.verify(p, text) for p, text in zip(problems, sampled)]
            stats = correction_stats(self.task, problems, sampled, right)
            metrics.update({"sampled_accuracy": sum(right) / len(right), **{f"sampled_{k}": v for k, v in stats.items()}})
            with open(self.output_dir / f"eval_samples-{self.evaluations}.jsonl", "w") as handle:
                for problem, text, ok in zip(problems, sampled, right):
                    handle.write(json.dumps({"id": problem.id, "correct": ok, "completion": text}) + "\n")
        return metrics


METHOD = Method(
    name="s3c",
    summary="S3c-Math: SFT on own wrong steps + reflection mark + corrected step, loss masked on the wrong step",
    config_class=S3cConfig,
    train=run_recipe(S3cTrainer),
)
