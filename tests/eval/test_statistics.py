import numpy as np
import pytest

from selfgen.eval.statistics import standard_error


def test_standard_error_leaves_out_nans_and_needs_two_values():
    assert standard_error([1.0, 2.0, 3.0, float("nan")]) == pytest.approx(1 / np.sqrt(3))
    assert standard_error(np.array([0.5, 0.0, 0.25])) == pytest.approx(np.std([0.5, 0.0, 0.25], ddof=1) / np.sqrt(3))
    assert np.isnan(standard_error([1.0])) and np.isnan(standard_error([]))
