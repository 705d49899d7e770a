import numpy as np
import pytest

from selfgen.eval.statistics import bootstrap_interval, mean_difference, standard_error


def test_standard_error_leaves_out_nans_and_needs_two_values():
    assert standard_error([1.0, 2.0, 3.0, float("nan")]) == pytest.approx(1 / np.sqrt(3))
    assert standard_error(np.array([0.5, 0.0, 0.25])) == pytest.approx(np.std([0.5, 0.0, 0.25], ddof=1) / np.sqrt(3))
    assert np.isnan(standard_error([1.0])) and np.isnan(standard_error([]))


def test_mean_difference_is_paired_not_pooled():
    reference = [0.1, 0.5, 0.9, 0.3]
    candidate = [0.2, 0.6, 1.0, 0.5]  # every unit +0.1 except the last (+0.2)
    mean, se = mean_difference(reference, candidate)
    assert mean == pytest.approx(0.125)
    assert se == pytest.approx(np.std([0.1, 0.1, 0.1, 0.2], ddof=1) / 2)
    assert se < standard_error(candidate)  # the spread between units cancels in a paired difference


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small, large = rng.normal(2.0, 1.0, 50), rng.normal(2.0, 1.0, 2000)
    low, high = bootstrap_interval(np.mean, small)
    assert low < small.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(50), rel=0.35)  # the normal-theory width
    wide, narrow = high - low, np.subtract(*bootstrap_interval(np.mean, large)[::-1])
    assert narrow < wide / 3
    assert bootstrap_interval(np.mean, small) == bootstrap_interval(np.mean, small)  # seeded
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.mean, small, level=1.5)
