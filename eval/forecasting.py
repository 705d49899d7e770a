"""Judges of probabilistic forecasts, independent of the model under test, and classical baselines.

Metrics (``samples``: ``(..., num_samples, horizon)``, ``truth``: ``(..., horizon)``):

* :func:`crps` — sample CRPS per point, ``E|X - y| - 1/2 E|X - X'|`` (exact for the empirical
  distribution of the samples); :func:`normalized_crps` divides its sum by ``sum |y|``.
* :func:`weighted_quantile_loss` — GluonTS' ``mean_wQuantileLoss``: for ``q`` in 0.1..0.9,
  ``2 sum |(y - yhat_q)(1{y <= yhat_q} - q)| / sum |y|``, averaged over ``q`` (the paper's CRPS).
* :func:`mase` — ``mean |y - yhat| / mean |h_t - h_{t-m}|`` over the history ``h`` (season ``m``).
* :func:`nrmse` — ``sqrt(mean (y - yhat)^2) / mean |y|``.

Baselines: :func:`seasonal_naive`, :func:`ets_forecast` and :func:`arima_forecast` (statsmodels;
Gaussian samples from the model's forecast mean and variance). :func:`linear_predictive_score` is the
paper's LPS: a ridge forecaster fitted on synthetic windows, scored (NRMSE) on real test windows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import pyplot, save_figure

QUANTILE_LEVELS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1))


def _check_samples(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples, truth = np.asarray(samples, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if samples.ndim < 2 or samples.shape[:-2] + samples.shape[-1:] != truth.shape:
        raise ValueError(
            f"samples must be (..., num_samples, horizon) matching truth (..., horizon); got samples "
            f"{samples.shape} and truth {truth.shape}"
        )
    return samples, truth


def crps(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CRPS of the samples' empirical distribution at each point, ``(..., horizon)``."""
    samples, truth = _check_samples(samples, truth)
    count = samples.shape[-2]
    ordered = np.sort(samples, axis=-2)
    absolute = np.abs(ordered - truth[..., None, :]).mean(axis=-2)
    weights = (2 * np.arange(1, count + 1) - count - 1)[:, None]
    spread = (weights * ordered).sum(axis=-2) / count**2  # = 1/2 E|X - X'|
    return absolute - spread


def normalized_crps(samples: np.ndarray, truth: np.ndarray) -> float:
    """``sum CRPS / sum |y|`` over all series and points."""
    return float(crps(samples, truth).sum() / np.abs(truth).sum())


def weighted_quantile_loss(
    samples: np.ndarray, truth: np.ndarray, quantiles: Sequence[float] = QUANTILE_LEVELS
) -> float:
    """GluonTS' mean weighted quantile loss of the sample quantiles."""
    samples, truth = _check_samples(samples, truth)
    losses = []
    for level in quantiles:
        forecast = np.quantile(samples, level, axis=-2)
        losses.append(2 * np.abs((truth - forecast) * ((truth <= forecast) - level)).sum() / np.abs(truth).sum())
    return float(np.mean(losses))


def mase(point_forecast: np.ndarray, truth: np.ndarray, history: np.ndarray, season_length: int = 1) -> float:
    """Mean absolute scaled error of one series' point forecast against the seasonal-naive in-sample error."""
    history = np.asarray(history, dtype=np.float64)
    history = history[~np.isnan(history)]
    if len(history) <= season_length:
        raise ValueError(f"history must be longer than season_length={season_length}, got {len(history)} points")
    scale = np.abs(history[season_length:] - history[:-season_length]).mean()
    return float(np.abs(np.asarray(truth) - np.asarray(point_forecast)).mean() / max(scale, 1e-12))


def nrmse(point_forecast: np.ndarray, truth: np.ndarray) -> float:
    truth = np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(((truth - np.asarray(point_forecast)) ** 2).mean()) / np.abs(truth).mean())


# --------------------------------------------------------------------------- baselines


def seasonal_naive(history: np.ndarray, prediction_length: int, season_length: int) -> np.ndarray:
    """``yhat_{T+k} = y_{T+k-m}`` (repeating the last season), as one sample ``(1, prediction_length)``."""
    history = np.asarray(history, dtype=np.float64)
    if len(history) < season_length:
        raise ValueError(f"history has {len(history)} points; seasonal naive needs season_length={season_length}")
    last_season = history[-season_length:]
    return np.resize(last_season, prediction_length)[None]


def _gaussian_samples(mean: np.ndarray, variance: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    std = np.sqrt(np.maximum(np.asarray(variance, dtype=np.float64), 0.0))
    return np.asarray(mean)[None] + std[None] * rng.standard_normal((num_samples, len(std)))


def ets_forecast(
    history: np.ndarray, prediction_length: int, season_length: int, num_samples: int = 100, seed: int = 0
) -> np.ndarray:
    """Additive-error ETS (damped additive trend, additive season when ``season_length > 1``), fitted
    on the last ``max(10 m, 100)`` points; Gaussian samples ``(num_samples, prediction_length)``."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    series = pd.Series(np.asarray(history, dtype=np.float64)[-max(10 * season_length, 100) :])
    seasonal = "add" if season_length > 1 and len(series) >= 2 * season_length else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ETSModel(
            series, error="add", trend="add", damped_trend=True, seasonal=seasonal,
            seasonal_periods=season_length if seasonal else None,
        ).fit(disp=False)
        prediction = model.get_prediction(start=len(series), end=len(series) + prediction_length - 1)
    mean, variance = np.asarray(prediction.predicted_mean), np.asarray(prediction.var_pred_mean)
    return _gaussian_samples(mean, variance, num_samples, seed)


def arima_forecast(
    history: np.ndarray, prediction_length: int, season_length: int, num_samples: int = 100, seed: int = 0
) -> np.ndarray:
    """SARIMA(1,1,1)(0,1,1)_m (ARIMA(1,1,1) when ``m = 1``) fitted on the last ``max(6 m, 100)`` points;
    Gaussian samples ``(num_samples, prediction_length)``."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    series = np.asarray(history, dtype=np.float64)[-max(6 * season_length, 100) :]
    seasonal_order = (0, 1, 1, season_length) if season_length > 1 else (0, 0, 0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = SARIMAX(series, order=(1, 1, 1), seasonal_order=seasonal_order).fit(disp=False)
        forecast = fitted.get_forecast(prediction_length)
    return _gaussian_samples(forecast.predicted_mean, forecast.var_pred_mean, num_samples, seed)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "seasonal_naive": lambda history, horizon, season, num_samples, seed: seasonal_naive(history, horizon, season),
    "ets": ets_forecast,
    "arima": arima_forecast,
}


# --------------------------------------------------------------------------- scoring


def score_forecasts(
    forecasts: Sequence[np.ndarray], windows: Sequence[tuple[np.ndarray, np.ndarray]], season_length: int
) -> dict[str, float]:
    """Metrics of one forecaster over rolling ``windows`` of ``(history, truth)``; ``forecasts[k]`` is
    ``(num_samples, horizon)`` for window ``k``. CRPS terms pool all windows; MASE and NRMSE average them."""
    if len(forecasts) != len(windows):
        raise ValueError(f"got {len(forecasts)} forecasts for {len(windows)} windows")
    samples = np.stack([np.asarray(f, dtype=np.float64) for f in _same_sample_count(forecasts)])
    truth = np.stack([t for _, t in windows]).astype(np.float64)
    medians = np.median(samples, axis=1)
    return {
        "crps": float(crps(samples, truth).mean()),
        "normalized_crps": normalized_crps(samples, truth),
        "wql": weighted_quantile_loss(samples, truth),
        "mase": float(np.mean([mase(m, t, h, season_length) for m, (h, t) in zip(medians, windows)])),
        "nrmse": float(np.mean([nrmse(m, t) for m, (_, t) in zip(medians, windows)])),
    }


def _same_sample_count(forecasts: Sequence[np.ndarray]) -> list[np.ndarray]:
    count = max(np.asarray(f).shape[0] for f in forecasts)
    return [np.resize(np.asarray(f), (count, np.asarray(f).shape[-1])) for f in forecasts]


def baseline_forecasts(
    windows: Sequence[tuple[np.ndarray, np.ndarray]], season_length: int, num_samples: int = 100, seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """Every :data:`BASELINES` forecaster on every window."""
    return {
        name: [baseline(history, len(truth), season_length, num_samples, seed) for history, truth in windows]
        for name, baseline in BASELINES.items()
    }


def format_table(
    results: dict[str, dict[str, float]], keys: Sequence[str] = ("normalized_crps", "wql", "mase", "nrmse")
) -> str:
    """A markdown table: one row per forecaster."""
    lines = ["| forecaster | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[key]:.4g}" for key in keys) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- LPS


def linear_predictive_score(
    train_windows: np.ndarray,
    test_windows: Sequence[tuple[np.ndarray, np.ndarray]],
    context_length: int,
    scale_fn: Callable[[np.ndarray], tuple[float, float]],
    alpha: float = 1.0,
) -> float:
    """The paper's linear predictive score: NRMSE on ``test_windows`` of a ridge regression from
    ``context_length`` scaled values to the next ``horizon``, fitted on ``train_windows``
    ``(N, >= context_length + horizon)`` given in scaled units (synthetic samples, or real windows
    scaled the same way). Each test context is scaled by ``scale_fn(context) -> (loc, scale)`` and the
    forecast mapped back before scoring."""
    from sklearn.linear_model import Ridge

    horizon = len(test_windows[0][1])
    train_windows = np.asarray(train_windows, dtype=np.float64)
    if train_windows.ndim != 2 or train_windows.shape[1] < context_length + horizon:
        raise ValueError(
            f"train_windows must be (N, >= {context_length + horizon}) = context_length + horizon, "
            f"got {train_windows.shape}"
        )
    windows = train_windows[:, -(context_length + horizon) :]
    regression = Ridge(alpha=alpha).fit(windows[:, :context_length], windows[:, context_length:])
    scores = []
    for history, truth in test_windows:
        context = np.asarray(history, dtype=np.float64)[-context_length:]
        loc, scale = scale_fn(context)
        forecast = regression.predict(((context - loc) / scale)[None])[0] * scale + loc
        scores.append(nrmse(forecast, truth))
    return float(np.mean(scores))


# --------------------------------------------------------------------------- pictures


def save_fan_chart(
    history: np.ndarray,
    samples: np.ndarray,
    path: str | Path,
    truth: np.ndarray | None = None,
    num_history_points: int = 104,
    title: str | None = None,
    xlabel: str = "time step",
    ylabel: str = "value",
) -> Path:
    """Fan chart of one forecast: the last ``num_history_points`` of the context, the median and the 50%
    and 90% bands of ``samples`` ``(num_samples, horizon)``, and the truth when known; axes labelled
    ``xlabel`` (the series' step) and ``ylabel`` (its unit)."""
    history = np.asarray(history)[-num_history_points:]
    samples = np.asarray(samples)
    steps = np.arange(len(history), len(history) + samples.shape[-1])
    low90, low50, median, high50, high90 = np.quantile(samples, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    figure, axis = pyplot().subplots(figsize=(8, 3))
    axis.plot(np.arange(len(history)), history, color="black", linewidth=1, label="context")
    axis.fill_between(steps, low90, high90, color="tab:blue", alpha=0.2, label="90%")
    axis.fill_between(steps, low50, high50, color="tab:blue", alpha=0.4, label="50%")
    axis.plot(steps, median, color="tab:blue", label="median")
    if truth is not None:
        axis.plot(steps, truth, color="tab:red", linewidth=1, label="truth")
    axis.legend(loc="upper left", fontsize=7)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    return save_figure(figure, path)
