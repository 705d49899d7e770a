"""B-STaR: Balanced Self-Taught Reasoner (Zeng et al., 2024, hkust-nlp/B-STaR).

Online rejection-sampling fine-tuning whose two exploration/exploitation knobs - the sampling
temperature ``t`` and the reward threshold ``tau`` - are re-chosen every iteration to maximise the
**balance score** on a small probe subset of the iteration's queries. For query ``i`` with ``K``
samples, let ``n_i`` be the number of *distinct* samples the reward selects (score >= ``tau``) and
``n_i'`` the number of distinct *correct* ones among them (duplicates are removed before counting, as
the official ``determine_hyper.py`` does; counting them let a hot temperature's duplicate-free
samples look more precise); then

    balance_i = min(n_i' / n_star, 1) * (n_i' / n_i)        (0 when n_i = 0)

The first factor rewards exploration (enough distinct correct solutions, up to ``n_star``), the
second exploitation (how precise the reward's selection is). The trade-off exists only on a task
with several valid solutions per query: on addition (one canonical chain) ``n_i' <= 1`` and the
score cannot reward exploration, so ``configs/bstar_countdown.yaml`` runs B-STaR on Countdown. The configuration with the highest mean
balance over the probe queries generates and selects the iteration's training data, and the current
policy is fine-tuned on it (continuing, not restarting, as online RFT does).

**Reference solutions** (``include_reference: true``, the official code's default behaviour): as in
the official ``determine_hyper.py`` / ``metric_modiacc_auto.py``, each query's reference solution
joins its candidates with the top score (1.0, selected at every threshold of the grid), so it counts
in ``n``/``n'`` and is trained on beside the model's own selected samples (deduplicated).
``include_reference: false`` trains on the model's own samples only (the pre-#18 behaviour).
Other departures from the official code: ``n_star`` is a config field (the code fixes 8 with 64
samples per query); the probe queries are the first ``probe_problems`` of the iteration's draws
(the code uses a fixed 1k-query dev set); the code caps the samples kept per query at the smallest
``max_samples`` that reaches a target dataset size, here every distinct selected sample is kept.

Selection follows the paper's "answer + reward model" filtering: a sample is selected when its final
answer is correct (task verifier) and its process reward - the task's rule-based step check
(:class:`~selfgen.train.llm.rewards.ProcessReward`: addition, the fraction of the reference column steps
reproduced; Countdown, the fraction of true steps), standing in for the paper's PRM - is at least
``tau``; ``require_correct_answer: false`` selects by the reward alone.
Monitored per iteration: Pass@K and distinct correct answers per query (exploration), the
selection's precision (exploitation), the balance score and the chosen ``t``/``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

from ...data.problems import Problem
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .objectives import SFTCollator, SFTObjective, TextPair
from .rewards import ProcessReward
from .rollout import Rollout


@dataclass
class BSTaRConfig(IterativeConfig):
    samples_per_problem: int = 8
    temperature_grid: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0, 1.2])
    threshold_grid: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    probe_problems: int = 64
    n_star: int = 4
    require_correct_answer: bool = True
    include_reference: bool = True  # the query's reference solution joins its selected samples (official code)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature_grid or not self.threshold_grid:
            raise ValueError("temperature_grid and threshold_grid must be non-empty lists")
        if any(t <= 0 for t in self.temperature_grid):
            raise ValueError(f"temperature_grid must hold positive temperatures, got {self.temperature_grid}")


def balance_score(selected: list[tuple[str, bool]], n_star: int) -> float:
    """``min(n'/n_star, 1) * n'/n`` for one query; ``selected`` holds ``(completion, is_correct)`` pairs,
    deduplicated first: ``n`` distinct selected completions, ``n'`` distinct correct ones."""
    distinct = dict(selected)
    if not distinct:
        return 0.0
    unique_correct = sum(distinct.values())
    return min(unique_correct / n_star, 1.0) * unique_correct / len(distinct)


@dataclass
class Scored:
    """One query's samples with their reward scores and correctness."""

    problem: Problem
    texts: list[str]
    scores: list[float]
    correct: list[bool]
    reference: str | None = None  # the reference solution, always selected (reward 1, correct)

    def selected(self, threshold: float, require_correct: bool, reference: bool = True) -> list[tuple[str, bool]]:
        """``(text, correct)`` of the selected samples, then the reference solution (unless ``reference=False``)."""
        own = [
            (text, ok) for text, score, ok in zip(self.texts, self.scores, self.correct)
            if score >= threshold and (ok or not require_correct)
        ]
        return own + [(self.reference, True)] * (reference and self.reference is not None)


class BSTaRTrainer(IterativeTrainer):
    """Answer correctness is :meth:`~selfgen.train.llm.driver.IterativeTrainer.verify` (a user's ``verify_fn=``)."""

    config_class = BSTaRConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "balance_score", "pass_at_k", "temperature", "threshold", "selection_precision")

    def score(self, problems: list[Problem], temperature: float, seed: int) -> list[Scored]:
        k = self.config.samples_per_problem
        rollouts: list[Rollout] = self.solve(problems, temperature=temperature, seed=seed)
        texts = [r.text for r in rollouts]
        repeated = [p for p in problems for _ in range(k)]
        scores = ProcessReward(self.task)(repeated, texts)
        correct = [self.verify(p, text) for p, text in zip(repeated, texts)]
        return [
            Scored(
                p, texts[i * k : (i + 1) * k], scores[i * k : (i + 1) * k], correct[i * k : (i + 1) * k],
                self.task.worked_solution(p) if self.config.include_reference else None,
            )
            for i, p in enumerate(problems)
        ]

    def mean_balance(self, scored: list[Scored], threshold: float) -> float:
        require = self.config.require_correct_answer
        return sum(balance_score(s.selected(threshold, require), self.config.n_star) for s in scored) / len(scored)

    def choose_configuration(self, problems: list[Problem], iteration: int) -> tuple[float, float, float]:
        """``(temperature, threshold, balance)`` maximising the mean balance score on ``problems``."""
        config = self.config
        by_temperature = {t: self.score(problems, t, seed=iteration) for t in config.temperature_grid}
        candidates = [
            (self.mean_balance(by_temperature[t], tau), t, tau)
            for t, tau in product(config.temperature_grid, config.threshold_grid)
        ]
        balance, temperature, threshold = max(candidates)
        return temperature, threshold, balance

    def build_round(self, iteration: int) -> Round:
        config = self.config
        problems = self.problems(iteration)
        temperature, threshold, balance = self.choose_configuration(problems[: config.probe_problems], iteration)
        scored = self.score(problems, temperature, seed=iteration + 1)
        examples, num_selected, num_selected_correct = [], 0, 0
        for query in scored:
            selected = query.selected(threshold, config.require_correct_answer)
            own = query.selected(threshold, config.require_correct_answer, reference=False)
            num_selected += len(own)
            num_selected_correct += sum(ok for _, ok in own)
            prompt = self.prompt(query.problem)
            examples += [TextPair(prompt, text) for text in dict.fromkeys(t for t, _ in selected)]
        logs = {
            "temperature": temperature,
            "threshold": threshold,
            "balance_score": balance,
            "balance_score_full": self.mean_balance(scored, threshold),
            "pass_at_k": sum(any(q.correct) for q in scored) / len(scored),
            "distinct_correct": sum(len({t for t, ok in zip(q.texts, q.correct) if ok}) for q in scored) / len(scored),
            "sample_accuracy": sum(sum(q.correct) for q in scored) / (len(scored) * config.samples_per_problem),
            "selection_precision": num_selected_correct / max(num_selected, 1),  # of the model's own samples
        }
        return Round(SFTObjective(), examples, SFTCollator(self.tokenizer, config.max_length), logs)


METHOD = Method(
    name="bstar",
    summary="B-STaR: online RFT that picks temperature and reward threshold by the balance score each iteration",
    config_class=BSTaRConfig,
    train=run_recipe(BSTaRTrainer),
)
