"""RLCCF's self-consistency-weighted collective vote and the rewards it gives every member."""

from pathlib import Path

import pytest

from selfgen.data.problems import Problem
from selfgen.train.llm.rlccf import RLCCFConfig, RLCCFTrainer, collective_vote, self_consistency
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
