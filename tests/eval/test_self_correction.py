import math

import numpy as np
import pytest

from selfgen.eval.self_correction import (
    check_decomposition,
    flat_metrics,
    paired_comparison,
    self_correction_metrics,
)

# 10 problems, one greedy sample each: 4 kept right, 2 broken (c->i), 1 fixed (i->c), 3 stay wrong.
TURN1 = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
TURN2 = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
TABLE = np.array([TURN1, TURN2]).T  # (problems, turns)


def test_hand_computed_values():
    m = self_correction_metrics(TABLE)
    assert m["accuracy_t1"].value == pytest.approx(0.6)
    assert m["accuracy_t2"].value == pytest.approx(0.5)
    assert m["delta_t1_t2"].value == pytest.approx(-0.1)
    assert m["delta_i_to_c"].value == pytest.approx(0.1)
    assert m["delta_c_to_i"].value == pytest.approx(0.2)
    assert m["confidence_level"].value == pytest.approx(4 / 6)
    assert m["critique_score"].value == pytest.approx(1 / 4)
    # RSS = (0.5 - 0.36) / (2 * 0.6 * 0.4) = 0.14 / 0.48
    assert m["rss"].value == pytest.approx(0.14 / 0.48)


def test_hand_computed_standard_errors():
    m = self_correction_metrics(TABLE)
    # Acc@t1: six ones, four zeros: var = (6*0.16 + 4*0.36) / 9 = 2.4 / 9
    assert m["accuracy_t1"].stderr == pytest.approx(math.sqrt(2.4 / 9 / 10))
    # paired differences a2 - a1: two -1, one +1, seven 0; mean -0.1; sum of squares 7*0.01 + 2*0.81 + 1.21 = 2.9
    assert m["delta_t1_t2"].stderr == pytest.approx(math.sqrt(2.9 / 9 / 10))
    # CL: (kept_i - CL * a1_i) / 0.6 = 5/9 (x4), -10/9 (x2), 0 (x4); mean 0, sum of squares 300/81
    assert m["confidence_level"].stderr == pytest.approx(math.sqrt(300 / 81 / 9 / 10))
    # the paired standard error of a difference is below the unpaired one here (turns agree on 7 of 10)
    unpaired = math.hypot(m["accuracy_t1"].stderr, m["accuracy_t2"].stderr)
    assert m["delta_t1_t2"].stderr < unpaired


def test_several_samples_pool_per_problem_as_the_paper():
    # problem A: samples (t1, t2) = (1,1), (0,1); problem B: (1,0), (0,0)
    table = np.array([[[1, 1], [0, 1]], [[1, 0], [0, 0]]])
    m = self_correction_metrics(table)
    # P(a_A) = 0.5, P(a_A) P(b_A|a_A) = 0.5; P(a_B) = 0.5, P(a_B) P(b_B|a_B) = 0
    assert m["confidence_level"].value == pytest.approx((0.5 + 0.0) / (0.5 + 0.5))
    # (1 - P(a_A)) P(b_A|not a_A) = 0.5, B: 0
    assert m["critique_score"].value == pytest.approx(0.5 / 1.0)
    assert m["accuracy_t2"].value == pytest.approx(0.5)
    assert m["accuracy_t1"].stderr == pytest.approx(0.0)  # both problems at 0.5: no spread between problems


def test_three_turns_and_a_later_correction_step():
    table = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    m = self_correction_metrics(table, before=1, after=2)
    assert [m[f"accuracy_t{k}"].value for k in (1, 2, 3)] == pytest.approx([0.25, 0.5, 0.5])
    assert m["delta_t2_t3"].value == pytest.approx(0.0)
    assert m["delta_i_to_c"].value == pytest.approx(0.25) and m["delta_c_to_i"].value == pytest.approx(0.25)
    assert m["confidence_level"].value == pytest.approx(0.5) and m["critique_score"].value == pytest.approx(0.5)
    assert m["rss"].value == pytest.approx(0.5)  # accuracy unchanged -> RSS = 0.5


def test_rss_bounds_and_undefined_cases():
    # lower bound: CL = Acc1, CS = 0 -> RSS 0; upper bound: CL = 1, CS = Acc1 -> RSS 1 (Acc1 = 0.5)
    lower = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])
    upper = np.array([[1, 1], [1, 1], [0, 1], [0, 0]])
    assert self_correction_metrics(lower)["rss"].value == pytest.approx(0.0)
    assert self_correction_metrics(upper)["rss"].value == pytest.approx(1.0)
    all_right = self_correction_metrics(np.array([[1, 1], [1, 0]]))
    assert all_right["confidence_level"].value == pytest.approx(0.5)
    assert math.isnan(all_right["critique_score"].value) and math.isnan(all_right["rss"].value)
    assert math.isnan(all_right["critique_score"].stderr)


def test_decomposition_identity_is_checked():
    check_decomposition(0.6, 0.5, 4 / 6, 1 / 4)
    with pytest.raises(AssertionError, match="Acc2"):
        check_decomposition(0.6, 0.55, 4 / 6, 1 / 4)


def test_rss_standard_error_matches_a_bootstrap_over_problems():
    rng = np.random.default_rng(0)
    first = rng.random(400) < 0.55
    second = np.where(first, rng.random(400) < 0.8, rng.random(400) < 0.3)
    table = np.stack([first, second], axis=1).astype(float)
    m = self_correction_metrics(table)
    boot = []
    for _ in range(400):
        rows = table[rng.integers(0, 400, 400)]
        boot.append(self_correction_metrics(rows)["rss"].value)
    assert m["rss"].stderr == pytest.approx(np.std(boot), rel=0.2)


def test_paired_comparison_uses_per_problem_differences():
    better = TABLE.copy()
    better[4, 1] = 1  # the candidate keeps one more right answer
    diff = paired_comparison(TABLE, better)
    assert diff["accuracy_t2"].value == pytest.approx(0.1)
    # per-problem differences: one +1, nine 0: sum of squares 0.81 + 9 * 0.01 = 0.9
    assert diff["accuracy_t2"].stderr == pytest.approx(math.sqrt(0.9 / 9 / 10))
    assert diff["confidence_level"].value == pytest.approx(5 / 6 - 4 / 6)
    assert diff["accuracy_t1"].value == pytest.approx(0.0) and diff["accuracy_t1"].stderr == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same problems"):
        paired_comparison(TABLE, TABLE[:5])


def test_bad_tables_are_clear_errors():
    with pytest.raises(ValueError, match="0/1"):
        self_correction_metrics([[0, 2], [1, 1]])
    with pytest.raises(ValueError, match="shape"):
        self_correction_metrics([1, 0, 1])
    with pytest.raises(ValueError, match="before"):
        self_correction_metrics(TABLE, before=1, after=1)


def test_flat_metrics_names_standard_errors():
    flat = flat_metrics(self_correction_metrics(TABLE))
    assert flat["confidence_level"] == pytest.approx(4 / 6) and "confidence_level_se" in flat
