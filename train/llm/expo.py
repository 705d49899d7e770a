"""ExPO: Self-Explanation Policy Optimization, the GRPO instantiation ExP-GRPO (Zhou et al. 2025,
"ExPO: Unlocking Hard Reasoning with Self-Explanation-Guided Reinforcement Learning").

GRPO learns nothing from a group whose rollouts all fail: every advantage is zero. ExPO supplies a
positive sample that is still close to the current policy - a **self-explanation** ``y~ ~ pi(. | x, a*)``
that the policy writes with the ground-truth answer ``a*`` in its context (the prompt format's hinted
prompt, ``Q:<x>\\nH:<a*>\\n`` in the arithmetic format, as STaR's rationalisation). For each group with no correct rollout
(:meth:`ExPOTrainer.extra_samples`):

1. the policy samples ``num_explanations`` self-explanations from the hinted prompt;
2. those whose final answer is right join the group as positive samples (reward 1) *under the plain
   prompt* ``x`` - the model is trained to produce them without the hint; their ``pi_old`` logprobs
   are the policy's logprobs of the explanation given ``x`` (one forward pass), so the GRPO ratio
   starts at 1 for them as for the sampled rollouts;
3. the group's advantages are computed with them included, so the failed rollouts now get negative
   advantages and the explanations positive ones; and the ExP-SFT term
   ``-sft_coef * mean_{y~} (1/|y~|) log pi(y~ | x)`` is added to the GRPO loss on the explanations
   (:class:`ExPOObjective`), the paper's extra likelihood term on the self-explanations.

Groups with at least one correct rollout are plain GRPO. ``extra_samples`` per iteration counts the
explanations added, ``explained_groups`` the all-wrong groups that received one. The explanations'
sampling seed is derived from ``(seed, iteration)`` (:attr:`ExPOTrainer.explanation_seed`; before
issue #18 it was the number of groups, the same every iteration). Injection needs a policy that
uses the hint: the bundled base does not (one round of 32 problems x 8 rollouts, 2 explanations per
all-wrong group: 3-4 digits, 4 all-wrong groups, 0 of 8 explanations right; 4-5 digits, 24 groups, 0
of 48), so on it ExPO reduces to GRPO; on 1-2 digits it does use it (the tests inject there). On
``assets/lm-arith-llama`` (``configs/expo_arith_llama.yaml``, 4 digits, 8 explanations per all-wrong
group) 2 of 480 explanations over five iterations were right and injected.

Departures: ``require_correct_explanation`` (default on) drops explanations whose final answer
does not match - a tiny model does not always copy the hint; ``sft_coef`` is our choice (0.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...data.problems import Problem
from ...data.tasks import derive_seed
from ..registry import Method
from .driver import run_recipe
from .grpo import Group, GRPOConfig, GRPOTrainer
from .objectives import GRPOCollator, GRPOObjective, PolicySample
from .rollout import Rollout


@dataclass
class ExPOConfig(GRPOConfig):
    num_explanations: int = 2  # self-explanations sampled per all-wrong group
    sft_coef: float = 0.1  # weight of the ExP-SFT term on the self-explanations
    require_correct_explanation: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("num_explanations")
        if self.sft_coef < 0:
            raise ValueError(f"sft_coef must be >= 0, got {self.sft_coef}")


class Explanation(Rollout):
    """A self-explanation written with the answer in context, re-attached to the plain prompt."""


class ExPOObjective(GRPOObjective):
    """GRPO loss + ``sft_coef`` x the mean per-token NLL of the self-explanations in the batch."""

    def __init__(self, *args, sft_coef: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sft_coef = sft_coef

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = self.completion_logprobs(model, batch)
        loss, logs = self.policy_loss(logprobs, batch)
        explanation = batch["explanation"]
        if explanation.sum() == 0:
            return loss, logs
        sft = self.rows_nll(logprobs, batch, explanation)
        logs["explanation_nll"] = float(sft.detach())
        return loss + self.sft_coef * sft, logs


class ExPOTrainer(GRPOTrainer):
    config_class = ExPOConfig
    plot_keys = ("accuracy", "train_accuracy", "unsolved_groups", "explained_groups")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.explanation_seed = self.explanation_seed_of(0)

    def explanation_seed_of(self, iteration: int) -> int:
        """The seed of iteration ``iteration``'s self-explanation samples (distinct per run seed and iteration)."""
        return derive_seed(self.config.seed, iteration, "explanations")

    def build_round(self, iteration: int):
        self.explanation_seed = self.explanation_seed_of(iteration)
        return super().build_round(iteration)

    def extra_samples(self, problems: list[Problem], groups: list[Group]) -> dict[int, Group]:
        """Self-explanations (reward 1) for the groups whose rollouts are all wrong."""
        failed = [index for index, group in enumerate(groups) if all(reward <= 0 for _, reward in group)]
        if not failed:
            self.explained_groups = 0.0
            return {}
        k = self.config.num_explanations
        hinted = [self.prompt(problems[i], hint=True) for i in failed]
        explanations = self.sample(hinted, num_samples=k, seed=self.explanation_seed)
        extras: dict[int, Group] = {}
        for position, index in enumerate(failed):
            problem, plain_prompt = problems[index], groups[index][0][0]
            kept = [
                e for e in explanations[position * k : (position + 1) * k]
                if e.finished and (self.verify(problem, e.text) or not self.config.require_correct_explanation)
            ]
            if kept:
                extras[index] = [(rollout, 1.0) for rollout in self.as_plain_rollouts(plain_prompt, kept)]
        self.explained_groups = len(extras) / len(groups)
        return extras

    @torch.no_grad()
    def as_plain_rollouts(self, plain: Rollout, explanations: Sequence[Rollout]) -> list[Explanation]:
        """The explanations re-attached to the plain prompt of ``plain``, with the policy's logprobs given it."""
        samples = [PolicySample(plain.prompt_ids, e.completion_ids, 0.0) for e in explanations]
        batch = GRPOCollator(self.tokenizer.pad_token_id)(samples)
        logprobs = self.objective().completion_logprobs(self.policy.eval(), batch)
        return [
            Explanation(
                plain.prompt_index, plain.prompt, e.text, plain.prompt_ids, e.completion_ids,
                logprobs[row, : len(e.completion_ids)].tolist(),
            )
            for row, e in enumerate(explanations)
        ]

    def policy_sample(self, rollout: Rollout, advantage: float, reward: float) -> PolicySample:
        extras = {"explanation": float(isinstance(rollout, Explanation))}
        return PolicySample(rollout.prompt_ids, rollout.completion_ids, advantage, rollout.logprobs, extras=extras)

    def objective(self) -> ExPOObjective:
        return ExPOObjective(self.reference, **self.objective_options(), sft_coef=self.config.sft_coef)

    def rollout_logs(self, problems: list[Problem], rollouts: list[Rollout], rewards: list[float]) -> dict[str, float]:
        return {**super().rollout_logs(problems, rollouts, rewards), "explained_groups": self.explained_groups}


METHOD = Method(
    name="expo",
    summary="ExPO (ExP-GRPO): GRPO where all-wrong groups get self-explanations written with the answer as positives",
    config_class=ExPOConfig,
    train=run_recipe(ExPOTrainer),
)
