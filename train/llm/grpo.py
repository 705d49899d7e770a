"""Online GRPO with the task verifier's ground-truth reward: the baseline of the label-free recipes.

Each iteration (Shao et al. 2024, DeepSeekMath, section 4):

1. the current policy samples a group of ``G = samples_per_problem`` completions ``y_1..y_G`` per
   training problem ``x`` at ``temperature`` (their per-token logprobs are ``pi_old``);
2. each completion gets a scalar reward ``R_i`` (:meth:`GRPOTrainer.rewards`; here the verifier's
   1/0 on the final answer, or a user's ``reward_fn=`` in TRL's convention);
3. advantages are group-normalised, ``A_i = (R_i - mean_group R) / (std_group R + 1e-4)``
   (:func:`~selfgen.train.llm.objectives.group_advantages`, ``scale_rewards: false`` only centres);
4. the policy takes ``max_train_steps`` steps of the clipped surrogate with a k3 KL to the starting
   model (:class:`~selfgen.train.llm.objectives.GRPOObjective`) on these samples, then samples again.

Recipes built on it override only what differs:

* :meth:`GRPOTrainer.problems` - what is sampled (Co-Reward adds the rephrasings);
* :meth:`GRPOTrainer.rewards` - ``rewards(problems, rollouts) -> list[float]``, one per rollout, with
  ``rollouts`` grouped by problem (problem ``i`` owns ``rollouts[i*G:(i+1)*G]``);
* :meth:`GRPOTrainer.extra_samples` - extra ``(rollout, reward)`` entries that join a group before its
  advantages are computed (ExPO's self-explanations);
* :meth:`GRPOTrainer.policy_sample`, :meth:`GRPOTrainer.objective`, :meth:`GRPOTrainer.collator` -
  what each training sample carries and the loss on it (LaSeR's self-rewarding MSE term).

Logged per iteration: ``train_reward`` (mean reward), ``train_accuracy`` (verifier accuracy of the
rollouts - a diagnostic for label-free recipes, never their training signal), ``reward_agreement``
(fraction of rollouts whose reward agrees with the verifier: 1 for this baseline, the pseudo-label
quality for label-free rewards) and ``solved_groups`` / ``unsolved_groups`` (groups with any / no
correct rollout).

Departure: problems are fresh seeded draws each iteration (one generation per iteration, several
optimiser steps on it, as TRL's ``steps_per_generation``), instead of a fixed dataset with one
update per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.problems import Problem
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import GRPO_LOSS_TYPES, GRPOCollator, GRPOObjective, PolicySample, group_advantages
from .rollout import Rollout

Group = list[tuple[Rollout, float]]


@dataclass
class GRPOConfig(IterativeConfig):
    samples_per_problem: int = 8
    beta: float = 0.04  # k3 KL weight to the starting model (0: no reference model)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    loss_type: str = "grpo"  # grpo | bnpo | dr_grpo | dapo (TRL's normalisations)
    scale_rewards: bool = True  # divide by the group's std (False: Dr. GRPO's centring only)
    learning_rate: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_problem < 2:
            raise ValueError(f"samples_per_problem must be >= 2 for group advantages, got {self.samples_per_problem}")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {GRPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.beta < 0 or self.epsilon_low < 0 or self.epsilon_high < 0:
            raise ValueError(
                f"beta, epsilon_low and epsilon_high must be >= 0, got {self.beta}, {self.epsilon_low}, {self.epsilon_high}"
            )


def repeat_per_rollout(problems: list[Problem], num_rollouts: int) -> list[Problem]:
    """Each problem repeated for its group of rollouts (``num_rollouts`` divisible by the problems)."""
    if not problems or num_rollouts % len(problems):
        raise ValueError(f"{num_rollouts} rollouts do not split into groups for {len(problems)} problems")
    group_size = num_rollouts // len(problems)
    return [problem for problem in problems for _ in range(group_size)]


class GRPOTrainer(IterativeTrainer):
    """Online GRPO with verifier rewards; see the module docstring for what subclasses override."""

    config_class = GRPOConfig
    plot_keys: tuple[str, ...] = ("accuracy", "train_accuracy", "train_reward", "reward_agreement")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference = frozen_copy(self.policy) if self.config.beta else None

    # ----------------------------------------------------------------- what recipes override

    def rewards(self, problems: list[Problem], rollouts: list[Rollout]) -> list[float]:
        """One reward per rollout; ``rollouts`` come in consecutive groups, one group per problem."""
        return self.verifier_rewards(repeat_per_rollout(problems, len(rollouts)), [r.text for r in rollouts])

    def extra_samples(self, problems: list[Problem], groups: list[Group]) -> dict[int, Group]:
        """Extra ``(rollout, reward)`` entries per group index, joining the group before its advantages."""
        return {}

    def policy_sample(self, rollout: Rollout, advantage: float, reward: float) -> PolicySample:
        return PolicySample(rollout.prompt_ids, rollout.completion_ids, advantage, rollout.logprobs)

    def objective_options(self) -> dict:
        """The :class:`GRPOObjective` arguments from the config (recipes' objectives add their own)."""
        config = self.config
        return dict(
            beta=config.beta, epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high,
            loss_type=config.loss_type, max_completion_length=config.max_new_tokens, temperature=config.temperature,
        )

    def objective(self) -> GRPOObjective:
        return GRPOObjective(self.reference, **self.objective_options())

    def collator(self) -> GRPOCollator:
        return GRPOCollator(self.tokenizer.pad_token_id)

    # ----------------------------------------------------------------- the round

    def build_round(self, iteration: int) -> Round:
        problems = self.problems(iteration)
        rollouts = self.solve(problems, seed=iteration)
        return self.grpo_round(problems, rollouts, self.rewards(problems, rollouts))

    def grpo_round(self, problems: list[Problem], rollouts: list[Rollout], rewards: list[float]) -> Round:
        """Group the rollouts, add the recipe's extra samples, normalise advantages per group."""
        if len(rewards) != len(rollouts):
            raise ValueError(f"rewards() returned {len(rewards)} rewards for {len(rollouts)} rollouts")
        size = len(rollouts) // len(problems)
        pairs = list(zip(rollouts, rewards))
        groups = [pairs[i * size : (i + 1) * size] for i in range(len(problems))]
        extras = self.extra_samples(problems, groups)
        samples = []
        for index, group in enumerate(groups):
            group = group + extras.get(index, [])
            advantages = group_advantages(torch.tensor([r for _, r in group]), len(group), self.config.scale_rewards)
            samples += [self.policy_sample(rollout, float(a), reward) for (rollout, reward), a in zip(group, advantages)]
        logs = self.rollout_logs(problems, rollouts, rewards)
        logs["extra_samples"] = float(sum(len(extra) for extra in extras.values()))
        return Round(self.objective(), samples, self.collator(), logs)

    def rollout_logs(self, problems: list[Problem], rollouts: list[Rollout], rewards: list[float]) -> dict[str, float]:
        repeated = repeat_per_rollout(problems, len(rollouts))
        correct = [float(self.verify(p, r.text)) for p, r in zip(repeated, rollouts)]
        size = len(rollouts) // len(problems)
        solved = [any(correct[i * size : (i + 1) * size]) for i in range(len(problems))]
        return {
            "train_reward": sum(rewards) / len(rewards),
            "train_accuracy": sum(correct) / len(correct),
            "reward_agreement": sum((r > 0.5) == bool(c) for r, c in zip(rewards, correct)) / len(rewards),
            "solved_groups": sum(solved) / len(solved),
            "unsolved_groups": 1.0 - sum(solved) / len(solved),
        }


METHOD = Method(
    name="grpo",
    summary="GRPO with the task verifier's ground-truth reward (the baseline of the label-free recipes)",
    config_class=GRPOConfig,
    train=run_recipe(GRPOTrainer),
)
