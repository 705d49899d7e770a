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


def mcnemar(correct_a: Iterable[bool], correct_b: Iterable[bool]) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same items: ``a_only`` items only ``a`` gets right,
    ``b_only`` items only ``b`` gets right, and the two-sided binomial p-value of ``a_only`` out of the
    ``a_only + b_only`` discordant items under ``p = 1/2`` (``1.0`` when there are none)."""
    from scipy.stats import binomtest

    a, b = np.asarray(list(correct_a), dtype=bool), np.asarray(list(correct_b), dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"correct_a and correct_b must be equal-length non-empty 1-D sequences, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p_value = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p_value), "accuracy_difference": float(a.mean() - b.mean())}
