import numpy as np
import pytest

from selfgen.eval.forecasting import (
    arima_forecast,
    crps,
    ets_forecast,
    linear_predictive_score,
    mase,
    normalized_crps,
    nrmse,
    score_forecasts,
    seasonal_naive,
    weighted_quantile_loss,
)


def test_crps_of_one_sample_is_the_absolute_error():
    assert crps(np.array([[3.0, 1.0]]), np.array([1.0, 1.5])).tolist() == [2.0, 0.5]


def test_crps_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    samples, truth = rng.normal(size=(7, 5)), rng.normal(size=5)
    pairwise = np.abs(samples - truth).mean(0) - 0.5 * np.abs(samples[:, None] - samples[None]).mean((0, 1))
    np.testing.assert_allclose(crps(samples, truth), pairwise, rtol=1e-12)


def test_crps_of_a_standard_normal_at_its_mean():
    samples = np.random.default_rng(0).standard_normal((20000, 1))
    expected = (np.sqrt(2) - 1) / np.sqrt(np.pi)  # closed form CRPS(N(0, 1), 0)
    assert crps(samples, np.zeros(1))[0] == pytest.approx(expected, abs=0.01)


def test_normalized_metrics():
    truth = np.array([[2.0, 4.0]])
    perfect = truth[:, None, :].repeat(3, axis=1)
    assert normalized_crps(perfect, truth) == 0.0 and weighted_quantile_loss(perfect, truth) == 0.0
    shifted = perfect + 1.0  # every quantile over by 1: sum_q 2 (1 - q) * 2 / 6, averaged over q
    assert weighted_quantile_loss(shifted, truth) == pytest.approx(np.mean([2 * (1 - q) * 2 / 6 for q in np.arange(0.1, 1.0, 0.1)]))
    assert normalized_crps(shifted, truth) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="num_samples, horizon"):
        crps(np.zeros((3, 2)), np.zeros(3))


def test_point_metrics_and_seasonal_naive():
    history = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(seasonal_naive(history, 4, 3), [[1.0, 2.0, 4.0, 1.0]])
    # in-sample seasonal errors |1-1|, |2-2|, |4-3| -> scale 1/3
    assert mase(np.array([1.0, 2.0]), np.array([2.0, 2.0]), history, 3) == pytest.approx(1.5)
    assert nrmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="season_length=3"):
        seasonal_naive(history[:2], 4, 3)


def seasonal_trend(length: int, season: int = 12) -> np.ndarray:
    steps = np.arange(length)
    noise = np.random.default_rng(1).normal(scale=0.05, size=length)
    return 10 + 0.05 * steps + np.sin(2 * np.pi * steps / season) + noise


def test_ets_and_arima_beat_seasonal_naive_on_a_trend():
    series = seasonal_trend(132)
    history, truth = series[:120], series[120:]
    naive_error = np.abs(seasonal_naive(history, 12, 12)[0] - truth).mean()
    for forecaster in (ets_forecast, arima_forecast):
        samples = forecaster(history, 12, 12, num_samples=50)
        assert samples.shape == (50, 12)
        assert np.abs(np.median(samples, 0) - truth).mean() < naive_error


def test_score_forecasts_over_windows():
    series = seasonal_trend(60)
    windows = [(series[:36], series[36:48]), (series[:48], series[48:60])]
    naive = [seasonal_naive(h, 12, 12) for h, _ in windows]
    scores = score_forecasts(naive, windows, 12)
    assert set(scores) == {"crps", "normalized_crps", "wql", "mase", "nrmse"}
    assert scores["crps"] == pytest.approx(np.mean([np.abs(n[0] - t).mean() for n, (_, t) in zip(naive, windows)]))
    with pytest.raises(ValueError, match="1 forecasts for 2 windows"):
        score_forecasts(naive[:1], windows, 12)


def test_linear_predictive_score_prefers_realistic_training_windows():
    series = seasonal_trend(400)
    train = series[:300]
    windows = np.stack([train[s : s + 36] for s in range(0, 264)])
    standardize = lambda context: (float(context.mean()), float(context.std()))  # noqa: E731
    scaled = np.stack([(w - w[:24].mean()) / w[:24].std() for w in windows])
    test_windows = [(series[: 300 + 12 * k], series[300 + 12 * k : 312 + 12 * k]) for k in range(8)]
    real = linear_predictive_score(scaled, test_windows, 24, standardize)
    noise = linear_predictive_score(np.random.default_rng(0).normal(size=scaled.shape), test_windows, 24, standardize)
    assert real < 0.02 < noise
    with pytest.raises(ValueError, match="context_length \\+ horizon"):
        linear_predictive_score(scaled[:, :30], test_windows, 24, standardize)
