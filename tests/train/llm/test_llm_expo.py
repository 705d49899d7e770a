"""ExPO: self-explanations join a group only when all its rollouts are wrong; the ExP-SFT term."""

from pathlib import Path

import pytest
import torch

from selfgen.data.problems import Problem
from selfgen.data.tasks import prompt_text
from selfgen.train.llm.expo import Explanation, ExPOConfig, ExPOObjective, ExPOTrainer
from selfgen.train.llm.objectives import GRPOObjective

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    config = ExPOConfig(output_dir=str(tmp_path_factory.mktemp("expo")), eval_problems=2, samples_per_problem=2, num_explanations=4)
    return ExPOTrainer(model=str(ASSET), task="arith", config=config)


def test_explanations_join_only_all_wrong_groups(trainer):
    problems = [Problem("3+4", "7", "a"), Problem("5+2", "7", "b")]
    rollouts = trainer.solve(problems, seed=0)
    groups = [[(rollouts[0], 0.0), (rollouts[1], 0.0)], [(rollouts[2], 1.0), (rollouts[3], 0.0)]]
    extras = trainer.extra_samples(problems, groups)
    assert list(extras) == [0] and trainer.explained_groups == 0.5
    plain_ids = trainer.tokenizer(prompt_text("3+4"), add_special_tokens=False).input_ids
    for explanation, reward in extras[0]:
        assert isinstance(explanation, Explanation) and reward == 1.0
        assert explanation.prompt_ids == plain_ids and trainer.task.verify(problems[0], explanation.text)
        ids = torch.tensor([plain_ids + explanation.completion_ids])  # pi_old = the policy given the plain prompt
        with torch.no_grad():
            logprobs = trainer.policy(ids).logits[0, len(plain_ids) - 1 : -1].float().log_softmax(-1)
        expected = logprobs.gather(-1, ids[0, len(plain_ids) :, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(explanation.logprobs), expected, atol=1e-4, rtol=1e-4)
    assert trainer.extra_samples(problems, [groups[1], groups[1]]) == {}
    samples = [trainer.policy_sample(r, 1.0, 1.0) for r in (extras[0][0][0], rollouts[0])]
    assert [s.extras["explanation"] for s in samples] == [1.0, 0.0]


def test_sft_term_is_the_explanations_mean_token_nll(trainer):
    rollouts = trainer.solve([Problem("3+4", "7", "c")], seed=0)
    samples = [trainer.policy_sample(rollouts[0], 1.0, 1.0), trainer.policy_sample(rollouts[1], -1.0, 0.0)]
    samples[0].extras["explanation"] = 1.0
    batch = trainer.collator()(samples)
    with torch.no_grad():
        total, logs = ExPOObjective(None, beta=0.0, sft_coef=0.5).compute_loss(trainer.policy, batch)
        grpo, _ = GRPOObjective(None, beta=0.0).compute_loss(trainer.policy, batch)
        logprobs = GRPOObjective(None, beta=0.0).completion_logprobs(trainer.policy, batch)
    nll = -(logprobs[0, : len(rollouts[0].completion_ids)]).mean()
    assert float(total - grpo) == pytest.approx(0.5 * float(nll), rel=1e-4)
    assert logs["explanation_nll"] == pytest.approx(float(nll), rel=1e-4)


def test_expo_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_explanations"):
        ExPOConfig(num_explanations=0)
    with pytest.raises(ValueError, match="sft_coef"):
        ExPOConfig(sft_coef=-1.0)


def test_explanation_seed_is_derived_per_iteration(trainer, monkeypatch):
    from selfgen.train.llm.grpo import GRPOTrainer

    seeds = []
    problems = [Problem("3+4", "7", "a")]
    wrong = trainer.solve(problems, seed=0)
    monkeypatch.setattr(GRPOTrainer, "build_round", lambda self, iteration: None)
    monkeypatch.setattr(trainer, "sample", lambda prompts, **kwargs: seeds.append(kwargs["seed"]) or [])
    for iteration in (1, 2, 2):
        trainer.build_round(iteration)
        trainer.extra_samples(problems, [[(wrong[0], 0.0), (wrong[1], 0.0)]])
    assert seeds[0] != seeds[1] and seeds[1] == seeds[2]  # new each iteration, reproducible within one


def test_a_round_injects_explanations_where_every_group_fails(tmp_path):
    """A reward that fails every rollout leaves every group all-wrong; on 1-2 digit problems the
    policy's hinted explanations reach the answer, so the round injects them (the config's 3-4 digit
    setting injected 0 of 8 attempts in two rounds: the base cannot use the hint there)."""

    def never(completions, **_):
        return [0.0] * len(completions)

    config = ExPOConfig(
        output_dir=str(tmp_path), problems_per_iteration=4, samples_per_problem=2, num_explanations=2,
        max_new_tokens=32, max_digits=2, eval_problems=2,
    )
    round_ = ExPOTrainer(model=str(ASSET), task="arith", config=config, reward_fn=never).build_round(1)
    assert round_.logs["extra_samples"] > 0 and round_.logs["explained_groups"] > 0
    assert sum(s.extras["explanation"] for s in round_.dataset) == round_.logs["extra_samples"]


def test_llama_config_has_the_grpo_controls_budget():
    """configs/expo_arith_llama.yaml is GRPO's matched budget: every field GRPO has is equal but the output dir."""
    from dataclasses import fields

    from selfgen.train.config import load_config
    from selfgen.train.llm.grpo import GRPOConfig

    configs = ASSET.parents[1] / "configs"
    expo = load_config(ExPOConfig, configs / "expo_arith_llama.yaml")
    grpo = load_config(GRPOConfig, configs / "grpo_arith_llama.yaml")
    differing = [f.name for f in fields(GRPOConfig) if getattr(expo, f.name) != getattr(grpo, f.name)]
    assert differing == ["output_dir"] and expo.num_explanations == 8
