"""TSDiff's unconditional denoiser (Kollovieh et al., 2023, "Predict, Refine, Synthesize").

The model learns ``eps_theta(x_t, t)`` for windows ``x_0`` of ``context_length + prediction_length``
steps of one (scaled) series, trained with the simple DDPM loss
``E_{x_0, eps, t} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2`` and the paper's
schedule: ``T = 100`` steps, betas linear from ``1e-4`` to ``0.1``. It never sees a "future": the same
network forecasts, refines and synthesises (see ``pipelines/tsdiff.py``).

Architecture (the paper's Fig. 2 / the official ``BackboneModel``):

* every step ``i`` of the window is a vector ``[x_i, x_{i - l_1}, ..., x_{i - l_K}]``: the value and its
  lagged values for the lags ``lags_seq`` (the paper's lag features), so the input has
  ``1 + K`` channels and the network denoises all of them;
* ``Linear + ReLU`` lifts the channels to ``hidden_dim``; the diffusion step is a sinusoidal embedding
  followed by a two-layer SiLU MLP;
* ``num_residual_blocks`` residual blocks, each: add a linear map of the step embedding, a pre-norm
  bidirectional S4 layer with a residual connection, the gate ``tanh(h) * sigmoid(h)``, and two
  1x1 convolutions giving the block's residual output and its skip output;
* the sum of the skips goes through ``Linear-ReLU-Linear`` back to ``1 + K`` channels (plus the input
  when ``init_skip``).

The S4 layer here is the diagonal S4D form (Gu et al., 2022, S4D-Lin initialisation), applied as a
long convolution forward and backward in time (bidirectional, as in the paper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

SCALINGS = ("mean", "standard")


def compute_scaling(
    values: torch.Tensor, observed: torch.Tensor, kind: str = "mean", minimum_scale: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(loc, scale)`` of ``values`` ``(batch, length)`` over its ``observed`` entries.

    ``"mean"`` is the paper's mean scaling (GluonTS ``MeanScaler``): ``loc = 0``, ``scale = mean |x|``;
    ``"standard"`` is ``loc = mean x``, ``scale = std x``. A scale below ``minimum_scale`` (a constant
    window) is raised to it. Both returned with shape ``(batch, 1)``.
    """
    if kind not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {kind!r}")
    weights = observed.to(values.dtype)
    count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    filled = torch.where(observed, values, torch.zeros_like(values))
    if kind == "mean":
        loc = torch.zeros_like(count)
        scale = filled.abs().sum(dim=1, keepdim=True) / count
    else:
        loc = filled.sum(dim=1, keepdim=True) / count
        scale = (((filled - loc) * weights) ** 2).sum(dim=1, keepdim=True).div(count).sqrt()
    return loc, scale.clamp(min=minimum_scale)


def lagged_window(history: torch.Tensor, lags: list[int], window_length: int) -> torch.Tensor:
    """The model's input layout from ``history`` ``(batch, max(lags) + window_length)``.

    Returns ``(batch, window_length, 1 + len(lags))`` whose channel 0 is the last ``window_length``
    values and channel ``k`` the values ``lags[k - 1]`` steps earlier. NaNs (unknown values) are kept.
    """
    max_lag = max(lags, default=0)
    if history.shape[-1] != max_lag + window_length:
        raise ValueError(
            f"history must have max(lags) + window_length = {max_lag + window_length} steps, got {history.shape[-1]}"
        )
    channels = [history[:, max_lag - lag : max_lag - lag + window_length] for lag in [0, *lags]]
    return torch.stack(channels, dim=-1)


def step_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[sin(t w_k), cos(t w_k)]`` with ``w_k = 10000^{-k / (dim/2 - 1)}``."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=timesteps.device) * -(math.log(10000.0) / (half - 1)))
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class S4DConvolution(nn.Module):
    """Bidirectional diagonal state-space layer on ``(batch, channels, length)``.

    Each channel is the SSM ``h' = A h + B u, y = C h + D u`` with diagonal complex ``A`` (S4D-Lin:
    ``A_n = -1/2 + i pi n``), discretised with zero-order hold at a learned step ``dt``. Its impulse
    response is the kernel ``K_l = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l)``; the output
    ``y = K_fwd * u + flip(K_bwd * flip(u)) + D u`` is one product with the ``(L, L)`` Toeplitz matrix of
    both kernels (for windows of a few hundred steps this is faster than the FFT, also its backward, and
    runs in bf16 under autocast), followed by GELU and a 1x1 output convolution.
    """

    def __init__(self, channels: int, state_dim: int = 32, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        modes = state_dim // 2
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(modes).float().repeat(channels, 1))
        self.c = nn.Parameter(torch.randn(2, channels, modes, 2) * math.sqrt(0.5))  # (direction, H, N/2, re/im)
        self.d = nn.Parameter(torch.randn(channels))
        self.output = nn.Conv1d(channels, channels, kernel_size=1)

    def kernel(self, length: int) -> torch.Tensor:
        """The forward and backward kernels, ``(2, channels, length)``."""
        dt = self.log_dt.exp()[:, None]
        a = torch.complex(-self.log_a_real.exp(), self.a_imag)
        dt_a = a * dt
        c = torch.view_as_complex(self.c) * (torch.exp(dt_a) - 1.0) / a
        powers = torch.exp(dt_a[..., None] * torch.arange(length, device=a.device))  # (H, N/2, L)
        return 2.0 * torch.einsum("dhn,hnl->dhl", c, powers).real

    def convolution_matrix(self, length: int) -> torch.Tensor:
        """``M[h, i, j] = K_fwd[h, i - j]`` for ``i >= j`` plus ``K_bwd[h, j - i]`` for ``j >= i``: ``(H, L, L)``."""
        kernel = self.kernel(length)
        # taps for lags -(L-1) .. L-1; row i of M reads taps i - j, i.e. a reversed sliding window
        taps = torch.cat([kernel[1, :, 1:].flip(-1), kernel[0, :, :1] + kernel[1, :, :1], kernel[0, :, 1:]], dim=-1)
        return taps.unfold(-1, length, 1).flip(-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bhj,hij->bhi", u, self.convolution_matrix(u.shape[-1]).to(u.dtype))
        return self.output(F.gelu(y + self.d[:, None].to(u.dtype) * u))


class ResidualBlock(nn.Module):
    """``h = S4(LN(x + W t)) + (x + W t)``, ``g = tanh(h) sigmoid(h)``: returns ``(x + conv_res(g), conv_skip(g))``."""

    def __init__(self, hidden_dim: int, state_dim: int) -> None:
        super().__init__()
        self.step_projection = nn.Linear(hidden_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.s4 = S4DConvolution(hidden_dim, state_dim)
        self.residual = nn.Conv1d(hidden_dim, hidden_dim, kernel_size=1)
        self.skip = nn.Conv1d(hidden_dim, hidden_dim, kernel_size=1)

    def forward(self, x: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x + self.step_projection(step)[:, :, None]
        h = self.s4(self.norm(h.transpose(1, 2)).transpose(1, 2)) + h
        gated = torch.tanh(h) * torch.sigmoid(h)
        return x + self.residual(gated), self.skip(gated)


@dataclass
class TSDiffModelOutput(BaseOutput):
    """``sample``: the predicted noise, ``(batch, window_length, 1 + len(lags_seq))``."""

    sample: torch.Tensor


class TSDiffModel(ModelMixin, ConfigMixin):
    """The TSDiff denoiser ``eps_theta(x_t, t)`` over ``(batch, window_length, 1 + len(lags_seq))``.

    Args:
        context_length: observed steps of a training window (the first part of the window).
        prediction_length: the steps after it (the standard horizon; any shorter or longer horizon
            within the window can be forecast too).
        lags_seq: lags whose values are extra input channels (e.g. ``[52]`` for weekly data).
        hidden_dim, num_residual_blocks, state_dim, step_embedding_dim: sizes (paper: 64, 3, 128, 128).
        init_skip: add the input to the output (the official ``init_skip``).
        scaling: ``"mean"`` (the paper's) or ``"standard"``: how the pipeline scales each window.
    """

    @register_to_config
    def __init__(
        self,
        context_length: int = 104,
        prediction_length: int = 26,
        lags_seq: list[int] | None = None,
        hidden_dim: int = 64,
        num_residual_blocks: int = 3,
        state_dim: int = 32,
        step_embedding_dim: int = 128,
        init_skip: bool = False,
        scaling: str = "mean",
    ) -> None:
        super().__init__()
        if context_length < 1 or prediction_length < 1:
            raise ValueError(
                f"context_length and prediction_length must be >= 1, got {context_length}, {prediction_length}"
            )
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        lags = list(lags_seq or [])
        if any(lag < 1 for lag in lags):
            raise ValueError(f"lags_seq must hold positive integers, got {lags}")
        channels = 1 + len(lags)
        self.input_projection = nn.Sequential(nn.Linear(channels, hidden_dim), nn.ReLU())
        self.step_mlp = nn.Sequential(
            nn.Linear(step_embedding_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU()
        )
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, state_dim) for _ in range(num_residual_blocks))
        self.output_projection = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, channels)
        )

    @property
    def window_length(self) -> int:
        return self.config.context_length + self.config.prediction_length

    @property
    def lags(self) -> list[int]:
        return list(self.config.lags_seq or [])

    @property
    def num_channels(self) -> int:
        return 1 + len(self.lags)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> TSDiffModelOutput:
        """Predict the noise in ``sample`` ``(batch, length, channels)`` at diffusion step(s) ``timestep``."""
        if sample.ndim != 3 or sample.shape[-1] != self.num_channels:
            raise ValueError(
                f"sample must be (batch, length, {self.num_channels}) (value + {len(self.lags)} lags), "
                f"got {tuple(sample.shape)}"
            )
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        step = self.step_mlp(step_embedding(timestep, self.config.step_embedding_dim).to(sample.dtype))
        x = self.input_projection(sample).transpose(1, 2)
        skips = 0
        for block in self.blocks:
            x, skip = block(x, step)
            skips = skips + skip
        out = self.output_projection(skips.transpose(1, 2))
        return TSDiffModelOutput(sample=out + sample if self.config.init_skip else out)
