"""Small statistics shared by the evaluations."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
    difference, difference_se = mean_difference(b.astype(float), a.astype(float))
    return {
        "a_only": a_only,
        "b_only": b_only,
        "p_value": float(p_value),
        "accuracy_difference": difference,
        "difference_standard_error": difference_se,
    }


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], samples: np.ndarray, level: float = 0.95, num_resamples: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(samples)``: the rows of ``samples`` are resampled with
    replacement ``num_resamples`` times (fixed ``seed``) and the central ``level`` part of the statistic's
    values is returned as ``(low, high)``. E.g. the spread of a Frechet distance due to which samples were drawn."""
    samples = np.asarray(samples)
    if not 0 < level < 1 or num_resamples < 2 or len(samples) < 2:
        raise ValueError(
            f"bootstrap_interval needs 0 < level < 1, num_resamples >= 2 and >= 2 samples, got {level}, "
            f"{num_resamples}, {len(samples)}"
        )
    rng = np.random.default_rng(seed)
    values = [statistic(samples[rng.integers(0, len(samples), len(samples))]) for _ in range(num_resamples)]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
