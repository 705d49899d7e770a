"""TSDiff: one unconditional time-series diffusion model that predicts, refines and synthesises.

Kollovieh et al., 2023, "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for Probabilistic
Time Series Forecasting". All three uses run the same unconditional :class:`TSDiffModel`; users pass
raw values and the pipeline scales each window by its observed context (mean scaling by default).

**Predict** (:meth:`TSDiffPipeline.forecast`, observation self-guidance). The window ``x`` is the
context ``y_obs`` followed by the unknown horizon. The model's own one-step denoiser
``x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t)`` gives the likelihood

    log p(y_obs | x_t) = -sum_{i observed} l(x0_hat(x_t)_i, y_i) + const,

with ``l`` the squared error (Gaussian, ``guidance="mse"``) or the quantile loss
``max(q e, (q - 1) e)``, ``e = y - x0_hat`` (asymmetric Laplace, ``guidance="quantile"``; sample ``j`` of
``S`` uses ``q = j / (S + 1)``). Its gradient steers every reverse step with scale ``s``:

* DDPM: ``x_{t-1} ~ N(mu_theta(x_t, t) + s sigma_t^2 grad_{x_t} log p(y_obs | x_t), sigma_t^2 I)``;
* DDIM (and any other diffusers scheduler): ``eps_hat = eps_theta - s sqrt(1 - abar_t) grad_{x_t} log p(y_obs | x_t)``.

**Refine** (:meth:`TSDiffPipeline.refine`). The model's denoising loss is an energy,
``E(y) = E_eps || eps_theta(sqrt(abar_t) y + sqrt(1 - abar_t) eps, t) - eps ||^2 + lambda R(y, y_base)``
at a fixed step ``t``, with ``R`` the squared error or quantile loss to the base forecast (and the
context). ``method="ml"`` descends it, ``y <- y - eta grad E(y)``; ``method="langevin"`` samples
``exp(-E)`` with ``y <- y - eta grad E(y) + sqrt(2 eta) gamma xi``, ``xi ~ N(0, I)``.

**Synthesize** (``pipe(num_samples=...)``): plain reverse diffusion from noise, in scaled units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..data.validation import check_positive_int, series_to_array
from ..models.tsdiff import TSDiffModel, compute_scaling, lagged_window
from .pipeline_utils import SelfgenPipeline, check_output_type

GUIDANCES = ("quantile", "mse")
REFINE_METHODS = ("langevin", "ml")
OUTPUT_TYPES = ("np", "pt")


@dataclass
class TSDiffForecastOutput(BaseOutput):
    """``samples``: ``(batch, num_samples, prediction_length)`` in the data's own units."""

    samples: np.ndarray | torch.Tensor

    def quantiles(self, q: float | list[float]) -> np.ndarray:
        """Sample quantiles over the samples axis: ``(batch, prediction_length)`` or ``(len(q), batch, ...)``."""
        return np.quantile(np.asarray(self.samples), q, axis=1)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.samples).mean(axis=1)

    @property
    def median(self) -> np.ndarray:
        return self.quantiles(0.5)


@dataclass
class TSDiffSynthesisOutput(BaseOutput):
    """``samples``: unconditional windows ``(num_samples, window_length)`` in scaled units."""

    samples: np.ndarray | torch.Tensor


@dataclass
class _Window:
    """A batch of windows in the model's layout: scaled ``values`` (NaN -> 0), ``observed`` mask, and
    the per-row ``loc``/``scale`` that map channel 0 back to data units."""

    values: torch.Tensor
    observed: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def repeat(self, times: int) -> _Window:
        return _Window(*(tensor.repeat_interleave(times, dim=0) for tensor in vars(self).values()))

    def unscale(self, x: torch.Tensor, prediction_length: int) -> torch.Tensor:
        return x[:, -prediction_length:, 0] * self.scale + self.loc


def sample_quantile_levels(batch_size: int, num_samples: int, device: torch.device) -> torch.Tensor:
    """``q = j / (S + 1)`` for sample ``j = 1..S`` of every series, as ``(batch * S, 1, 1)``."""
    levels = torch.arange(1, num_samples + 1, device=device, dtype=torch.float32) / (num_samples + 1)
    return levels.repeat(batch_size)[:, None, None]


def observation_loss(
    prediction: torch.Tensor, target: torch.Tensor, observed: torch.Tensor, kind: str, levels: torch.Tensor
) -> torch.Tensor:
    """``sum_{observed} l(prediction, target)``: squared error (``"mse"``) or quantile loss at ``levels``."""
    if kind == "mse":
        loss = (prediction - target) ** 2
    elif kind == "quantile":
        error = target - prediction
        loss = torch.maximum(levels * error, (levels - 1) * error)
    else:
        raise ValueError(f"guidance/regularizer must be one of {GUIDANCES}, got {kind!r}")
    return loss[observed].sum()


class TSDiffPipeline(SelfgenPipeline):
    """Forecast, refine and synthesise with an unconditional :class:`TSDiffModel`.

    Example::

        pipe = TSDiffPipeline.from_pretrained("assets/tsdiff-co2")
        out = pipe.forecast(context, prediction_length=26, num_samples=100, guidance="quantile",
                            generator=torch.Generator().manual_seed(0))
        out.samples, out.quantiles([0.05, 0.5, 0.95]), out.mean
        refined = pipe.refine(out.samples, context, method="langevin")

    Args:
        model: the denoiser.
        scheduler: a ``DDPMScheduler`` (the paper's sampler) or any diffusers scheduler with the same
            training configuration (``DDIMScheduler`` for the paper's DDIM sampler).
        guidance_scale: default ``s`` of :meth:`forecast` with quantile guidance.
        mse_guidance_scale: default ``s`` with MSE guidance (its gradient grows with the error, so it
            needs a smaller scale than the quantile loss, whose gradient is bounded).
    """

    model_cpu_offload_seq = "model"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        model: TSDiffModel,
        scheduler: SchedulerMixin,
        guidance_scale: float = 4.0,
        mse_guidance_scale: float = 0.25,
    ) -> None:
        super().__init__()
        self.register_modules(model=model, scheduler=scheduler)
        self.register_to_config(guidance_scale=guidance_scale, mse_guidance_scale=mse_guidance_scale)

    # ----------------------------------------------------------------- inputs

    def required_context_length(self, prediction_length: int) -> int:
        """Points of history a forecast of ``prediction_length`` needs: the observed part of the window
        plus the largest lag."""
        return max(self.model.lags, default=0) + self.model.window_length - prediction_length

    def _check_prediction_length(self, prediction_length: int | None) -> int:
        window = self.model.window_length
        if prediction_length is None:
            prediction_length = self.model.config.prediction_length
        check_positive_int(prediction_length, "prediction_length")
        if not 1 <= prediction_length < window:
            raise ValueError(
                f"prediction_length must be between 1 and {window - 1} (the model's window is "
                f"{window} steps and needs at least one observed step), got {prediction_length}"
            )
        return prediction_length

    def _num_steps(self, num_inference_steps: int | None) -> int:
        """``num_inference_steps``, or all training steps when ``None`` (the paper); ``0`` is an error."""
        if num_inference_steps is None:
            return self.scheduler.config.num_train_timesteps
        return check_positive_int(num_inference_steps, "num_inference_steps")

    def _context_array(self, context: np.ndarray | torch.Tensor | list, prediction_length: int) -> np.ndarray:
        """``context`` as a float ``(batch, needed)`` array of its last ``needed`` points (NaN = missing)."""
        array = series_to_array(context, "context")
        needed = self.required_context_length(prediction_length)
        if array.shape[1] < needed:
            raise ValueError(
                f"context has {array.shape[1]} points; prediction_length={prediction_length} needs at least "
                f"{needed} (window {self.model.window_length} - horizon {prediction_length} + largest lag "
                f"{max(self.model.lags, default=0)})"
            )
        array = array[:, -needed:]
        observed_part = array[:, needed - (self.model.window_length - prediction_length) :]
        empty = np.isnan(observed_part).all(axis=1)
        if empty.any():
            raise ValueError(
                f"context row(s) {np.flatnonzero(empty).tolist()} have no observed (non-NaN) value in their last "
                f"{observed_part.shape[1]} points; at least one is needed to scale the window"
            )
        return array

    def _window(self, history: np.ndarray, observed_length: int) -> _Window:
        """Scale ``history`` ``(batch, max_lag + window)`` by its last ``observed_length`` context points
        before the NaN horizon and lay it out as the model's input."""
        device = self._execution_device
        history = torch.as_tensor(history, dtype=torch.float32, device=device)
        max_lag = max(self.model.lags, default=0)
        context = history[:, max_lag : max_lag + observed_length]
        loc, scale = compute_scaling(context, ~context.isnan(), self.model.config.scaling)
        windows = lagged_window((history - loc) / scale, self.model.lags, self.model.window_length)
        observed = ~windows.isnan()
        return _Window(windows.nan_to_num(0.0), observed, loc, scale)

    def _forecast_window(self, context: np.ndarray, prediction_length: int) -> _Window:
        horizon = np.full((context.shape[0], prediction_length), np.nan)
        return self._window(np.concatenate([context, horizon], axis=1), self.model.window_length - prediction_length)

    # ----------------------------------------------------------------- predict

    def _guidance_score(
        self, x: torch.Tensor, timestep: torch.Tensor, window: _Window, guidance: str, levels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_theta(x_t, t), grad_{x_t} log p(y_obs | x_t))`` with ``log p = -sum l(x0_hat(x_t), y_obs)``."""
        alpha_bar = self.scheduler.alphas_cumprod[int(timestep)].to(x.device)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            noise = self.model(x, timestep).sample.float()
            denoised = (x - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()
            energy = observation_loss(denoised, window.values, window.observed, guidance, levels)
            (gradient,) = torch.autograd.grad(energy, x)
        return noise.detach(), -gradient

    def _posterior_variance(self, timestep: torch.Tensor) -> torch.Tensor:
        """``sigma_t^2 = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)`` of a DDPM step."""
        alphas_cumprod = self.scheduler.alphas_cumprod
        previous = int(self.scheduler.previous_timestep(timestep))
        alpha_bar, alpha_bar_prev = alphas_cumprod[int(timestep)], alphas_cumprod[previous] if previous >= 0 else 1.0
        return (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)

    def _guided_step(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        window: _Window,
        guidance: str,
        guidance_scale: float,
        levels: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        noise, score = self._guidance_score(x, timestep, window, guidance, levels)
        if isinstance(self.scheduler, DDPMScheduler):
            previous = self.scheduler.step(noise, timestep, x, generator=generator).prev_sample
            return previous + guidance_scale * self._posterior_variance(timestep).to(x.device) * score
        alpha_bar = self.scheduler.alphas_cumprod[int(timestep)].to(x.device)
        guided_noise = noise - guidance_scale * (1 - alpha_bar).sqrt() * score
        return self.scheduler.step(guided_noise, timestep, x, generator=generator).prev_sample

    @torch.no_grad()
    def forecast(
        self,
        context: np.ndarray | torch.Tensor | list,
        prediction_length: int | None = None,
        num_samples: int = 100,
        guidance: str = "quantile",
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> TSDiffForecastOutput | tuple:
        """Probabilistic forecasts of the ``prediction_length`` points after each row of ``context``.

        Args:
            context: raw history, 1-D or ``(batch, length)``; NaNs are missing values that guidance
                ignores. Needs at least :meth:`required_context_length` points.
            prediction_length: horizon, up to the model's window minus one (default: the trained one).
            num_samples: forecast paths per series.
            guidance: ``"quantile"`` (asymmetric Laplace) or ``"mse"`` (Gaussian).
            guidance_scale: ``s`` (default: the pipeline's ``guidance_scale`` or ``mse_guidance_scale``);
                0 is unguided.
            num_inference_steps: scheduler steps (default: all training steps, as in the paper).
            generator: for reproducible samples.
            output_type: ``"np"`` or ``"pt"``.
        """
        check_output_type(output_type, OUTPUT_TYPES)
        if guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {GUIDANCES}, got {guidance!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        prediction_length = self._check_prediction_length(prediction_length)
        if guidance_scale is None:
            guidance_scale = self.config.guidance_scale if guidance == "quantile" else self.config.mse_guidance_scale
        context = self._context_array(context, prediction_length)
        batch_size = context.shape[0]
        window = self._forecast_window(context, prediction_length).repeat(num_samples)
        levels = sample_quantile_levels(batch_size, num_samples, window.values.device)

        x = randn_tensor(tuple(window.values.shape), generator=generator, device=self._execution_device)
        self.scheduler.set_timesteps(self._num_steps(num_inference_steps))
        for timestep in self.progress_bar(self.scheduler.timesteps):
            x = self._guided_step(x, timestep, window, guidance, guidance_scale, levels, generator)

        samples = window.unscale(x, prediction_length).reshape(batch_size, num_samples, prediction_length)
        samples = samples.cpu().numpy() if output_type == "np" else samples
        self.maybe_free_model_hooks()
        return TSDiffForecastOutput(samples=samples) if return_dict else (samples,)

    # ----------------------------------------------------------------- refine

    def _refinement_windows(
        self, base_samples: np.ndarray | torch.Tensor, context: np.ndarray | torch.Tensor | list
    ) -> tuple[_Window, tuple[int, int, int]]:
        """Each base sample appended to its context as one window; samples sorted per step so that
        sample ``j`` matches quantile level ``j / (S + 1)``. Returns the window and
        ``(batch, num_samples, prediction_length)``."""
        base = np.asarray(base_samples.cpu() if isinstance(base_samples, torch.Tensor) else base_samples, np.float64)
        if base.ndim == 2:
            base = base[None]
        if base.ndim != 3:
            raise ValueError(f"base_samples must be (batch, num_samples, prediction_length), got shape {base.shape}")
        batch_size, num_samples, prediction_length = base.shape
        prediction_length = self._check_prediction_length(prediction_length)
        context = self._context_array(context, prediction_length)
        if context.shape[0] != batch_size:
            raise ValueError(f"base_samples has {batch_size} series but context has {context.shape[0]} rows")
        if np.isnan(base).any():
            raise ValueError("base_samples must not contain NaN")
        sorted_base = np.sort(base, axis=1).reshape(-1, prediction_length)
        history = np.concatenate([context.repeat(num_samples, axis=0), sorted_base], axis=1)
        return self._window(history, self.model.window_length - prediction_length), base.shape

    def _refinement_energy(
        self,
        y: torch.Tensor,
        window: _Window,
        levels: torch.Tensor,
        regularizer: str,
        regularization_weight: float,
        diffusion_step: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``sum ||eps_theta(sqrt(abar_t) y + sqrt(1 - abar_t) eps, t) - eps||^2 + lambda R(y, y_base)``."""
        alpha_bar = self.scheduler.alphas_cumprod[diffusion_step].to(y.device)
        noise = randn_tensor(tuple(y.shape), generator=generator, device=y.device)
        noisy = alpha_bar.sqrt() * y + (1 - alpha_bar).sqrt() * noise
        timestep = torch.tensor(diffusion_step, device=y.device)
        denoising = F.mse_loss(self.model(noisy, timestep).sample.float(), noise, reduction="sum")
        prior = observation_loss(y, window.values, window.observed, regularizer, levels)
        return denoising + regularization_weight * prior

    def _check_refine_arguments(self, method: str, regularizer: str, diffusion_step: int | None, num_steps: int) -> int:
        """Validate refine's arguments; returns the diffusion step (default: the paper's 20 of 100)."""
        if method not in REFINE_METHODS:
            raise ValueError(f"method must be one of {REFINE_METHODS}, got {method!r}")
        if regularizer not in GUIDANCES:
            raise ValueError(f"regularizer must be one of {GUIDANCES}, got {regularizer!r}")
        steps = self.scheduler.config.num_train_timesteps
        diffusion_step = steps // 5 if diffusion_step is None else diffusion_step
        if not 0 <= diffusion_step < steps:
            raise ValueError(f"diffusion_step must be in [0, {steps}), got {diffusion_step}")
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        return diffusion_step

    @torch.no_grad()
    def refine(
        self,
        base_samples: np.ndarray | torch.Tensor,
        context: np.ndarray | torch.Tensor | list,
        method: str = "langevin",
        num_steps: int = 20,
        step_size: float = 0.1,
        noise_scale: float = 0.1,
        regularizer: str = "quantile",
        regularization_weight: float = 1.0,
        diffusion_step: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> TSDiffForecastOutput | tuple:
        """Refine a base forecaster's ``base_samples`` ``(batch, num_samples, prediction_length)`` (raw
        units; one sample, e.g. seasonal naive, may be repeated) following ``context``.

        Args:
            method: ``"langevin"`` (MCMC on ``exp(-E)``) or ``"ml"`` (gradient descent on ``E``).
            num_steps: iterations (the paper: 20); each draws a fresh ``eps``.
            step_size: ``eta``. noise_scale: ``gamma`` of the Langevin noise.
            regularizer: ``"quantile"`` or ``"mse"`` ``R``; regularization_weight: ``lambda``.
            diffusion_step: the fixed ``t`` of the energy (default: 20% into the schedule, the paper's
                20 of 100).
        """
        check_output_type(output_type, OUTPUT_TYPES)
        diffusion_step = self._check_refine_arguments(method, regularizer, diffusion_step, num_steps)
        window, (batch_size, num_samples, prediction_length) = self._refinement_windows(base_samples, context)
        levels = sample_quantile_levels(batch_size, num_samples, window.values.device)
        y = window.values.clone()
        for _ in self.progress_bar(range(num_steps)):
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                energy = self._refinement_energy(
                    y, window, levels, regularizer, regularization_weight, diffusion_step, generator
                )
                (gradient,) = torch.autograd.grad(energy, y)
            y = y.detach() - step_size * gradient
            if method == "langevin":
                noise = randn_tensor(tuple(y.shape), generator=generator, device=y.device)
                y = y + (2 * step_size) ** 0.5 * noise_scale * noise
        samples = window.unscale(y, prediction_length).reshape(batch_size, num_samples, prediction_length)
        samples = samples.cpu().numpy() if output_type == "np" else samples
        return TSDiffForecastOutput(samples=samples) if return_dict else (samples,)

    @torch.no_grad()
    def refinement_energy(
        self,
        samples: np.ndarray | torch.Tensor,
        context: np.ndarray | torch.Tensor | list,
        regularizer: str = "quantile",
        regularization_weight: float = 1.0,
        diffusion_step: int | None = None,
        num_noise_draws: int = 16,
        generator: torch.Generator | None = None,
        reference_samples: np.ndarray | None = None,
    ) -> float:
        """Monte-Carlo estimate of the mean energy ``E`` of ``samples`` (the refine objective), with the
        regulariser toward ``reference_samples`` (default: ``samples`` themselves, i.e. ``R = 0``)."""
        diffusion_step = self._check_refine_arguments("ml", regularizer, diffusion_step, 0)
        reference, (batch_size, num_samples, _) = self._refinement_windows(
            samples if reference_samples is None else reference_samples, context
        )
        y = self._refinement_windows(samples, context)[0].values
        levels = sample_quantile_levels(batch_size, num_samples, y.device)
        draws = [
            self._refinement_energy(y, reference, levels, regularizer, regularization_weight, diffusion_step, generator)
            for _ in range(num_noise_draws)
        ]
        return float(torch.stack(draws).mean()) / y.shape[0]

    # ----------------------------------------------------------------- synthesize

    @torch.no_grad()
    def __call__(
        self,
        num_samples: int = 16,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[SelfgenPipeline, int, torch.Tensor, dict], dict] | None = None,
    ) -> TSDiffSynthesisOutput | tuple:
        """Unconditional windows ``(num_samples, window_length)`` in the model's scaled units (the
        paper's synthetic data). ``callback_on_step_end(pipe, step, t, {"latents": x})`` may replace ``x``."""
        check_output_type(output_type, OUTPUT_TYPES)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        shape = (num_samples, self.model.window_length, self.model.num_channels)
        x = randn_tensor(shape, generator=generator, device=self._execution_device)
        self.scheduler.set_timesteps(self._num_steps(num_inference_steps))
        for step_index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            noise = self.model(x, timestep).sample
            x = self.scheduler.step(noise, timestep, x, generator=generator).prev_sample
            if callback_on_step_end is not None:
                x = callback_on_step_end(self, step_index, timestep, {"latents": x}).get("latents", x)
        samples = x[..., 0]
        samples = samples.cpu().numpy() if output_type == "np" else samples
        return TSDiffSynthesisOutput(samples=samples) if return_dict else (samples,)
