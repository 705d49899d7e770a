"""Small statistics shared by the evaluations."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def standard_error(values: Iterable[float]) -> float:
    """Standard error of the mean, ``std(values, ddof=1) / sqrt(n)``, NaNs left out; ``nan`` for fewer
    than two values (one value says nothing about its spread)."""
    finite = np.asarray(list(values), dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.std(ddof=1) / np.sqrt(len(finite))) if len(finite) > 1 else float("nan")


def mean_difference(reference: Iterable[float], candidate: Iterable[float]) -> tuple[float, float]:
    """Paired comparison: the mean of ``candidate - reference`` over matched units (prompts, scenes, ...)
    and its :func:`standard_error`."""
    differences = np.asarray(list(candidate), dtype=float) - np.asarray(list(reference), dtype=float)
    return float(differences.mean()), standard_error(differences)
