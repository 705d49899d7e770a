"""TSDiff (Kollovieh et al., 2023): train the unconditional time-series denoiser, then forecast,
refine and synthesise with it.

``selfgen train tsdiff --config configs/tsdiff_co2.yaml`` trains a :class:`TSDiffModel` on random
windows of a bundled series' training split (``dataset: co2``) or of the user's CSV/parquet file
(``--data file.csv``), with the simple DDPM loss and the paper's schedule (100 steps, betas linear
from 1e-4 to 0.1), and exports a :class:`TSDiffPipeline`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch import nn

from ..data.bundled import BUNDLED_SPECS, BundledSeries, load_bundled
from ..data.timeseries import TimeSeries, TimeSeriesWindowDataset, load_time_series
from ..data.validation import check_positive_int
from ..eval.forecasting import (
    baseline_forecasts,
    format_table,
    linear_predictive_score,
    save_fan_chart,
    score_forecasts,
    seasonal_naive,
)
from ..models.tsdiff import TSDiffModel, compute_scaling, lagged_window
from ..pipelines.tsdiff import TSDiffPipeline
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


@dataclass
class TSDiffConfig(TrainingConfig):
    dataset: str | None = "co2"  # a bundled series (selfgen.data.bundled); ignored when `data` is set
    freq: str | None = None  # pandas frequency of `data` ("D", "h", "MS"); None infers it per series
    fill_na: str = "interpolate"  # missing values and timestamp gaps in `data`: interpolate, ffill, zero or raise
    holdout: int = 0  # last points of every series left out of training; `generate --holdout N` scores them
    context_length: int = 104
    prediction_length: int = 26
    lags_seq: list[int] | None = None
    hidden_dim: int = 64
    num_residual_blocks: int = 3
    state_dim: int = 32
    step_embedding_dim: int = 128
    init_skip: bool = False
    scaling: str = "mean"
    num_train_timesteps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.1
    num_windows_per_epoch: int = 8192
    guidance_scale: float = 4.0  # quantile self-guidance scale saved with the pipeline
    mse_guidance_scale: float = 0.25
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 0.5
    train_batch_size: int = 64


class TSDiffObjective(Objective):
    """``|| eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2`` on scaled, lagged windows.

    A batch holds raw windows of ``max(lags) + context_length + prediction_length`` values; each is
    scaled by its context (the ``context_length`` points before the horizon), as at forecast time.
    """

    def __init__(self, noise_scheduler: DDPMScheduler, context_length: int, lags: list[int], scaling: str) -> None:
        self.noise_scheduler, self.context_length = noise_scheduler, context_length
        self.lags, self.scaling = lags, scaling

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        history = batch["values"].float()
        max_lag = max(self.lags, default=0)
        context = history[:, max_lag : max_lag + self.context_length]
        loc, scale = compute_scaling(context, torch.ones_like(context, dtype=torch.bool), self.scaling)
        clean = lagged_window((history - loc) / scale, self.lags, history.shape[1] - max_lag)
        noise = torch.randn_like(clean)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (clean.shape[0],), device=clean.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        return F.mse_loss(model(noisy, timesteps).sample.float(), noise), {}


def build_model(config: TSDiffConfig) -> TSDiffModel:
    return TSDiffModel(
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        lags_seq=config.lags_seq,
        hidden_dim=config.hidden_dim,
        num_residual_blocks=config.num_residual_blocks,
        state_dim=config.state_dim,
        step_embedding_dim=config.step_embedding_dim,
        init_skip=config.init_skip,
        scaling=config.scaling,
    )


def build_scheduler(config: TSDiffConfig) -> DDPMScheduler:
    """The paper's schedule: ``num_train_timesteps`` betas linear from ``beta_start`` to ``beta_end``."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule="linear",
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        clip_sample=False,
    )


def training_series(config: TSDiffConfig) -> list[TimeSeries]:
    """The user's file or the bundled series' training split (its test windows held out), each series
    without its last ``config.holdout`` points: those are never trained on, nor used to scale a window."""
    check_positive_int(config.holdout, "holdout", minimum=0)
    if config.data:
        series = load_time_series(config.data, freq=config.freq, fill_na=config.fill_na)
    elif config.dataset not in BUNDLED_SPECS:
        raise ValueError(f"dataset must be one of {sorted(BUNDLED_SPECS)} (or pass data: FILE), got {config.dataset!r}")
    else:
        series = [load_bundled(config.dataset).train_series]
    return [_without_holdout(item, config.holdout) for item in series]


def _without_holdout(series: TimeSeries, holdout: int) -> TimeSeries:
    if holdout == 0:
        return series
    if holdout >= len(series):
        raise ValueError(f"holdout={holdout} leaves nothing of series {series.item_id!r} ({len(series)} points)")
    return TimeSeries(series.item_id, series.start, series.freq, series.values[:-holdout])


TRAINING_DATA_FILE = "training_data.json"  # written beside the exported pipeline: what it was trained on


def _training_record(config: TSDiffConfig) -> dict:
    data = str(Path(config.data).resolve()) if config.data else None
    return {"data": data, "dataset": None if data else config.dataset, "holdout": config.holdout}


def train(config: TSDiffConfig) -> TrainResult:
    set_seed(config.seed)
    if config.pretrained:
        pretrained = TSDiffPipeline.from_pretrained(config.pretrained)
        model, noise_scheduler = pretrained.model, DDPMScheduler.from_config(pretrained.scheduler.config)
    else:
        model, noise_scheduler = build_model(config), build_scheduler(config)
    lags = model.lags
    window_length = max(lags, default=0) + model.window_length
    dataset = TimeSeriesWindowDataset(
        training_series(config), window_length, num_windows_per_epoch=config.num_windows_per_epoch, seed=config.seed
    )

    def export(trained: TSDiffModel, directory: Path) -> None:
        TSDiffPipeline(
            trained, noise_scheduler, guidance_scale=config.guidance_scale, mse_guidance_scale=config.mse_guidance_scale
        ).save_pretrained(directory)
        (Path(directory) / TRAINING_DATA_FILE).write_text(json.dumps(_training_record(config), indent=2))

    objective = TSDiffObjective(noise_scheduler, model.config.context_length, lags, model.config.scaling)
    return Trainer(model, objective, dataset, config, export_fn=export).train()


# --------------------------------------------------------------------------- generate / evaluate / demo


def _load_pipeline(model_path: str) -> TSDiffPipeline:
    return TSDiffPipeline.from_pretrained(model_path)


def _check_never_trained_on(model_path: str, csv: str, holdout: int) -> None:
    """Refuse to score the last ``holdout`` points of ``csv`` when the model's training record says it
    trained on some of them (same file, fewer points held out)."""
    record_path = Path(model_path) / TRAINING_DATA_FILE
    if not record_path.is_file():
        return  # not trained by `selfgen train tsdiff` (or before the record existed): nothing to compare
    record = json.loads(record_path.read_text())
    if record.get("data") == str(Path(csv).resolve()) and record.get("holdout", 0) < holdout:
        raise ValueError(
            f"--holdout {holdout}: the model at {model_path} was trained on {csv} with holdout={record.get('holdout', 0)}, "
            f"so it has seen some of the points to score; retrain with --holdout {holdout} (or more)"
        )


def _forecast_inputs(
    csv: str | None, dataset: str | None, holdout: int, freq: str | None, fill_na: str
) -> tuple[list[TimeSeries], list[np.ndarray], list[np.ndarray | None]]:
    """``(series, contexts, truths)``: the user's file (its last ``holdout`` points held out as the
    truth when ``holdout > 0``) or a bundled series' last test window."""
    if csv is not None:
        series = load_time_series(csv, freq=freq, fill_na=fill_na)
        too_short = [s.item_id for s in series if len(s) <= holdout]
        if too_short:
            raise ValueError(f"--holdout {holdout} leaves nothing of series {too_short} in {csv}")
        contexts = [s.values[: len(s) - holdout] for s in series]
        truths = [s.values[len(s) - holdout :] if holdout else None for s in series]
        return series, contexts, truths
    bundled = load_bundled(dataset or "co2")
    history, truth = bundled.test_windows()[-1]
    return [bundled.series], [history], [truth[:prediction_length]]


def generate(
    model_path: str,
    output_dir: Path,
    csv: str | None = None,
    dataset: str | None = None,
    prediction_length: int | None = None,
    num_samples: int = 100,
    guidance: str = "quantile",
    guidance_scale: float | None = None,
    holdout: int = 0,
    season_length: int = 1,
    freq: str | None = None,
    fill_na: str = "interpolate",
    seed: int = 0,
) -> dict:
    """Forecast every series of ``csv`` (or the bundled ``dataset``'s last test window): writes
    ``samples.csv`` (``item_id, timestamp, sample, value``) and a fan chart ``fan_<item>.png`` each.

    With ``holdout=N`` the last ``N`` points of every series of ``csv`` are cut off, forecast from the
    rest (``prediction_length`` defaults to ``N``) and scored (CRPS, MASE with ``season_length``, ...);
    a model whose training record shows it trained on those points is refused. Train with
    ``selfgen train tsdiff --data FILE --holdout N`` so that it never sees them."""
    check_positive_int(holdout, "holdout", minimum=0)
    pipe = _load_pipeline(model_path)
    if csv is not None and holdout:
        _check_never_trained_on(model_path, csv, holdout)
        if prediction_length not in (None, holdout):
            raise ValueError(f"prediction_length={prediction_length} but --holdout {holdout}: with a holdout the horizon is N")
        prediction_length = holdout
    if prediction_length is None:
        prediction_length = pipe.model.config.prediction_length
    series, contexts, truths = _forecast_inputs(csv, dataset, holdout if csv is not None else 0, freq, fill_na)
    needed = pipe.required_context_length(prediction_length)
    short = [s.item_id for s, c in zip(series, contexts) if len(c) < needed]
    if short:
        raise ValueError(f"series {short} have fewer than the {needed} context points this model needs")
    out = pipe.forecast(
        np.stack([c[-needed:] for c in contexts]), prediction_length, num_samples, guidance, guidance_scale,
        generator=torch.Generator().manual_seed(seed),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    frames, charts = [], []
    for item, context, truth, samples in zip(series, contexts, truths, out.samples):
        stamps = pd.date_range(item.start, periods=len(context) + prediction_length, freq=item.freq)[len(context) :]
        frames.append(pd.DataFrame({
            "item_id": item.item_id,
            "timestamp": np.tile(stamps, num_samples),
            "sample": np.repeat(np.arange(num_samples), prediction_length),
            "value": samples.reshape(-1),
        }))
        title = f"{item.item_id}: {num_samples} forecasts ({guidance} guidance)" + (" vs held-out truth" if truth is not None else "")
        chart = save_fan_chart(
            context, samples, output_dir / f"fan_{item.item_id}.png", truth, title=title, xlabel=f"step ({item.freq})"
        )
        charts.append(str(chart))
    pd.concat(frames).to_csv(output_dir / "samples.csv", index=False)
    result = {"samples_csv": str(output_dir / "samples.csv"), "fan_charts": charts, "samples": out.samples}
    if all(truth is not None for truth in truths):
        windows = list(zip(contexts, truths))
        result["metrics"] = score_forecasts(list(out.samples), windows, season_length)
    return result


def _scale_fn(kind: str):
    def scale(context: np.ndarray) -> tuple[float, float]:
        values = torch.as_tensor(context, dtype=torch.float32)[None]
        loc, scale = compute_scaling(values, ~values.isnan(), kind)
        return float(loc), float(scale)

    return scale


def _lps(
    pipe: TSDiffPipeline, bundled: BundledSeries, num_samples: int, num_inference_steps: int | None, seed: int
) -> dict[str, float]:
    """LPS of ``num_samples`` synthetic windows vs the real training windows (scaled the same way)."""
    model = pipe.model
    generator = torch.Generator().manual_seed(seed)
    synthetic = pipe(num_samples=num_samples, num_inference_steps=num_inference_steps, generator=generator).samples
    train = bundled.train_values
    starts = range(0, len(train) - model.window_length + 1)
    real = np.stack([train[s : s + model.window_length] for s in starts]).astype(np.float64)
    context = torch.as_tensor(real[:, : model.config.context_length])
    loc, scale = compute_scaling(context, torch.ones_like(context, dtype=torch.bool), model.config.scaling)
    real = (real - loc.numpy()) / scale.numpy()
    test = bundled.test_windows()
    scale_fn, context_length = _scale_fn(model.config.scaling), model.config.context_length
    return {
        "lps_synthetic": linear_predictive_score(synthetic, test, context_length, scale_fn),
        "lps_real": linear_predictive_score(real, test, context_length, scale_fn),
    }


def evaluate(
    model_path: str,
    output_dir: Path,
    dataset: str = "co2",
    num_samples: int = 50,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = 50,
    refine_steps: int = 20,
    lps_samples: int = 200,
    seed: int = 0,
) -> dict:
    """Every forecaster on the rolling test windows of the bundled ``dataset``: TSDiff with quantile and
    MSE guidance, TSDiff refinement (Langevin and ML) of seasonal naive, and the baselines; plus the LPS
    of synthetic vs real training windows. Writes ``metrics.json``, ``table.md`` and a fan chart."""
    pipe = _load_pipeline(model_path)
    bundled = load_bundled(dataset)
    windows, horizon, season = bundled.test_windows(), bundled.prediction_length, bundled.season_length
    contexts = np.stack([history[-pipe.required_context_length(horizon) :] for history, _ in windows])
    forecasts = baseline_forecasts(windows, season, num_samples, seed)
    for guidance in ("quantile", "mse"):
        generator = torch.Generator().manual_seed(seed)
        out = pipe.forecast(contexts, horizon, num_samples, guidance, guidance_scale, num_inference_steps, generator)
        forecasts[f"tsdiff_{guidance}"] = list(out.samples)
    naive = np.stack([np.repeat(f, num_samples, axis=0) for f in forecasts["seasonal_naive"]])
    for method in ("langevin", "ml"):
        generator = torch.Generator().manual_seed(seed)
        refined = pipe.refine(naive, contexts, method=method, num_steps=refine_steps, generator=generator)
        forecasts[f"seasonal_naive+refine_{method}"] = list(refined.samples)
    results = {name: score_forecasts(samples, windows, season) for name, samples in forecasts.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    history, truth = windows[-1]
    save_fan_chart(
        history, forecasts["tsdiff_quantile"][-1], output_dir / "fan.png", truth, xlabel=f"step ({bundled.series.freq})",
        title=f"TSDiff, quantile self-guidance: {dataset}'s last test window vs truth",
    )
    metrics = {"dataset": dataset, "forecasters": results}
    if lps_samples:
        metrics.update(_lps(pipe, bundled, lps_samples, num_inference_steps, seed))
    (output_dir / "table.md").write_text(format_table(results) + "\n")
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """Quantile-guided forecasts of co2's last two test windows (32 samples, 25 DDPM steps), scored
    against seasonal naive, with a fan chart."""
    pipe = _load_pipeline(str(asset_dir))
    bundled = load_bundled("co2")
    windows = bundled.test_windows()[-2:]
    horizon, season = bundled.prediction_length, bundled.season_length
    contexts = np.stack([history[-pipe.required_context_length(horizon) :] for history, _ in windows])
    generator = torch.Generator().manual_seed(0)
    out = pipe.forecast(contexts, horizon, 32, "quantile", num_inference_steps=25, generator=generator)
    naive = [seasonal_naive(history, horizon, season) for history, _ in windows]
    output_dir.mkdir(parents=True, exist_ok=True)
    save_fan_chart(
        windows[-1][0], out.samples[-1], output_dir / "fan.png", windows[-1][1], xlabel="week", ylabel="CO2 (ppm)",
        title="TSDiff, quantile self-guidance: co2's last test window (32 samples, 25 steps) vs truth",
    )
    metrics = {
        "tsdiff_quantile": score_forecasts(list(out.samples), windows, season),
        "seasonal_naive": score_forecasts(naive, windows, season),
    }
    return metrics


METHOD = Method(
    name="tsdiff",
    summary="TSDiff: unconditional time-series diffusion that forecasts by self-guidance, refines and synthesises",
    config_class=TSDiffConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="tsdiff-co2",
)
