"""One tiny iteration of every recipe end to end on the bundled tiny LM, and each recipe's own math."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from selfgen.data.problems import Problem
from selfgen.train.llm import BSTaRConfig, BSTaRTrainer, STaRConfig, STaRTrainer
from selfgen.train.llm.bstar import balance_score
from selfgen.train.llm.co_reward import CoRewardConfig, CoRewardTrainer
from selfgen.train.llm.expo import ExPOConfig, ExPOTrainer
from selfgen.train.llm.grpo import GRPOConfig, GRPOTrainer
from selfgen.train.llm.laser import LaSeRConfig, LaSeRTrainer
from selfgen.train.llm.rest_em import ReSTEMConfig, ReSTEMTrainer
from selfgen.train.llm.rlccf import RLCCFConfig, RLCCFTrainer
from selfgen.train.llm.score import SCoReConfig, SCoReTrainer, correction_metrics
from selfgen.train.llm.self_reward_dpo import SelfRewardDPOConfig, SelfRewardDPOTrainer

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")

TINY = dict(
    iterations=1, problems_per_iteration=4, eval_problems=4, samples_per_problem=2, max_train_steps=2,
    train_batch_size=4, max_new_tokens=32, max_digits=2, logging_steps=1,
)

RECIPES = [
    (STaRTrainer, STaRConfig, {"samples_per_problem": 1}),
    (BSTaRTrainer, BSTaRConfig, {"temperature_grid": [0.5, 1.0], "threshold_grid": [0.5, 1.0], "probe_problems": 3}),
    (ReSTEMTrainer, ReSTEMConfig, {}),
    (SCoReTrainer, SCoReConfig, {}),
    (SelfRewardDPOTrainer, SelfRewardDPOConfig, {"num_judgements": 2, "self_refine": True, "judge_max_new_tokens": 36}),
    (GRPOTrainer, GRPOConfig, {}),
    (CoRewardTrainer, CoRewardConfig, {}),
    (RLCCFTrainer, RLCCFConfig, {"num_models": 2}),
    (LaSeRTrainer, LaSeRConfig, {"best_of_n": 2, "best_of_n_problems": 2}),
    (ExPOTrainer, ExPOConfig, {}),
]


@pytest.mark.parametrize(("trainer_class", "config_class", "options"), RECIPES, ids=lambda v: getattr(v, "__name__", ""))
def test_one_iteration_end_to_end(tmp_path, trainer_class, config_class, options):
    config = config_class(output_dir=str(tmp_path / "run"), **{**TINY, **options})
    trainer = trainer_class(model=str(ASSET), task="arith", config=config)
    report = trainer.train()
    assert [record["iteration"] for record in report.history] == [0, 1]
    assert 0.0 <= report[1]["accuracy"] <= 1.0
    timings = [report[1][f"time_{phase}_s"] for phase in ("rollout", "reward", "update")]
    assert all(seconds >= 0.0 for seconds in timings) and report[1]["time_rollout_s"] > 0.0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1]
    assert (tmp_path / "run" / "metrics.png").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(report.model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, trainer.policy(ids).logits)
    assert (report.model_dir / "tokenizer.json").is_file()


def test_bstar_api_reports_its_knobs(tmp_path):
    config = BSTaRConfig(output_dir=str(tmp_path / "run"), **TINY, temperature_grid=[0.3, 1.2], threshold_grid=[1.0], probe_problems=4)
    record = BSTaRTrainer(model=str(ASSET), task="arith", config=config).train()[1]
    assert record["temperature"] in (0.3, 1.2) and record["threshold"] == 1.0
    for key in ("balance_score", "pass_at_k", "distinct_correct", "selection_precision"):
        assert 0.0 <= record[key] <= (2.0 if key == "distinct_correct" else 1.0)


def test_star_iteration_resumes_after_last_finished(tmp_path):
    config = STaRConfig(output_dir=str(tmp_path / "run"), **{**TINY, "samples_per_problem": 1})
    STaRTrainer(model=str(ASSET), config=config).train()
    config.iterations, config.resume_from = 2, "latest"
    report = STaRTrainer(model=str(ASSET), config=config).train()
    assert [record["iteration"] for record in report.history] == [0, 1, 2]


def test_balance_score():
    assert balance_score([], n_star=4) == 0.0
    # deduplicated first (official determine_hyper.py): 2 distinct correct of 3 distinct selected: min(2/4, 1) * 2/3
    assert balance_score([("a", True), ("a", True), ("b", True), ("c", False)], n_star=4) == pytest.approx(1 / 3)
    assert balance_score([(str(i), True) for i in range(6)], n_star=4) == 1.0


def test_correction_metrics():
    metrics = correction_metrics([True, False, False, True], [True, True, False, False])
    assert metrics == {"accuracy_t1": 0.5, "accuracy_t2": 0.5, "delta_t1_t2": 0.0, "delta_i_to_c": 0.25, "delta_c_to_i": 0.25}


def test_judgement_pairs_prefer_the_majority_verdict():
    problem = Problem("1+2", "3", "p")
    pair = SelfRewardDPOTrainer.judgement_pair(problem, "A:3", ["r1\nV:Y", "r2\nV:N", "r3\nV:Y"], [True, False, True])
    assert len(pair) == 1 and pair[0].chosen == "r1\nV:Y" and pair[0].rejected == "r2\nV:N"
    assert SelfRewardDPOTrainer.judgement_pair(problem, "A:3", ["a", "b"], [True, False]) == []  # a tie
    assert SelfRewardDPOTrainer.judgement_pair(problem, "A:3", ["a", "b"], [True, True]) == []


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="iterations"):
        STaRConfig(iterations=0)
    with pytest.raises(ValueError, match="temperature_grid"):
        BSTaRConfig(temperature_grid=[0.0, 1.0])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        STaRTrainer(model="/nonexistent/model")


@pytest.mark.parametrize(
    "name", ["lm", "star", "bstar", "rest_em", "score", "self_reward_dpo", "grpo", "co_reward", "rlccf", "laser", "expo"]
)
def test_bundled_configs_load_into_their_method(name):
    import importlib

    from selfgen.train.config import load_config

    module = importlib.import_module(f"selfgen.train.llm.{name}")
    config_file = ASSET.parents[1] / "configs" / f"{name}_arith.yaml"
    config = load_config(module.METHOD.config_class, config_file)
    assert module.METHOD.name == name and config.seed == 0
