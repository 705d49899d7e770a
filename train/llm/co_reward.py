"""Co-Reward: label-free GRPO by contrastive agreement between a question and its rephrasing
(Zhang et al. 2025, "Co-Reward: Self-supervised Reinforcement Learning for Large Language Model
Reasoning via Contrastive Agreement", tmlr-group/Co-Reward).

For each training question ``x`` the task supplies an exact rephrasing ``x'`` (same answer; see
:meth:`selfgen.data.tasks.Task.rephrase`). The policy samples a group of ``G`` rollouts for each,
``{y_i} ~ pi(.|x)`` and ``{y'_j} ~ pi(.|x')``, and each phrasing's majority answer is the
pseudo-label of the *other* phrasing's rollouts (cross-referenced agreement):

    a_maj  = argmax_a sum_i 1[ans(y_i)  = a]        a'_maj = argmax_a sum_j 1[ans(y'_j) = a]
    r(y_i) = 1[ans(y_i) = a'_maj]                   r(y'_j) = 1[ans(y'_j) = a_maj]

(:func:`cross_vote_rewards`). Both groups are then optimised by GRPO with group-normalised
advantages, each within its own phrasing's group (:class:`~selfgen.train.llm.grpo.GRPOTrainer`).
No ground truth is used for training; the verifier only reports ``train_accuracy`` and
``pseudo_label_accuracy`` (how often a pseudo-label is the true answer) as diagnostics.

Answers vote by value (``"0132"`` and ``"132"`` agree, :func:`~selfgen.train.llm.rewards.answer_key`),
since a zero-padded rephrasing may be answered with leading zeros. A phrasing without any extracted
answer gives no pseudo-label: the other phrasing's rollouts all get 0.

Departure: the paper rephrases questions with an LLM; our arithmetic tasks rephrase exactly
(operands swapped or zero-padded; countdown numbers reordered), so a pseudo-label is never wrong
because the rephrasing changed the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...data.problems import Problem
from ...data.tasks import derive_seed
from ..registry import Method
from .driver import run_recipe
from .grpo import GRPOConfig, GRPOTrainer
from .lm import EVAL_SEED
from .rewards import answer_key, canonical_answer, majority_answer
from .rollout import Rollout

@dataclass
class CoRewardConfig(GRPOConfig):
    """``problems_per_iteration`` original questions, each with one rephrasing: 2x as many groups as GRPO."""


def cross_vote_rewards(
    original: list[str], rephrased: list[str], key: Callable[[str], str | None] = answer_key
) -> tuple[list[float], list[float], str | None, str | None]:
    """Rewards of one question's two groups of completions from the other group's majority answer
    (answers compared by ``key``, the prompt format's canonical answer).

    Returns ``(original_rewards, rephrased_rewards, original_majority, rephrased_majority)``."""
    original_keys = [key(text) for text in original]
    rephrased_keys = [key(text) for text in rephrased]
    original_majority, rephrased_majority = majority_answer(original_keys), majority_answer(rephrased_keys)
    original_rewards = [float(key is not None and key == rephrased_majority) for key in original_keys]
    rephrased_rewards = [float(key is not None and key == original_majority) for key in rephrased_keys]
    return original_rewards, rephrased_rewards, original_majority, rephrased_majority


class CoRewardTrainer(GRPOTrainer):
    """GRPO on ``[originals..., rephrasings...]`` with the cross-vote rewards of :func:`cross_vote_rewards`."""

    config_class = CoRewardConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "rephrased_accuracy", "train_accuracy", "reward_agreement", "pseudo_label_accuracy")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rephrased_eval_set = self.task.rephrasings(self.eval_set, EVAL_SEED)
        self.label_logs: dict[str, float] = {}

    def problems(self, iteration: int) -> list[Problem]:
        """The iteration's originals followed by one rephrasing of each (group ``i + N`` rephrases group ``i``)."""
        originals = super().problems(iteration)
        return originals + self.task.rephrasings(originals, derive_seed(self.config.seed, iteration, "rephrase"))

    def rewards(self, problems: list[Problem], rollouts: list[Rollout]) -> list[float]:
        half, size = len(problems) // 2, len(rollouts) // len(problems)
        pairs = zip(problems[:half], problems[half:])
        if len(problems) % 2 or any(p.metadata.get("original") != o.question for o, p in pairs):
            raise ValueError("Co-Reward expects problems = originals + their rephrasings, in the same order")
        texts = [rollout.text for rollout in rollouts]
        original_rewards, rephrased_rewards, labels_right = [], [], 0
        for index, problem in enumerate(problems[:half]):
            original = texts[index * size : (index + 1) * size]
            rephrased = texts[(half + index) * size : (half + index + 1) * size]
            to_original, to_rephrased, original_label, rephrased_label = cross_vote_rewards(original, rephrased, self.answer_key)
            original_rewards += to_original
            rephrased_rewards += to_rephrased
            truth = canonical_answer(problem.answer)
            labels_right += (original_label == truth) + (rephrased_label == truth)
        self.label_logs = {"pseudo_label_accuracy": labels_right / len(problems)}
        return original_rewards + rephrased_rewards

    def rollout_logs(self, problems: list[Problem], rollouts: list[Rollout], rewards: list[float]) -> dict[str, float]:
        return {**super().rollout_logs(problems, rollouts, rewards), **self.label_logs}

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy on the held-out questions and on their rephrasings."""
        rollouts = self.solve(self.rephrased_eval_set, temperature=0.0, num_samples=1)
        correct = sum(self.verify(p, r.text) for p, r in zip(self.rephrased_eval_set, rollouts))
        return {**super().evaluate(), "rephrased_accuracy": correct / len(rollouts)}


METHOD = Method(
    name="co_reward",
    summary="Co-Reward: label-free GRPO, a question's majority answer rewards its rephrasing's rollouts and vice versa",
    config_class=CoRewardConfig,
    train=run_recipe(CoRewardTrainer),
)
