"""Self-correction metrics from per-problem correctness over turns, with paired standard errors.

A multi-turn evaluation (attempt -> revision -> revision ...) gives a correctness table
``correct[i, t]`` (problem ``i``, turn ``t``) or, with several samples per problem,
``correct[i, s, t]``. From it, with ``a_t(i)`` the share of problem ``i``'s samples right at turn ``t``:

* ``accuracy_t{k}`` - Acc@tk = mean_i a_k(i) (SCoRe's Accuracy@t1, @t2; ExIt's K revisions);
* ``delta_t1_t2`` = Acc@t2 - Acc@t1;
* ``delta_i_to_c`` - the share of samples wrong at t1 and right at t2; ``delta_c_to_i`` the reverse
  (SCoRe, Kumar et al. 2024, Sec. 3); ``delta_t1_t2 = delta_i_to_c - delta_c_to_i``;
* the "Confidence v.s. Critique" decomposition (Yang et al., ACL 2025, arXiv:2412.19513, Sec. 2,
  self-correction evaluation), with ``Acc1``/``Acc2`` the accuracy before/after the correction turn:
  **confidence level** ``CL = P(right after | right before) = sum_i P(a_i) P(b_i | a_i) / sum_i P(a_i)``,
  **critique score** ``CS = P(right after | wrong before) = sum_i (1 - P(a_i)) P(b_i | not a_i) / sum_i (1 - P(a_i))``,
  which satisfy ``Acc2 = Acc1 CL + (1 - Acc1) CS`` (checked on every call), and the **relative
  self-correction score** ``RSS = (Acc2 - Acc1^2) / (2 Acc1 (1 - Acc1))``: Acc2 placed between its
  lower bound ``Acc1^2`` (``CL = Acc1``: the revision keeps a right answer no more often than a fresh
  attempt would; ``CS = 0``) and its upper bound ``Acc1 (2 - Acc1)`` (``CL = 1``; ``CS = Acc1``: a
  wrong answer is fixed as often as a fresh attempt is right), so RSS = 0.5 means "accuracy
  unchanged", 0 and 1 the two bounds (it may leave [0, 1] outside them). The paper's bounds argument
  is summarised here; the formula is checked against the authors' ``analysis_sampling.py``
  (Zhe-Young/SelfCorrectDecompose), which pools samples per question exactly as above. CL is
  undefined (NaN) when no attempt was right before, CS when none was wrong, RSS in either case.

**Standard errors** are over problems (samples of one problem are not independent), through
:func:`selfgen.eval.statistics.standard_error` of per-problem values: for a mean (an accuracy, a
Delta) the per-problem values themselves; for a ratio ``R = sum_i x_i / sum_i y_i`` (CL, CS) the
delta-method linearisation ``(x_i - R y_i) / mean(y)``; for RSS its linearisation in
``(a_1(i), a_2(i))``. :func:`paired_comparison` compares two models on the same problems: the
difference of each metric with the standard error of the per-problem difference of those values
(paired by item, as :func:`selfgen.eval.statistics.mean_difference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .statistics import mean_difference, standard_error


@dataclass(frozen=True)
class Estimate:
    """A metric over problems and its standard error (NaN where undefined)."""

    value: float
    stderr: float


def correctness_table(correct) -> np.ndarray:
    """``correct`` as a float array ``(problems, samples, turns)`` of 0/1; a 2-d ``(problems, turns)``
    table gets one sample per problem. Raises ValueError for other shapes, empty tables or values
    other than 0/1/True/False."""
    table = np.asarray(correct, dtype=float)
    if table.ndim == 2:
        table = table[:, None, :]
    if table.ndim != 3 or 0 in table.shape:
        raise ValueError(
            f"correct must be a non-empty (problems, turns) or (problems, samples, turns) table, got shape {table.shape}"
        )
    if not np.isin(table, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 (or True/False) values")
    return table


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, np.ndarray]:
    """``R = sum x / sum y`` and its per-problem delta-method values ``(x_i - R y_i) / mean(y)``."""
    total = denominators.sum()
    if total == 0:
        return float("nan"), np.full_like(numerators, np.nan)
    ratio = numerators.sum() / total
    return float(ratio), (numerators - ratio * denominators) / denominators.mean()


def per_problem_values(correct, before: int = 0, after: int = 1) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every metric's value and its per-problem linearised values (whose :func:`standard_error` is the
    metric's), for the correction from turn ``before`` to turn ``after`` (0-based)."""
    table = correctness_table(correct)
    turns = table.shape[2]
    if not 0 <= before < after < turns:
        raise ValueError(f"need 0 <= before < after < turns ({turns}), got before={before}, after={after}")
    accuracy = table.mean(axis=1)  # (problems, turns): a_t(i)
    values = {f"accuracy_t{t + 1}": float(accuracy[:, t].mean()) for t in range(turns)}
    units = {f"accuracy_t{t + 1}": accuracy[:, t] for t in range(turns)}
    first, second = table[:, :, before], table[:, :, after]
    kept = (first * second).mean(axis=1)  # P(a_i) P(b_i | a_i)
    fixed = ((1 - first) * second).mean(axis=1)  # (1 - P(a_i)) P(b_i | not a_i)
    broken = (first * (1 - second)).mean(axis=1)
    a1, a2 = accuracy[:, before], accuracy[:, after]
    name = f"t{before + 1}_t{after + 1}"
    values[f"delta_{name}"], units[f"delta_{name}"] = float((a2 - a1).mean()), a2 - a1
    values["delta_i_to_c"], units["delta_i_to_c"] = float(fixed.mean()), fixed
    values["delta_c_to_i"], units["delta_c_to_i"] = float(broken.mean()), broken
    values["confidence_level"], units["confidence_level"] = _ratio(kept, a1)
    values["critique_score"], units["critique_score"] = _ratio(fixed, 1 - a1)
    acc1, acc2 = float(a1.mean()), float(a2.mean())
    check_decomposition(acc1, acc2, values["confidence_level"], values["critique_score"])
    values["rss"], units["rss"] = _relative_score(acc1, acc2, a1, a2)
    return values, units


def check_decomposition(acc1: float, acc2: float, confidence_level: float, critique_score: float) -> None:
    """Assert ``Acc2 = Acc1 CL + (1 - Acc1) CS`` (a term drops out where its weight is 0)."""
    kept = acc1 * confidence_level if acc1 > 0 else 0.0
    fixed = (1 - acc1) * critique_score if acc1 < 1 else 0.0
    if not math.isclose(acc2, kept + fixed, rel_tol=1e-9, abs_tol=1e-12):
        raise AssertionError(f"Acc2 = {acc2} but Acc1*CL + (1-Acc1)*CS = {kept + fixed}")


def _relative_score(acc1: float, acc2: float, a1: np.ndarray, a2: np.ndarray) -> tuple[float, np.ndarray]:
    """RSS = (Acc2 - Acc1^2) / (2 Acc1 (1 - Acc1)) and its linearisation in the per-problem accuracies."""
    scale = 2 * acc1 * (1 - acc1)
    if scale == 0:
        return float("nan"), np.full_like(a1, np.nan)
    rss = (acc2 - acc1**2) / scale
    grad_acc2 = 1 / scale
    grad_acc1 = (-2 * acc1 - rss * 2 * (1 - 2 * acc1)) / scale  # d/dAcc1 of (Acc2 - Acc1^2) / scale
    return float(rss), grad_acc1 * (a1 - acc1) + grad_acc2 * (a2 - acc2)


def self_correction_metrics(correct, before: int = 0, after: int = 1) -> dict[str, Estimate]:
    """Acc@t1..tK, Delta(t_before, t_after), Delta i->c, Delta c->i, CL, CS and RSS, each with its
    standard error over problems (see the module docstring). ``correct``: (problems, turns) or
    (problems, samples, turns) of 0/1."""
    values, units = per_problem_values(correct, before, after)
    accuracy = correctness_table(correct).mean(axis=1)
    name = f"delta_t{before + 1}_t{after + 1}"
    estimates = {key: Estimate(values[key], standard_error(units[key])) for key in values}
    estimates[name] = Estimate(*mean_difference(accuracy[:, before], accuracy[:, after]))
    return estimates


def paired_comparison(reference, candidate, before: int = 0, after: int = 1) -> dict[str, Estimate]:
    """``candidate - reference`` for every metric, on the same problems in the same order, with the
    standard error of the per-problem difference of the linearised values (paired by item)."""
    ref_values, ref_units = per_problem_values(reference, before, after)
    cand_values, cand_units = per_problem_values(candidate, before, after)
    if correctness_table(reference).shape[0] != correctness_table(candidate).shape[0]:
        raise ValueError("reference and candidate must hold the same problems (the same number of rows)")
    return {
        key: Estimate(cand_values[key] - ref_values[key], mean_difference(ref_units[key], cand_units[key])[1])
        for key in ref_values
        if key in cand_values
    }


def flat_metrics(estimates: dict[str, Estimate]) -> dict[str, float]:
    """``{name: value, name_se: stderr}``: the form a trainer's metrics line records."""
    flat = {}
    for key, estimate in estimates.items():
        flat[key], flat[f"{key}_se"] = estimate.value, estimate.stderr
    return flat
