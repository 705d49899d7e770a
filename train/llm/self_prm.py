"""Self-PRM (Feng et al., 2025, "Is PRM Necessary? Problem-Solving RL Implicitly Induces PRM Capability
in LLMs", arXiv:2505.11227): the policy is its own process reward model.

:func:`self_rerank` (a test-time function for any causal LM): the model samples N solutions of a
problem, then judges each of its own solutions step by step - it is asked for the first wrong step
(ProcessBench's task: the earliest error, or "all steps right") with the prompt format's
``feedback_request`` and answers ``F:Y`` / ``F:N<k>`` (:func:`~selfgen.data.reasoning.parse_feedback`).
A solution's self-score is 1 when judged right, ``(k - 1) / n_steps`` when judged wrong from step
``k``, 0 for a bare ``F:N`` or no verdict; the answer is the majority answer among the top-scored
solutions (best-of-N by self-judgement; the vote only breaks ties).

Probe (:func:`step_error_metrics`, ProcessBench's metric): on solutions with a known earliest error
(``label`` = k, 1-based; 0 for a wrong answer with no located step; -1 for a right solution),
``error_accuracy`` = share of erroneous solutions whose predicted earliest error is exactly ``k``
(any ``F:N`` for ``label`` 0), ``correct_accuracy`` = share of right solutions judged right,
``f1`` = their harmonic mean; ``precision`` = share of solutions judged right that are right (the
paper's "low precision" finding), ``error_recall`` = share of erroneous solutions flagged at all.

:class:`SelfPRMTrainer` runs the paper's question on our tiny model: does problem-solving RL (GRPO with
the verifier's reward, :class:`~selfgen.train.llm.grpo.GRPOTrainer`) raise the policy's step-judgement?
Iteration 0 (``seed_round``) teaches the judging *format* once by SFT on the policy's own T = 1
samples of training problems labelled by the rule-based step critic
(:func:`~selfgen.data.reasoning.step_feedback`), together with its own correct samples (rejection
sampling, so solving is kept); iterations 1..K are plain GRPO on solving - no judge data, no judge
reward - with the taught model as the KL reference. Every evaluation after the seed round reports the
probe on a fixed held-out set (the seed-round model's ``rerank_samples`` samples of every held-out
problem, labelled by the rule critic; the same solutions for every iteration, so before/after is
paired by item) and, on the current policy's own fresh samples, best-of-N by self-judgement vs
majority@N vs pass@N. Per-item results go to ``output_dir/self_prm-<k>.jsonl``.

Departures: the paper's models (DeepSeek-R1, QwQ-32B) can already judge from a prompt; our tiny base
has never seen a judging format, so the seed round teaches it (with rule labels - the only supervision
of the judge, before RL); the judgement is a verdict with the earliest wrong step, no written
critique; the probe set is the model's own held-out samples, not ProcessBench.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ...data.problems import Problem
from ...data.reasoning import Feedback, parse_feedback, step_feedback
from ...data.tasks import derive_seed, solution_steps
from ..registry import Method
from .driver import Round, run_recipe
from .grpo import GRPOConfig, GRPOTrainer
from .modeling import frozen_copy
from .objectives import SFTCollator, SFTObjective, TextPair
from .prompts import PromptFormat
from .rewards import answer_key, majority_answer
from .rollout import SamplingParams, generate_rollouts

JUDGE_SEED = 9_100  # seed-round problems: training seeds apart from the GRPO iterations'


def self_judge(
    model: nn.Module,
    tokenizer,
    questions: Sequence[str],
    completions: Sequence[str],
    prompt_format: PromptFormat | None = None,
    max_new_tokens: int = 6,
    batch_size: int = 256,
) -> list[Feedback | None]:
    """The model's greedy judgement of each ``completions[i]`` (a solution of ``questions[i]``):
    ``Feedback(True)``, ``Feedback(False, k)`` (first wrong step k), ``Feedback(False)``, or ``None``."""
    if len(questions) != len(completions):
        raise ValueError(f"questions and completions must have the same length, got {len(questions)} and {len(completions)}")
    fmt = prompt_format or PromptFormat()
    prompts = [fmt.feedback_request(q, c) for q, c in zip(questions, completions)]
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, stop_strings=("\n",))
    return [parse_feedback(r.text) for r in generate_rollouts(model, tokenizer, prompts, params)]


def self_score(judgement: Feedback | None, completion: str) -> float:
    """1 for a solution judged right, ``(k - 1) / n_steps`` for one judged wrong from step ``k``, else 0."""
    if judgement is None or (not judgement.correct and judgement.step is None):
        return 0.0
    if judgement.correct:
        return 1.0
    return min(judgement.step - 1, len(solution_steps(completion))) / max(len(solution_steps(completion)), 1)


def rerank_choice(completions: Sequence[str], scores: Sequence[float], extract=None) -> str | None:
    """The majority answer among the top-scored completions (best-of-N, ties broken by a vote)."""
    top = max(scores)
    keys = [answer_key(c) if extract is None else answer_key(c, extract) for c, s in zip(completions, scores) if s == top]
    return majority_answer(keys)


def self_rerank(
    model: nn.Module,
    tokenizer,
    questions: Sequence[str],
    samples: Sequence[Sequence[str]],
    prompt_format: PromptFormat | None = None,
    max_new_tokens: int = 6,
    batch_size: int = 256,
) -> tuple[list[str | None], list[list[float]]]:
    """Best-of-N by the model's own step judgement: for each question its ``samples`` (N solutions)
    are judged (:func:`self_judge`), scored (:func:`self_score`) and the chosen answer returned, with
    the scores."""
    fmt = prompt_format or PromptFormat()
    flat_q = [q for q, group in zip(questions, samples) for _ in group]
    flat_c = [c for group in samples for c in group]
    judgements = self_judge(model, tokenizer, flat_q, flat_c, fmt, max_new_tokens, batch_size)
    answers, scores, start = [], [], 0
    for group in samples:
        group_scores = [self_score(j, c) for j, c in zip(judgements[start : start + len(group)], group)]
        answers.append(rerank_choice(group, group_scores, fmt.answer))
        scores.append(group_scores)
        start += len(group)
    return answers, scores


def error_label(task, problem: Problem, completion: str) -> int:
    """ProcessBench-style label: -1 right, k the first wrong step (1-based), 0 wrong with no located step."""
    feedback = step_feedback(task, problem, completion)
    return -1 if feedback.correct else (feedback.step or 0)


def judgement_hits(judgement: Feedback | None, label: int) -> tuple[bool, bool]:
    """``(hit, judged_right)``: whether the judgement matches ``label`` (exact earliest step; any ``N``
    for label 0) and whether it says the solution is right."""
    judged_right = judgement is not None and judgement.correct
    if label == -1:
        return judged_right, judged_right
    wrong = judgement is not None and not judgement.correct
    return wrong and (label == 0 or judgement.step == label), judged_right


def step_error_metrics(judgements: Sequence[Feedback | None], labels: Sequence[int]) -> dict[str, float]:
    """ProcessBench's error/correct accuracies and F1, plus precision and error recall (module docstring)."""
    hits = [judgement_hits(j, label) for j, label in zip(judgements, labels)]
    errors = [hit for (hit, _), label in zip(hits, labels) if label != -1]
    rights = [hit for (hit, _), label in zip(hits, labels) if label == -1]
    accepted = [label == -1 for (_, judged_right), label in zip(hits, labels) if judged_right]
    flagged = [j is not None and not j.correct for j, label in zip(judgements, labels) if label != -1]
    nan = float("nan")
    error_accuracy = sum(errors) / len(errors) if errors else nan
    correct_accuracy = sum(rights) / len(rights) if rights else nan
    total = error_accuracy + correct_accuracy  # nan when either is
    return {
        "error_accuracy": error_accuracy,
        "correct_accuracy": correct_accuracy,
        "f1": 2 * error_accuracy * correct_accuracy / total if total > 0 else (0.0 if total == 0 else nan),
        "precision": sum(accepted) / len(accepted) if accepted else nan,
        "error_recall": sum(flagged) / len(flagged) if flagged else nan,
    }


@dataclass
class SelfPRMConfig(GRPOConfig):
    task: str = "add_hard"
    iterations: int = 1
    problems_per_iteration: int = 128
    samples_per_problem: int = 8
    max_train_steps: int = 32
    learning_rate: float = 3e-5
    eval_problems: int = 500
    rerank_samples: int = 8  # N of best-of-N / majority@N on held-out problems
    judge_problems: int = 1500  # seed round: problems whose own samples are judged with rule labels
    judge_train_steps: int = 200
    judge_learning_rate: float = 3e-4
    judge_max_new_tokens: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("rerank_samples", "judge_problems", "judge_train_steps", "judge_max_new_tokens")


class SelfPRMTrainer(GRPOTrainer):
    """GRPO on solving after a judge-format seed round, with the Self-PRM probe in every evaluation."""

    config_class = SelfPRMConfig
    plot_keys = ("accuracy", "probe_f1", "probe_precision", "self_rerank_accuracy", "majority_accuracy")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.probe_set: list[tuple[Problem, str, int]] | None = None
        self.evaluations = 0

    def judge_pairs(self, problems: list[Problem], completions: list[str]) -> list[TextPair]:
        """Judge examples ``feedback_request -> Y | N<k> | N`` labelled by the rule step critic."""
        pairs = []
        for problem, completion in zip(problems, completions):
            feedback = step_feedback(self.task, problem, completion)
            pairs.append(TextPair(self.format.feedback_request(problem.question, completion), feedback.line()))
        return pairs

    def seed_round(self) -> Round:
        config = self.config
        problems = self.task.sample(config.judge_problems, derive_seed(config.seed, JUDGE_SEED))
        rollouts = self.solve(problems, seed=JUDGE_SEED, num_samples=1)
        texts = [r.text for r in rollouts]
        correct = [self.verify(p, t) for p, t in zip(problems, texts)]
        pairs = self.judge_pairs(problems, texts)
        pairs += [TextPair(self.prompt(p), t) for p, t, right in zip(problems, texts, correct) if right]
        logs = {"judge_examples": float(len(problems)), "judge_wrong_share": 1 - sum(correct) / len(correct)}
        return Round(
            SFTObjective(), pairs, SFTCollator(self.tokenizer, config.max_length), logs,
            max_train_steps=config.judge_train_steps, learning_rate=config.judge_learning_rate,
        )

    def build_round(self, iteration: int) -> Round:
        if iteration == 1 and self.config.beta:
            self.reference = frozen_copy(self.policy)  # the judge-taught model is the KL reference
        return super().build_round(iteration)

    def own_samples(self) -> list[list[str]]:
        n = self.config.rerank_samples
        rollouts = self.solve(self.eval_set, temperature=self.config.temperature, num_samples=n, seed=EVAL_SAMPLE_SEED)
        return [[r.text for r in rollouts[i * n : (i + 1) * n]] for i in range(len(self.eval_set))]

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        if self.policy_version == 0:  # the untaught base model has no judging format
            return metrics
        samples = self.own_samples()
        if self.probe_set is None:
            self.probe_set = [(p, c, error_label(self.task, p, c)) for p, group in zip(self.eval_set, samples) for c in group]
        judge = dict(prompt_format=self.format, max_new_tokens=self.config.judge_max_new_tokens, batch_size=self.config.generation_batch_size)
        probe_judgements = self_judge(
            self.policy, self.tokenizer, [p.question for p, _, _ in self.probe_set], [c for _, c, _ in self.probe_set], **judge
        )
        probe = step_error_metrics(probe_judgements, [label for _, _, label in self.probe_set])
        chosen, scores = self_rerank(self.policy, self.tokenizer, [p.question for p in self.eval_set], samples, **judge)
        rows = []
        for problem, group, answer, group_scores in zip(self.eval_set, samples, chosen, scores):
            keys = [self.answer_key(c) for c in group]
            right = [self.verify(problem, c) for c in group]
            gold = next((k for k, r in zip(keys, right) if r), None)
            rows.append({
                "id": problem.id,
                "self_rerank": answer is not None and answer == gold,
                "majority": majority_answer(keys) is not None and majority_answer(keys) == gold,
                "pass": any(right),
                "sample_accuracy": sum(right) / len(right),
                "scores": group_scores,
            })
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / f"self_prm-{self.evaluations}.jsonl", "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
            for (problem, _, label), judgement in zip(self.probe_set, probe_judgements):
                hit, judged_right = judgement_hits(judgement, label)
                handle.write(json.dumps({"probe_id": problem.id, "label": label, "hit": hit, "judged_right": judged_right}) + "\n")
        self.evaluations += 1
        n = len(rows)
        return {
            **metrics,
            **{f"probe_{key}": value for key, value in probe.items()},
            "self_rerank_accuracy": sum(r["self_rerank"] for r in rows) / n,
            "majority_accuracy": sum(r["majority"] for r in rows) / n,
            "pass_at_n": sum(r["pass"] for r in rows) / n,
            "sample_accuracy": sum(r["sample_accuracy"] for r in rows) / n,
        }


EVAL_SAMPLE_SEED = 7_777  # held-out samples of every evaluation (the same seed each time)

METHOD = Method(
    name="self_prm",
    summary="Self-PRM probe: GRPO on solving, then the policy reranks its own samples by its own step judgement",
    config_class=SelfPRMConfig,
    train=run_recipe(SelfPRMTrainer),
)
