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
because the rephrasing changed the problem. The paper's rewrites are meaning-preserving questions the
policy reads as well as the original; ``rephrasings: [swap]`` keeps only the style the bundled v3 base
does (validation: swap 0.580 vs plain 0.568 at 4 digits, zero-padded 0.273), so the rephrased group is
not an out-of-distribution question (``configs/co_reward_arith_llama_v3_long.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...data.problems import Problem
from ...data.tasks import derive_seed
from ..registry import Method
from .driver import run_recipe
from .grpo import GRPOConfig, GRPOTrainer
from .lm import EVAL_SEED
from .objectives import advantage_alignment
from .rewards import answer_key, canonical_answer, majority_answer
from .rollout import Rollout

@dataclass
class CoRewardConfig(GRPOConfig):
    """``problems_per_iteration`` original questions, each with one rephrasing: 2x as many groups as GRPO.

    ``rephrasings``: the rephrasing styles drawn from (the task's :attr:`~selfgen.data.tasks.Task.rephrasing_styles`,
    e.g. ``[swap]`` for additions); ``None``: every style the task has."""

    rephrasings: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rephrasings is not None and not self.rephrasings:
            raise ValueError("rephrasings must name at least one rephrasing style (or be left out for all of them)")


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


def label_signal(
    original: list[list[str | None]], rephrased: list[list[str | None]], truths: list[str | None]
) -> dict[str, float]:
    """How much a label-free vote tells about correctness, from answer keys alone (no model).

    ``original[i]`` / ``rephrased[i]`` are the canonical answers of question ``i``'s rollouts on each
    phrasing, ``truths[i]`` its canonical reference answer. Returned, averaged over questions:

    * ``pass_at_1``: share of the originals' rollouts that are right; ``majority_at_k``: the
      originals' own majority is right (TTRL's self-vote); ``pseudo_label_accuracy``: Co-Reward's
      labels (each phrasing's majority, judging the other) are right;
    * ``reward_agreement``: share of rollouts (both phrasings) whose cross-vote reward equals the
      verifier's;
    * ``alignment`` (Co-Reward) and ``self_vote_alignment`` (TTRL): ``sum A_lf * A_v / sum A_v^2`` over all
      rollouts, with ``A_lf`` and ``A_v`` the group-normalised advantages of the label-free and the
      verifier rewards. GRPO's update is ``sum_j A_j grad log pi(y_j)``; where the rollouts' gradients are
      near-orthogonal this is the share of the verifier update's projection that the label-free update
      keeps: 1 = GRPO's signal, 0 = none, < 0 = pushes towards wrong answers;
    * ``mixed_groups``, ``mixed_cross_vote_groups``, ``mixed_self_vote_groups``: share of groups (both
      phrasings) whose verifier / cross-vote / self-vote rewards are not all equal - only those groups get
      a non-zero GRPO advantage.
    """
    if not (len(original) == len(rephrased) == len(truths)) or not truths:
        raise ValueError(f"label_signal needs as many original / rephrased groups as truths (> 0), got "
                         f"{len(original)}, {len(rephrased)}, {len(truths)}")
    verifier, cross, self_vote, labels, majority = [], [], [], [], []
    for ours, theirs, truth in zip(original, rephrased, truths):
        if len(ours) != len(theirs) or len(ours) < 2:
            raise ValueError(f"each question needs >= 2 rollouts per phrasing, the same number; got {len(ours)}, {len(theirs)}")
        ours_label, theirs_label = majority_answer(ours), majority_answer(theirs)
        for keys, label, own in ((ours, theirs_label, ours_label), (theirs, ours_label, theirs_label)):
            verifier.append([float(k is not None and k == truth) for k in keys])
            cross.append([float(k is not None and k == label) for k in keys])
            self_vote.append([float(k is not None and k == own) for k in keys])
        labels += [ours_label == truth, theirs_label == truth]
        majority.append(ours_label is not None and ours_label == truth)
    size = len(original[0])
    if any(len(group) != size for group in verifier):
        raise ValueError("every question needs the same number of rollouts (the GRPO group size)")
    verifier_t, cross_t, self_t = (torch.tensor(x) for x in (verifier, cross, self_vote))
    return {
        "pass_at_1": float(verifier_t[0::2].mean()),
        "majority_at_k": sum(majority) / len(majority),
        "pseudo_label_accuracy": sum(labels) / len(labels),
        "reward_agreement": float((cross_t == verifier_t).float().mean()),
        "alignment": advantage_alignment(cross_t.reshape(-1), verifier_t.reshape(-1), size),
        "self_vote_alignment": advantage_alignment(self_t.reshape(-1), verifier_t.reshape(-1), size),
        "mixed_groups": mixed_share(verifier_t),
        "mixed_cross_vote_groups": mixed_share(cross_t),
        "mixed_self_vote_groups": mixed_share(self_t),
    }


def mixed_share(rewards: torch.Tensor) -> float:
    """Share of the rows (groups) of 0/1 ``rewards`` that hold both values."""
    totals = rewards.sum(1)
    return float(((totals > 0) & (totals < rewards.shape[1])).float().mean())


class CoRewardTrainer(GRPOTrainer):
    """GRPO on ``[originals..., rephrasings...]`` with the cross-vote rewards of :func:`cross_vote_rewards`."""

    config_class = CoRewardConfig
    uses_reward_fn = False
    plot_keys = ("accuracy", "rephrased_accuracy", "train_accuracy", "reward_agreement", "pseudo_label_accuracy")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rephrased_eval_set = self.task.rephrasings(self.eval_set, EVAL_SEED, self.config.rephrasings)
        self.label_logs: dict[str, float] = {}

    def problems(self, iteration: int) -> list[Problem]:
        """The iteration's originals followed by one rephrasing of each (group ``i + N`` rephrases group ``i``)."""
        originals = super().problems(iteration)
        seed = derive_seed(self.config.seed, iteration, "rephrase")
        return originals + self.task.rephrasings(originals, seed, self.config.rephrasings)

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
