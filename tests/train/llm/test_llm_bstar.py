"""B-STaR's balance score counts distinct samples (the official determine_hyper.py), and B-STaR runs on
Countdown, a task with several valid solutions per query."""

from pathlib import Path

import pytest

from selfgen.data.problems import Problem
from selfgen.data.tasks import CountdownTask
from selfgen.train.config import load_config
from selfgen.train.llm.bstar import METHOD, BSTaRConfig, BSTaRTrainer, Scored, balance_score

ROOT = Path(__file__).resolve().parents[3]
ASSET = ROOT / "assets" / "lm-arith"


def test_duplicates_do_not_count_in_n():
    # one right solution sampled 4 times and one wrong one: n = 2 distinct, n' = 1 -> 1/4 * 1/2
    # (counting duplicates gave n = 5: 1/4 * 1/5)
    assert balance_score([("a", True)] * 4 + [("b", False)], n_star=4) == pytest.approx(0.125)
    # a wrong sample repeated is one wrong sample
    assert balance_score([("a", True), ("b", False), ("b", False), ("b", False)], n_star=1) == pytest.approx(0.5)


def test_countdown_rewards_distinct_correct_solutions():
    task, problem = CountdownTask(), Problem("3,5,7>22", "22", "p")
    first, second, wrong = "S:3*5=15,15+7=22\nA:22", "S:5*3=15,7+15=22\nA:22", "S:3+5=8,8+7=15\nA:15"
    assert task.verify(problem, first) and task.verify(problem, second) and not task.verify(problem, wrong)
    texts = [first, first, second, wrong]
    scored = Scored(problem, texts, [1.0] * 4, [task.verify(problem, t) for t in texts])
    # n = 3 distinct selected, n' = 2 distinct correct: min(2/2, 1) * 2/3
    assert balance_score(scored.selected(0.5, require_correct=False), n_star=2) == pytest.approx(2 / 3)
    assert balance_score(scored.selected(0.5, require_correct=True), n_star=2) == pytest.approx(1.0)


def test_countdown_config_loads():
    config = load_config(BSTaRConfig, ROOT / "configs" / "bstar_countdown.yaml")
    assert METHOD.name == "bstar" and config.task == "countdown" and len(config.temperature_grid) >= 3
    assert not config.output_dir.startswith("assets") and config.seed == 0


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_one_countdown_round(tmp_path):
    config = BSTaRConfig(
        output_dir=str(tmp_path / "run"), task="countdown", iterations=1, problems_per_iteration=4, eval_problems=4,
        samples_per_problem=4, probe_problems=4, temperature_grid=[0.3, 1.3], threshold_grid=[0.5, 1.0], n_star=2,
        max_new_tokens=32, max_train_steps=1, train_batch_size=4,
    )
    round_ = BSTaRTrainer(model=str(ASSET), task="countdown", config=config).build_round(1)
    assert round_.logs["temperature"] in (0.3, 1.3) and round_.logs["threshold"] in (0.5, 1.0)
    assert 0.0 <= round_.logs["balance_score"] <= 1.0 and 0.0 <= round_.logs["distinct_correct"] <= 4.0


def test_reference_solution_counts_as_a_selected_correct_candidate():
    # the official code appends each query's reference solution with the top score: it is selected at
    # every threshold, counts in n and n', and is not counted twice when a sample reproduces it
    task, problem = CountdownTask(), Problem("3,5,7>22", "22", "p")
    reference, other, wrong = "S:3*5=15,15+7=22\nA:22", "S:5*3=15,7+15=22\nA:22", "S:3+5=8,8+7=15\nA:15"
    texts = [other, wrong, reference]
    scored = Scored(problem, texts, [1.0, 1.0, 1.0], [task.verify(problem, t) for t in texts], reference)
    assert scored.selected(0.5, require_correct=False) == [(other, True), (wrong, False), (reference, True), (reference, True)]
    # distinct: n = 3 (other, wrong, reference), n' = 2 -> min(2/4, 1) * 2/3
    assert balance_score(scored.selected(0.5, require_correct=False), n_star=4) == pytest.approx(1 / 3)
    assert scored.selected(0.5, require_correct=True, reference=False) == [(other, True), (reference, True)]
    alone = Scored(problem, [wrong], [0.0], [False], reference)
    assert balance_score(alone.selected(0.5, require_correct=True), n_star=4) == pytest.approx(0.25)
    assert balance_score(Scored(problem, [wrong], [0.0], [False]).selected(0.5, require_correct=True), n_star=4) == 0.0
