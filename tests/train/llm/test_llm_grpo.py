"""GRPO with verifier rewards (the baseline): rewards, extra samples and group advantages, config errors.

One tiny iteration of each GRPO-family recipe end to end is in ``test_llm_recipes.py``."""

from pathlib import Path

import pytest

from selfgen.data.problems import Problem
from selfgen.train.llm.grpo import GRPOConfig, GRPOTrainer
from selfgen.train.llm.rollout import Rollout

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")

TINY = dict(
    iterations=1, problems_per_iteration=2, eval_problems=2, samples_per_problem=2, max_train_steps=1,
    train_batch_size=4, max_new_tokens=24, max_digits=2, logging_steps=1,
)


def fake_rollout(text: str, prompt_ids=(1, 2), completion_ids=(3, 4)) -> Rollout:
    return Rollout(0, "Q:1+2\n", text, list(prompt_ids), list(completion_ids), [-0.5] * len(completion_ids))


class TwoGroupsTrainer(GRPOTrainer):
    """Verifier rewards, plus one extra reward-1 sample joining group 0."""

    def extra_samples(self, problems, groups):
        return {0: [(fake_rollout("A:3", completion_ids=(9,)), 1.0)]}


def test_rewards_and_extra_samples_set_group_advantages(tmp_path):
    trainer = TwoGroupsTrainer(model=str(ASSET), task="arith", config=GRPOConfig(output_dir=str(tmp_path), **TINY))
    problems = [Problem("1+2", "3", "a"), Problem("2+2", "4", "b")]
    rollouts = [fake_rollout("A:5"), fake_rollout("A:6"), fake_rollout("A:4"), fake_rollout("A:1")]
    rewards = trainer.rewards(problems, rollouts)
    assert rewards == [0.0, 0.0, 1.0, 0.0]
    round_ = trainer.grpo_round(problems, rollouts, rewards)
    advantages = [sample.advantage for sample in round_.dataset]
    # group 0 = two wrong rollouts + the extra positive: rewards (0, 0, 1), mean 1/3, unbiased std sqrt(1/3)
    std = (1 / 3) ** 0.5
    expected = [-1 / 3 / (std + 1e-4)] * 2 + [2 / 3 / (std + 1e-4)] + [0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4)]
    assert advantages == pytest.approx(expected, rel=1e-5)
    assert round_.dataset[2].completion_ids == [9] and round_.logs["extra_samples"] == 1.0
    assert round_.logs["train_accuracy"] == 0.25 and round_.logs["unsolved_groups"] == 0.5
    with pytest.raises(ValueError, match="rewards"):
        trainer.grpo_round(problems, rollouts, rewards[:3])


def test_grpo_config_errors_name_the_field():
    with pytest.raises(ValueError, match="samples_per_problem"):
        GRPOConfig(samples_per_problem=1)
    with pytest.raises(ValueError, match="loss_type"):
        GRPOConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="beta"):
        GRPOConfig(beta=-1.0)
