"""RLCCF's self-consistency-weighted collective vote and the rewards it gives every member."""

from pathlib import Path

import pytest

from selfgen.data.problems import Problem
from selfgen.train.llm.rlccf import RLCCFConfig, RLCCFTrainer, collective_signal, collective_vote, self_consistency
from selfgen.train.llm.rollout import Rollout

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


def test_self_consistency_is_the_share_of_the_own_majority():
    assert self_consistency(["1", "1", "2", None]) == 0.5
    assert self_consistency([None, None]) == 0.0


def test_weighting_overrules_a_plain_majority():
    confident = ["1", "1", "1", "1"]  # SC 1.0
    scattered = [["2", "2", "3", "4"], ["2", "2", "5", "6"], ["2", "7", "8", "9"]]  # SC 0.5, 0.5, 0.25
    # a plain vote picks "2" (5 votes to 4); weighted: "1" = 1.0 * 4/4, "2" = 0.5*2/4 + 0.5*2/4 + 0.25*1/4
    winner, weights = collective_vote([confident, *scattered])
    assert winner == "1" and weights == [1.0, 0.5, 0.5, 0.25]
    assert collective_vote([["2", "2", "1", "1"], ["1", "3", "4", "5"]])[0] == "1"  # 0.5*0.5 + 0.25*0.25 > 0.5*0.5
    assert collective_vote([[None, None], [None, None]]) == (None, [0.0, 0.0])


def test_collective_signal_on_hand_made_groups():
    """Question a (truth 3): the collective is right; question b (truth 4): a confident wrong member (5, 5, 5)
    outvotes member 0's right majority (5, 4, 4), so member 0's agreement rewards point against the verifier's."""
    member0 = [["3", "3", "3"], ["5", "4", "4"]]  # SC 1, 2/3
    member1 = [["3", "9", "8"], ["5", "5", "5"]]  # SC 1/3, 1
    signal = collective_signal([member0, member1], ["3", "4"])
    assert signal["collective_label_accuracy"] == 0.5 and signal["majorities_agree"] == 0.5  # a: 3 and 3; b: 4 vs 5
    assert signal["pass_at_1_m0"] == pytest.approx(5 / 6) and signal["majority_at_k_m0"] == 1.0
    assert signal["pass_at_1_m1"] == pytest.approx(1 / 6) and signal["majority_at_k_m1"] == 0.5
    # member 0: a has no mixed group; b's agreement rewards (1, 0, 0) are the verifier's (0, 1, 1) flipped
    assert signal["alignment_m0"] == pytest.approx(-1.0)
    # member 1: a's agreement rewards equal the verifier's; b has no mixed verifier group
    assert signal["alignment_m1"] == pytest.approx(1.0)
    # rewarded rollouts that are right: member 0 the three 3s of a, not the 5 of b; member 1 the 3 of a only
    assert signal["reward_precision_m0"] == pytest.approx(3 / 4) and signal["reward_precision_m1"] == pytest.approx(1 / 4)
    # a member alone: its own majority is the label (TTRL's self-vote)
    assert collective_signal([member0], ["3", "4"])["collective_label_accuracy"] == 1.0
    with pytest.raises(ValueError, match="one group per question"):
        collective_signal([member0, member1[:1]], ["3", "4"])


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_collective_of_different_models_loads_each_folder(tmp_path):
    """Members from different folders (issue #18: not copies) keep their own weights and sizes."""
    llama = ASSET.parent / "lm-arith-llama"
    if not (llama / "config.json").is_file():
        pytest.skip("assets/lm-arith-llama not built")
    config = RLCCFConfig(output_dir=str(tmp_path), models=[str(llama), str(ASSET)], eval_problems=2)
    trainer = RLCCFTrainer(task="arith", config=config)
    sizes = [policy.config.hidden_size for policy, _, _ in trainer.members]
    assert sizes == [256, 128] and trainer.policy is trainer.members[0][0]
    assert trainer.members[1][2] is not None and trainer.members[1][2].config.hidden_size == 128  # its own reference


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_collective_rewards_reward_agreement_for_every_member(tmp_path):
    config = RLCCFConfig(output_dir=str(tmp_path), num_models=2, eval_problems=2, samples_per_problem=2)
    trainer = RLCCFTrainer(model=str(ASSET), task="arith", config=config)
    assert len(trainer.members) == 2 and trainer.members[1][0] is not trainer.policy
    problems = [Problem("1+2", "3", "a"), Problem("2+2", "4", "b")]
    member_texts = [["A:3", "A:3", "A:5", "A:4"], ["A:3", "A:9", "A:5", "A:5"]]
    rollouts = [[Rollout(0, "", text, [1], [2], [0.0]) for text in texts] for texts in member_texts]
    rewards = trainer.collective_rewards(problems, rollouts)
    # problem a: member 0 says 3,3 (SC 1), member 1 says 3,9 (SC .5) -> 3; problem b: 5,4 (SC .5) vs 5,5 (SC 1) -> 5
    assert rewards == [[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]]
    assert trainer.collective_logs["collective_label_accuracy"] == 0.5
    # members differ by seeds: distinct sampling and update seeds per member and per iteration
    seeds = {trainer.member_seed(m, k, purpose) for m in (0, 1) for k in (1, 2) for purpose in ("sample", "update")}
    assert len(seeds) == 8
    trainer.config.problems_per_iteration, trainer.config.max_new_tokens = 2, 16
    trainer.build_round(1)
    assert [r.seed for r in trainer.member_rounds] == [trainer.member_seed(m, 1, "update") for m in (0, 1)]
    assert trainer.member_rounds[0].seed != trainer.member_rounds[1].seed


def test_rlccf_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_models"):
        RLCCFConfig(num_models=1)
    with pytest.raises(ValueError, match="member_seeds"):
        RLCCFConfig(num_models=3, member_seeds=[1, 2])
    with pytest.raises(ValueError, match="member_seeds"):
        RLCCFConfig(num_models=2, member_seeds=[4, 4])
    with pytest.raises(ValueError, match="models"):
        RLCCFConfig(models=["assets/lm-arith"])


def test_v3_long_config_is_the_v3_config_at_the_long_grpo_budget():
    """Only the iterations (GRPO long's 40, 320 steps a member) and the output folder differ from the v3 config."""
    from dataclasses import asdict

    from selfgen.train.config import load_config
    from selfgen.train.llm.grpo import GRPOConfig

    configs = ASSET.parents[1] / "configs"
    long, short = (asdict(load_config(RLCCFConfig, configs / f"rlccf_arith_llama_v3{tail}.yaml")) for tail in ("_long", ""))
    grpo = load_config(GRPOConfig, configs / "grpo_arith_llama_v3_long.yaml")
    assert {k for k in long if long[k] != short[k]} == {"iterations", "output_dir"}
    for field in ("iterations", "max_train_steps", "problems_per_iteration", "samples_per_problem", "learning_rate"):
        assert long[field] == getattr(grpo, field), field
