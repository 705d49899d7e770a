"""Iterative self-rewarding / self-rationalising DPO, with EVOLVE's self-refinement as an option.

Seed stage (Self-Rewarding LMs' M1, before iteration 1; ``eft_problems``/``ift_problems`` > 0): SFT
on the shared Trainer on seed data drawn from training seeds (:func:`seed_examples`):

* **EFT** (evaluation fine-tuning): LLM-as-a-judge examples on ``eft_problems`` seed problems, a
  candidate solution - exactly half correct, half with one corrupted answer digit - then ``J:``, a
  rationale (:func:`eft_rationale`: the candidate's answer quoted, the problem re-derived step by
  step, and the two answers compared digit by digit) and the verdict of the task's
  **verifier**;
* **IFT** (instruction fine-tuning): ``ift_problems`` plain worked solutions, so that answering is
  kept while judging is taught.

The verifier labels the seed data only; the iterations never see it. Then each iteration:

1. the policy samples ``samples_per_problem`` candidate solutions per problem; with
   ``self_refine: true`` (EVOLVE, iterative preference optimisation with self-refinement) each
   candidate is also revised by the policy (``R:`` turn) and the revisions join the candidates;
2. the policy **judges** every candidate ``num_judgements`` times, each judgement a rationale (its own
   re-derivation of the answer) and a verdict ``V:Y|N``; a candidate's self-reward is its share of ``Y``;
3. answer pairs (self-rewarding LM, Yuan et al. 2024): for each problem the highest- vs the
   lowest-rewarded candidate, when their rewards differ;
4. judgement pairs (self-rationalisation, Trivedi et al. 2024): for each candidate whose judgements
   disagree, a rationale with the majority verdict is preferred over one with the minority verdict,
   so the judge is trained towards its own consensus;
5. DPO (sigmoid loss) on all pairs against the policy at the start of the iteration as reference.

Evaluation: held-out accuracy and **judge agreement**, the fraction of a fixed set of held-out
candidate solutions (half correct, half with one corrupted digit) whose greedy verdict matches the
verifier (a judgement without a verdict counts as a disagreement).
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import zip_longest
from dataclasses import dataclass

from ...data.problems import Problem
from ...data.tasks import Task, corrupt_answer, extract_answer, judge_prompt, parse_verdict, prompt_text, revision_prompt
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import DPOCollator, DPOObjective, PreferencePair, SFTCollator, SFTObjective, TextPair
from .rewards import SelfJudgeReward


@dataclass
class SelfRewardDPOConfig(IterativeConfig):
    problems_per_iteration: int = 128
    samples_per_problem: int = 4
    num_judgements: int = 4
    judge_temperature: float = 1.0
    judge_max_new_tokens: int = 72
    self_refine: bool = False
    beta: float = 0.1
    learning_rate: float = 1e-4
    train_batch_size: int = 16
    eft_problems: int = 0  # seed EFT judge examples (0: no seed stage unless ift_problems > 0)
    ift_problems: int = 0  # seed IFT worked solutions mixed into the seed stage
    seed_train_steps: int = 200
    seed_learning_rate: float = 3e-4


EFT_SEED = 8_000  # seed problems come from training seeds below lm.EVAL_SEED, apart from problems(iteration)


def corrupted_solution(solution: str, answer: str, rng: random.Random) -> str:
    """``solution`` with its ``A:`` line's answer changed in one digit (a wrong candidate)."""
    return solution.replace(f"A:{answer}", f"A:{corrupt_answer(answer, rng)}")


def eft_rationale(solution: str, candidate_answer: str | None) -> str:
    """The seed judge's rationale: the candidate's answer quoted first (``C:``), its own solution, then a
    digit by digit comparison of the two answers (``D:``, ``=`` same, ``x`` different or missing)."""
    own, quoted = extract_answer(solution) or "", candidate_answer or ""
    marks = "".join("=" if a == b else "x" for a, b in zip_longest(own, quoted))
    return f"C:{quoted}\n{solution}\nD:{marks}"


def seed_examples(task: Task, eft_problems: int, ift_problems: int, seed: int = 0) -> list[TextPair]:
    """Seed EFT judge examples (half correct, half corrupted candidates; verdict = the verifier) + IFT."""
    rng = random.Random(seed)
    examples = []
    for index, problem in enumerate(task.sample(eft_problems, EFT_SEED + seed)):
        solution = task.worked_solution(problem)
        candidate = solution if index % 2 == 0 else corrupted_solution(solution, problem.answer, rng)
        verdict = "Y" if task.verify(problem, candidate) else "N"
        rationale = eft_rationale(solution, extract_answer(candidate))
        examples.append(TextPair(judge_prompt(prompt_text(problem.question), candidate), f"{rationale}\nV:{verdict}"))
    for problem in task.sample(ift_problems, EFT_SEED + 500 + seed):
        examples.append(TextPair(prompt_text(problem.question), task.worked_solution(problem)))
    rng.shuffle(examples)
    return examples


class SelfRewardDPOTrainer(IterativeTrainer):
    config_class = SelfRewardDPOConfig
    plot_keys = ("accuracy", "judge_agreement", "answer_pairs", "judgement_pairs")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        rng = random.Random(self.config.seed)
        self.judge_set = [(p, self._candidate(p, rng)) for p in self.eval_set]

    def _candidate(self, problem: Problem, rng: random.Random) -> tuple[str, bool]:
        solution = self.task.worked_solution(problem)
        if rng.random() < 0.5:
            return solution, True
        return corrupted_solution(solution, problem.answer, rng), False

    def judge(self, num_judgements: int, temperature: float) -> SelfJudgeReward:
        config = self.config
        return SelfJudgeReward(self.policy, self.tokenizer, num_judgements, temperature, config.judge_max_new_tokens)

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        problems = [p for p, _ in self.judge_set]
        candidates = [c for _, (c, _) in self.judge_set]
        verdicts = [parse_verdict(j.text) for j in self.judge(1, 0.0).judgements(problems, candidates)]
        agreement = sum(v == truth for v, (_, (_, truth)) in zip(verdicts, self.judge_set)) / len(verdicts)
        return {**metrics, "judge_agreement": agreement}

    def seed_round(self) -> Round | None:
        config = self.config
        if not (config.eft_problems or config.ift_problems):
            return None
        examples = seed_examples(self.task, config.eft_problems, config.ift_problems, config.seed)
        logs = {"eft_examples": float(config.eft_problems), "ift_examples": float(config.ift_problems)}
        return Round(
            SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), logs,
            max_train_steps=config.seed_train_steps, learning_rate=config.seed_learning_rate,
        )

    def candidates(self, problems: list[Problem], iteration: int) -> list[tuple[Problem, str]]:
        rollouts = self.solve(problems, seed=iteration)
        found = [(problems[r.prompt_index], r.text) for r in rollouts]
        if self.config.self_refine:
            prompts = [revision_prompt(r.prompt, r.text) for r in rollouts]
            revisions = self.sample(prompts, num_samples=1, seed=iteration)
            found += [(problems[r.prompt_index], v.text) for r, v in zip(rollouts, revisions)]
        return found

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        candidates = self.candidates(problems, iteration)
        judge = self.judge(config.num_judgements, config.judge_temperature)
        judgements = judge.judgements([p for p, _ in candidates], [c for _, c in candidates], seed=iteration)
        k = config.num_judgements
        by_problem: dict[str, list[tuple[float, str]]] = {}
        judgement_pairs = []
        for index, (problem, candidate) in enumerate(candidates):
            own = judgements[index * k : (index + 1) * k]
            verdicts = [parse_verdict(j.text) for j in own]
            by_problem.setdefault(problem.id, []).append((sum(v is True for v in verdicts) / k, candidate))
            judgement_pairs += self.judgement_pair(problem, candidate, [j.text for j in own], verdicts)
        answer_pairs = []
        for problem in problems:
            scored = sorted(by_problem.get(problem.id, []), key=lambda item: item[0])
            if scored and scored[-1][0] > scored[0][0]:
                answer_pairs.append(PreferencePair(prompt_text(problem.question), scored[-1][1], scored[0][1]))
        pairs = answer_pairs + judgement_pairs
        logs = {"answer_pairs": float(len(answer_pairs)), "judgement_pairs": float(len(judgement_pairs))}
        objective = DPOObjective(frozen_copy(self.policy), beta=config.beta)
        return Round(objective, pairs, DPOCollator(self.tokenizer, config.max_length), logs)

    @staticmethod
    def judgement_pair(
        problem: Problem, candidate: str, texts: list[str], verdicts: list[bool | None]
    ) -> list[PreferencePair]:
        """A majority-verdict rationale preferred over a minority one (none when the judgements agree)."""
        counts = Counter(v for v in verdicts if v is not None)
        if len(counts) < 2 or counts[True] == counts[False]:
            return []
        majority = counts.most_common(1)[0][0]
        chosen = next(t for t, v in zip(texts, verdicts) if v == majority)
        rejected = next(t for t, v in zip(texts, verdicts) if v is not None and v != majority)
        return [PreferencePair(judge_prompt(prompt_text(problem.question), candidate), chosen, rejected)]


METHOD = Method(
    name="self_reward_dpo",
    summary="self-rewarding / self-rationalising DPO: the LM judges its own answers, pairs them, DPO (EVOLVE option)",
    config_class=SelfRewardDPOConfig,
    train=run_recipe(SelfRewardDPOTrainer),
)
