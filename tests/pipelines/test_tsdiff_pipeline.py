from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from selfgen import AutoPipeline, TSDiffPipeline
from selfgen.data.bundled import load_bundled
from selfgen.eval.forecasting import crps, seasonal_naive
from selfgen.models.tsdiff import TSDiffModel
from selfgen.pipelines.tsdiff import observation_loss, sample_quantile_levels
from selfgen.train.tsdiff import TSDiffConfig, build_scheduler

CO2_ASSET = Path(__file__).resolve().parents[2] / "assets" / "tsdiff-co2"


@pytest.fixture(scope="module")
def tiny_pipe() -> TSDiffPipeline:
    torch.manual_seed(0)
    model = TSDiffModel(
        context_length=16, prediction_length=8, lags_seq=[4], hidden_dim=16,
        num_residual_blocks=1, state_dim=8, step_embedding_dim=16,
    )
    pipe = TSDiffPipeline(model, build_scheduler(TSDiffConfig(num_train_timesteps=20)), guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def co2_pipe() -> TSDiffPipeline:
    if not CO2_ASSET.is_dir():
        pytest.skip("assets/tsdiff-co2 not built")
    pipe = TSDiffPipeline.from_pretrained(CO2_ASSET)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def context(batch: int = 2, length: int = 40) -> np.ndarray:
    steps = np.arange(length)
    return np.stack([10 + np.sin(2 * np.pi * (steps + shift) / 8) for shift in range(batch)])


def test_forecast_shapes_units_and_helpers(tiny_pipe):
    out = tiny_pipe.forecast(context(), prediction_length=8, num_samples=5, num_inference_steps=5,
                             generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (2, 5, 8) and np.isfinite(out.samples).all()
    assert out.mean.shape == (2, 8) and out.median.shape == (2, 8)
    assert out.quantiles([0.1, 0.9]).shape == (2, 2, 8)
    one = tiny_pipe.forecast(context()[0], num_samples=3, num_inference_steps=5, guidance="mse")
    assert one.samples.shape == (1, 3, 8)


def test_any_horizon_within_the_window(tiny_pipe):
    for horizon in (3, 8, 20):
        out = tiny_pipe.forecast(context(1, 40), prediction_length=horizon, num_samples=2, num_inference_steps=3)
        assert out.samples.shape == (1, 2, horizon)


def test_nan_context_values_are_ignored(tiny_pipe):
    values = context()
    values[0, -5:-2] = np.nan
    out = tiny_pipe.forecast(values, num_samples=3, num_inference_steps=3)
    assert np.isfinite(out.samples).all()


def test_bad_inputs_are_clear_errors(tiny_pipe):
    with pytest.raises(ValueError, match="no observed"):
        tiny_pipe.forecast(np.full(40, np.nan), num_samples=2)
    with pytest.raises(ValueError, match=r"1-D array or a \(batch, length\)"):
        tiny_pipe.forecast(np.zeros((2, 3, 40)), num_samples=2)
    with pytest.raises(ValueError, match="prediction_length must be between 1 and 23"):
        tiny_pipe.forecast(context(), prediction_length=24)
    with pytest.raises(ValueError, match="needs at least 20"):
        tiny_pipe.forecast(context(1, 19), prediction_length=8)
    with pytest.raises(ValueError, match="guidance must be one of"):
        tiny_pipe.forecast(context(), guidance="l1")
    with pytest.raises(ValueError, match="method must be one of"):
        tiny_pipe.refine(np.zeros((2, 3, 8)), context(), method="hmc")
    with pytest.raises(ValueError, match="2 series but context has 1"):
        tiny_pipe.refine(np.zeros((2, 3, 8)), context(1))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prediction_length": 0}, "prediction_length must be an integer >= 1, got 0"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer >= 1, got 0"),
        ({"num_inference_steps": -2}, "num_inference_steps must be an integer >= 1, got -2"),
    ],
)
def test_zero_horizon_or_steps_are_errors_not_the_default(tiny_pipe, options, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipe.forecast(context(), num_samples=2, **options)


def test_infinite_context_is_an_error_not_nan_samples(tiny_pipe):
    values = context()
    values[1, -3] = np.inf
    with pytest.raises(ValueError, match="context contains 1 infinite values"):
        tiny_pipe.forecast(values, num_samples=2, num_inference_steps=2)
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1, got 0"):
        tiny_pipe(num_samples=2, num_inference_steps=0)


def test_save_load_round_trip_reproduces_forecasts_exactly(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    loaded = AutoPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, TSDiffPipeline) and loaded.config.guidance_scale == 2.0
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(num_samples=4, num_inference_steps=6)
    first = tiny_pipe.forecast(context(), generator=torch.Generator().manual_seed(3), **kwargs).samples
    second = loaded.forecast(context(), generator=torch.Generator().manual_seed(3), **kwargs).samples
    torch.testing.assert_close(first, second)
    refined = [p.refine(first, context(), num_steps=2, generator=torch.Generator().manual_seed(1)).samples
               for p in (tiny_pipe, loaded)]
    torch.testing.assert_close(*refined)


def test_synthesis_shape(tiny_pipe):
    assert tiny_pipe(num_samples=3, num_inference_steps=4).samples.shape == (3, 24)


def test_quantile_loss_is_the_pinball_loss():
    levels = sample_quantile_levels(1, 3, torch.device("cpu"))  # 0.25, 0.5, 0.75
    target = torch.zeros(3, 1, 1)
    prediction = torch.full((3, 1, 1), -2.0)  # under-forecast by 2: loss q * 2
    observed = torch.ones(3, 1, 1, dtype=torch.bool)
    assert observation_loss(prediction, target, observed, "quantile", levels).item() == pytest.approx(3.0)
    assert observation_loss(prediction, target, observed, "mse", levels).item() == pytest.approx(12.0)
    observed[0] = False
    assert observation_loss(prediction, target, observed, "quantile", levels).item() == pytest.approx(2.5)


def test_guidance_conditions_on_the_context(co2_pipe):
    """Guided forecasts of co2's first test window beat unguided samples of the same model (measured:
    CRPS about 0.5x (quantile) and 0.7x (MSE) of unguided at 20 steps)."""
    bundled = load_bundled("co2")
    windows = bundled.test_windows()[:1]
    histories = np.stack([h[-co2_pipe.required_context_length(26):] for h, _ in windows])
    truth = np.stack([t for _, t in windows])
    scores = {}
    for name, guidance, scale in (("unguided", "quantile", 0.0), ("quantile", "quantile", None), ("mse", "mse", None)):
        out = co2_pipe.forecast(histories, 26, num_samples=8, guidance=guidance, guidance_scale=scale,
                                num_inference_steps=20, generator=torch.Generator().manual_seed(0))
        scores[name] = crps(out.samples, truth).mean()
    assert scores["quantile"] < 0.7 * scores["unguided"], scores
    assert scores["mse"] < 0.85 * scores["unguided"], scores


def test_ddim_guidance_conditions_on_the_context(co2_pipe):
    """The paper's DDIM sampler (guided noise ``eps - s sqrt(1 - abar_t) grad log p``) conditions too."""
    history, truth = load_bundled("co2").test_windows()[0]
    ddim = TSDiffPipeline(co2_pipe.model, DDIMScheduler.from_config(co2_pipe.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    scores = [
        crps(ddim.forecast(history, 26, num_samples=8, guidance_scale=scale, num_inference_steps=10,
                           generator=torch.Generator().manual_seed(0)).samples[0], truth).mean()
        for scale in (0.0, 4.0)
    ]
    assert scores[1] < 0.7 * scores[0], scores


def test_refinement_lowers_the_energy(co2_pipe):
    bundled = load_bundled("co2")
    history, _ = bundled.test_windows()[0]
    history = history[-co2_pipe.required_context_length(26):]
    base = np.repeat(seasonal_naive(history, 26, 52)[None], 2, axis=1)
    refined = co2_pipe.refine(base, history, method="ml", num_steps=6, step_size=0.05,
                              generator=torch.Generator().manual_seed(0)).samples
    assert not np.allclose(refined, base)

    def energy(samples):
        return co2_pipe.refinement_energy(samples, history, reference_samples=base,
                                          num_noise_draws=8, generator=torch.Generator().manual_seed(5))

    assert energy(refined) < energy(base)
    langevin = co2_pipe.refine(base, history, method="langevin", num_steps=6, step_size=0.05,
                               generator=torch.Generator().manual_seed(0)).samples
    assert energy(langevin) < energy(base)
