"""SPC: the game's outcome on hand-made cases, detection metrics, one tiny iteration, config errors."""

from pathlib import Path

import pytest

from selfgen.data.reasoning import LabelledSolution
from selfgen.data.problems import Problem
from selfgen.train.llm.spc import (
    SPCConfig,
    SPCTrainer,
    critic_rewards,
    detection_metrics,
    first_flagged,
    sneaky_is_effective,
    step_labels,
    sneaky_reward,
)

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


def test_game_outcome():
    # a real error found by one critique and missed by the other (one says Y, one has no verdict)
    rewards = critic_rewards([False, True, None], step_is_wrong=True)
    assert rewards == [1.0, -1.0, -1.0]
    assert sneaky_reward(True, rewards) == pytest.approx(1 / 3)  # fooled two of three
    assert sneaky_reward(True, [1.0, 1.0]) == -1.0  # always caught
    assert sneaky_reward(False, []) == -1.0  # its step was not actually wrong
    # on the original correct step the critic must say Y
    assert critic_rewards([True, False], step_is_wrong=False) == [1.0, -1.0]


def test_sneaky_validation():
    assert sneaky_is_effective(1.0, 0.0, changed=True, min_original_success=0.5)
    assert not sneaky_is_effective(1.0, 0.25, changed=True, min_original_success=0.5)  # still solvable
    assert not sneaky_is_effective(0.25, 0.0, changed=True, min_original_success=0.5)  # context already fails
    assert not sneaky_is_effective(1.0, 0.0, changed=False, min_original_success=0.5)  # copied the step


def test_detection_metrics_and_first_flag():
    assert first_flagged([True, True]) == -1 and first_flagged([True, None, False]) == 1
    problem = Problem("1+2", "3", "p")
    solutions = [LabelledSolution(problem, ["a", "b"], 1), LabelledSolution(problem, ["a", "b"], -1),
                 LabelledSolution(problem, ["a", "b"], 0), LabelledSolution(problem, ["a", "b"], -1)]
    metrics = detection_metrics(solutions, [1, -1, 1, 0])  # TP (right place), TN, TP (wrong place), FP
    assert metrics["critic_f1"] == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert metrics["critic_accuracy"] == 0.75 and metrics["critic_location_accuracy"] == 0.5
    # ProcessBench F1: errors located 1/2, clean accepted 1/2 -> harmonic mean 0.5
    assert metrics["critic_processbench_f1"] == pytest.approx(0.5)
    # flagging everything: detection F1 = 2/3 with half the solutions wrong, ProcessBench F1 = 0
    always = detection_metrics(solutions, [0, 0, 0, 0])
    assert always["critic_f1"] == pytest.approx(2 / 3) and always["critic_processbench_f1"] == 0.0


def test_step_labels_stop_at_the_error():
    problem = Problem("1+2", "3", "p")
    solutions = [LabelledSolution(problem, ["a", "b", "c"], 1), LabelledSolution(problem, ["a", "b"], -1)]
    verdicts = [[True, False, False], [None, True]]  # the step after the error is not scored
    truth, flagged = step_labels(solutions, verdicts)
    assert truth == [False, True, False, False] and flagged == [False, True, True, False]


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_one_iteration_end_to_end(tmp_path):
    config = SPCConfig(
        output_dir=str(tmp_path / "run"), iterations=1, problems_per_iteration=4, eval_problems=3, detection_problems=4,
        samples_per_problem=2, validation_samples=2, critic_samples=2, warmup_examples=12, warmup_train_steps=2,
        max_train_steps=2, train_batch_size=4, max_new_tokens=40, max_digits=2, logging_steps=1,
    )
    report = SPCTrainer(model=str(ASSET), task="arith", config=config).train()
    assert [record["iteration"] for record in report.history] == [0, 1]
    assert report[0]["seed_train_steps"] == 2 and "base_critic_f1" in report[0]
    for key in ("accuracy", "critic_f1", "critic_step_f1", "critic_processbench_f1", "critic_accuracy",
                "critic_location_accuracy", "accept_rate", "sneaky_success_rate"):
        assert 0.0 <= report[1][key] <= 1.0
    assert report[1]["time_rollout_s"] > 0


def test_config_and_task_errors():
    with pytest.raises(ValueError, match="warmup_error_kinds"):
        SPCConfig(warmup_error_kinds=["typo"])
    with pytest.raises(ValueError, match="warmup_critic_fraction"):
        SPCConfig(warmup_critic_fraction=-0.1)
    with pytest.raises(ValueError, match="min_original_success"):
        SPCConfig(min_original_success=2.0)
    with pytest.raises(ValueError, match="temperature"):
        SPCConfig(temperature=0.0)
    if (ASSET / "config.json").is_file():
        with pytest.raises(ValueError, match="arithmetic task"):
            SPCTrainer(model=str(ASSET), task="countdown", config=SPCConfig(eval_problems=2))


def test_bundled_config_loads():
    from selfgen.train.config import load_config
    from selfgen.train.llm import spc

    config = load_config(spc.METHOD.config_class, ASSET.parents[1] / "configs" / "spc_arith.yaml")
    assert spc.METHOD.name == "spc" and config.seed == 0 and config.warmup_error_kinds == ["calculation"]
    llama = load_config(spc.METHOD.config_class, ASSET.parents[1] / "configs" / "spc_arith_llama.yaml")
    assert llama.model == "assets/lm-arith-llama" and llama.mixed_precision == "no"
