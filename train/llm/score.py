"""SCoRe: two-turn self-correction by multi-turn RL (Kumar et al., 2024, "Training Language Models to
Self-Correct via Reinforcement Learning").

An episode is ``x -> y1 ~ pi(.|x) -> y2 ~ pi(.|x, y1, "R:")`` (first attempt, then a revision) with
verifier rewards ``r1 = r(y1)``, ``r2 = r(y2)``. Both stages are policy gradient against the base
model ``pi_ref`` through :class:`~selfgen.train.llm.objectives.GRPOObjective`:

* **Stage I** (``stage1_iterations``) - maximise the second turn's reward while keeping the first
  turn close to the base model: ``max E[r2] - beta2 KL(pi(.|x) || pi_ref(.|x)) - beta1 KL(turn 2)``.
  Turn-2 tokens get the advantage of ``r2``; turn-1 tokens get no advantage and the strong KL weight
  ``beta2`` (this decouples the turns and avoids collapsing into "never change the answer").
* **Stage II** - jointly maximise both turns with reward shaping on turn 2:
  ``r2_hat = r2 + alpha (r2 - r1)`` (a bonus for going incorrect -> correct, a penalty for
  correct -> incorrect); turn 1 is credited with the return ``r1 + r2_hat``, turn 2 with ``r2_hat``,
  under the weak KL ``beta1`` on both turns.

Advantages are group-normalised over the ``samples_per_problem`` episodes of a problem (GRPO-style;
the paper uses REINFORCE with a baseline). Metrics, greedy on held-out problems: Accuracy@t1,
Accuracy@t2, Delta(t1,t2) = Acc@t2 - Acc@t1, Delta_i->c (fraction fixed by the revision) and
Delta_c->i (fraction broken by it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.problems import Problem
from ...data.tasks import prompt_text, revision_prompt
from ..registry import Method
from .driver import IterativeConfig, IterativeTrainer, Round, run_recipe
from .modeling import frozen_copy
from .objectives import GRPOCollator, GRPOObjective, PolicySample, group_advantages
from .rewards import VerifierReward
from .rollout import Rollout


@dataclass
class SCoReConfig(IterativeConfig):
    samples_per_problem: int = 4
    stage1_iterations: int = 1
    beta1: float = 0.01  # KL weight on every turn
    beta2: float = 0.1  # stage I: KL weight on the first turn
    alpha: float = 10.0  # stage II: reward-shaping multiplier
    epsilon: float = 0.2
    learning_rate: float = 1e-4


def correction_metrics(first: list[bool], second: list[bool]) -> dict[str, float]:
    """SCoRe's self-correction metrics from per-problem correctness of turn 1 and turn 2."""
    n = len(first)
    t1, t2 = sum(first) / n, sum(second) / n
    return {
        "accuracy_t1": t1,
        "accuracy_t2": t2,
        "delta_t1_t2": t2 - t1,
        "delta_i_to_c": sum((not a) and b for a, b in zip(first, second)) / n,
        "delta_c_to_i": sum(a and (not b) for a, b in zip(first, second)) / n,
    }


class SCoReTrainer(IterativeTrainer):
    config_class = SCoReConfig
    plot_keys = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference = frozen_copy(self.policy)

    def episodes(self, problems: list[Problem], **sampling) -> tuple[list[Rollout], list[Rollout]]:
        """First attempts (``num_samples`` per problem) and one revision of each."""
        first = self.solve(problems, **sampling)
        second_prompts = [revision_prompt(r.prompt, r.text) for r in first]
        second = self.sample(second_prompts, **{**sampling, "num_samples": 1})
        return first, second

    def evaluate(self) -> dict[str, float]:
        first, second = self.episodes(self.eval_set, temperature=0.0, num_samples=1)
        verify = self.task.verify
        metrics = correction_metrics(
            [verify(p, r.text) for p, r in zip(self.eval_set, first)],
            [verify(p, r.text) for p, r in zip(self.eval_set, second)],
        )
        return {"accuracy": metrics["accuracy_t2"], **metrics}

    def build_round(self, iteration: int) -> Round:
        config, k = self.config, self.config.samples_per_problem
        problems = self.problems(iteration)
        first, second = self.episodes(problems, seed=iteration)
        repeated = [p for p in problems for _ in range(k)]
        r1 = torch.tensor(VerifierReward(self.task)(repeated, [r.text for r in first]))
        r2 = torch.tensor(VerifierReward(self.task)(repeated, [r.text for r in second]))
        stage = 1 if iteration <= config.stage1_iterations else 2
        if stage == 1:
            first_advantages = torch.zeros_like(r1)
            second_advantages = group_advantages(r2, k)
            first_kl = config.beta2 / config.beta1
        else:
            shaped = r2 + config.alpha * (r2 - r1)
            first_advantages = group_advantages(r1 + shaped, k)
            second_advantages = group_advantages(shaped, k)
            first_kl = 1.0
        samples = [
            PolicySample(r.prompt_ids, r.completion_ids, float(a), r.logprobs, kl)
            for rollouts, advantages, kl in ((first, first_advantages, first_kl), (second, second_advantages, 1.0))
            for r, a in zip(rollouts, advantages)
        ]
        objective = GRPOObjective(
            self.reference, beta=config.beta1, epsilon_low=config.epsilon, epsilon_high=config.epsilon,
            temperature=config.temperature,
        )
        sampled = correction_metrics(r1.bool().tolist(), r2.bool().tolist())
        logs = {"stage": float(stage), **{f"train_{key}": value for key, value in sampled.items()}}
        return Round(objective, samples, GRPOCollator(self.tokenizer.pad_token_id), logs)


METHOD = Method(
    name="score",
    summary="SCoRe: two-turn self-correction RL (stage I KL-constrained turn 1, stage II shaped joint reward)",
    config_class=SCoReConfig,
    train=run_recipe(SCoReTrainer),
)
