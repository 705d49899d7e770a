"""PlenopticDreamer's multi-in-single-out video DiT (Fu et al. 2026, "Plenoptic Video Generation").

ReCamMaster-style in-context conditioning, generalised to several conditioning videos: every video
(``N`` clean conditioning videos, then the noisy target) is cut into ``p x p`` patch tokens per frame and
the token sequences are concatenated along the frame axis, ``x = [x^1 | ... | x^N | x^{N+1}_t]``, into one
sequence that full 3-D self-attention mixes. Each token carries

* its video's camera for that frame: the Plücker ray map ``(d, o x d)`` of its pixels (cameras relative
  to the source video's first frame), patchified and projected (``models/embeddings.py``);
* its patch position and its frame index as one fixed 3-D sin-cos code (CogVideoX's
  ``get_3d_sincos_pos_embed``, as in ``models/tora.py``), shared across videos, so frame ``f`` of every video
  is the same scene time (which is what keeps views synchronised) and patch ``(r, c)`` the same image place.
  A learned position table initialised at std 0.02 (our first version) stayed near-position-blind: in the
  trained model its per-token norm was 1.4 against 19 for the patch and 15 for the camera embeddings;
  the fixed code has norm ``sqrt(D / 2)`` from the first step;
* optionally (``warp_conditioning``), on the target's tokens only, the **source warped into the target
  cameras** with the source's depth (``data.multiview.warp_video``: RGB where a source point landed, 0
  elsewhere, plus that validity mask as a fourth channel), patchified and projected by a zero-initialised
  linear layer, so a model fine-tuned with it starts as the model without it. This is our departure, not
  the paper's (it conditions on retrieved videos only): warp-conditioned camera control (GEN3C,
  TrajectoryCrafter) tells the model where each source pixel lands, which our small DiT did not learn
  from camera rays (docs/plenoptic.md, "Objects");
* optionally (``refiner_width > 0``), a **pixel-space refiner** after the linear head: a small 3x3
  convolutional network per frame reads the head's clean-target estimate, the noisy target ``x_t`` and its
  ``sigma``, the warp input (when there is one) and ``REFINER_FEATURES`` channels per pixel pixel-shuffled from
  the head's token states, and adds a residual whose last convolution starts at zero (so the model at step 0
  is the model without it). Also our departure: a linear head regresses each ``8 x 8`` patch from one token,
  and on validation scenes the error above 4 cycles per frame (inside a patch) was 80-90 % of the truth's own
  energy there, while a 3x3 linear map of the head's output and the warp, fit on validation, scored +1.15 dB
  (docs/plenoptic.md, "Pixel refiner"); the paper decodes with a video VAE's convolutional decoder;
* a role embedding (condition or target) and its own diffusion timestep through adaLN-zero: conditioning
  frames and the clean prefix frames of a long-video chunk have ``t = 0`` ("noisy scheduling" of the
  target only), the target's other frames the sampled ``t``.

The head reads the target tokens only and predicts the clean target ``x_0`` (x-prediction); the forward
also returns the rectified-flow velocity it implies for ``x_t = (1 - sigma) x_0 + sigma eps``,
``v = eps - x_0 = (x_t - x_0) / sigma``, which is what flow-matching schedulers step on. Predicting ``x_0``
rather than ``v`` matters at this size: a patch token (``3 p^2 = 192`` values) is at least as wide as the
hidden width, so the network cannot carry the input noise through to a ``v`` or ``eps`` output (our first,
``v``-predicting run sampled noise), while the clean image is smooth and low-dimensional (as argued by
Li and He 2025, "Back to Basics: Let Denoising Generative Models Denoise").

Departures from the paper (named in ``docs/plenoptic.md``): pixel space instead of a video VAE's latents,
a ~3 M parameter DiT trained from scratch instead of a fine-tuned large text-to-video model, no text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_3d_sincos_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import Attention, AttentionBackendMixin
from .embeddings import PluckerPatchEmbedding, patchify, unpatchify

CONDITION, TARGET = 0, 1
NUM_TRAIN_TIMESTEPS = 1000  # timestep = 1000 sigma, as FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
MIN_SIGMA = 1e-3  # clean (t = 0) frames: keeps their (unused) velocity finite
REFINER_FEATURES = 8  # channels per pixel the refiner reads from the head's token states (pixel shuffle)


@dataclass
class PlenopticTransformerOutput(BaseOutput):
    """``sample``: the velocity ``(x_t - x_0) / sigma`` of the target video, ``(B, F, C, H, W)``;
    ``denoised``: the predicted clean target ``x_0``, same shape."""

    sample: torch.Tensor | None = None
    denoised: torch.Tensor | None = None


def modulate(hidden: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN with per-token ``shift`` and ``scale``: ``h (1 + scale) + shift``."""
    return hidden * (1 + scale) + shift


class PlenopticBlock(nn.Module):
    """DiT block with per-token adaLN-zero: ``h += g1 Attn(adaLN(h)); h += g2 MLP(adaLN(h))``, where
    ``(shift, scale, gate)`` are regressed from each token's timestep embedding."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(temb).chunk(6, dim=-1)
        hidden = hidden + gate1 * self.attn(modulate(self.norm1(hidden), shift1, scale1))
        return hidden + gate2 * self.mlp(modulate(self.norm2(hidden), shift2, scale2))


class PixelRefiner(nn.Module):
    """Residual pixel-space head ``r = Conv(GELU(Conv(GELU(Conv([x_0, x_t, sigma, warp, f])))))`` per frame, where
    ``f`` is ``REFINER_FEATURES`` channels per pixel projected from each token state and unpatchified (pixel
    shuffle); the last convolution starts at zero, so ``x_0 + r = x_0`` at initialisation."""

    def __init__(self, hidden_size: int, patch_size: int, channels: int, warp_channels: int, width: int) -> None:
        super().__init__()
        self.patch_size, self.channels = patch_size, channels
        self.features = nn.Linear(hidden_size, REFINER_FEATURES * patch_size * patch_size)
        inputs = 2 * channels + 1 + warp_channels + REFINER_FEATURES
        self.convs = nn.Sequential(
            nn.Conv2d(inputs, width, 3, padding=1), nn.GELU(approximate="tanh"),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(approximate="tanh"),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(
        self, denoised: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor, warp: torch.Tensor | None
    ) -> torch.Tensor:
        """``denoised``, ``sample`` ``(B, F, C, H, W)``, ``sigma`` ``(B, F)``, head tokens ``(B, F, P, D)``, ``warp``
        ``(B, F, C + 1, H, W)`` or None -> the residual ``(B, F, C, H, W)``."""
        height, width = sample.shape[-2:]
        features = unpatchify(self.features(tokens), self.patch_size, REFINER_FEATURES, height, width)
        planes = [denoised, sample.to(denoised.dtype), sigma[..., None, None, None].expand(*sample.shape[:2], 1, height, width).to(denoised.dtype), features]
        if warp is not None:
            planes.insert(3, warp.to(denoised.dtype))
        inputs = torch.cat(planes, dim=2)
        return self.convs(inputs.flatten(0, 1)).reshape(denoised.shape)


class PlenopticTransformer(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """Denoised target ``x_theta(x_t, t, P^{N+1} | {(V^n, P^n)}_{n=1..N})`` and its velocity, given ``N >= 0``
    conditioning videos and all cameras.

    ``forward(sample (B, F, C, H, W), timestep (B,) or (B, F), target_cameras (B, F, 4, 4), intrinsics
    (B, 3, 3) of the target, condition_videos (B, N, F, C, H, W) = None, condition_cameras (B, N, F, 4, 4) =
    None, condition_intrinsics (B, N, 3, 3) = None (default: the target's), warp (B, F, C + 1, H, W) = None (with
    ``warp_conditioning``: the source warped into the target in [-1, 1], 0 where nothing landed, and the
    landed mask; None = nothing landed anywhere))`` -> :class:`PlenopticTransformerOutput`. With ``refiner_width > 0``
    the head's estimate is corrected by a :class:`PixelRefiner` (zero at initialisation). A per-frame ``timestep`` of 0 marks a clean (given) target frame.
    Videos are in ``[-1, 1]``; cameras are camera-to-world, already relative to a common reference.
    ``num_frames`` is the clip length it is trained on; pipelines generate longer videos chunk by chunk.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        num_frames: int = 4,
        in_channels: int = 3,
        patch_size: int = 8,
        hidden_size: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        warp_conditioning: bool = False,
        refiner_width: int = 0,
    ) -> None:
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size})")
        if hidden_size % 16:
            raise ValueError(f"hidden_size must be divisible by 16 (3-D sin-cos positions), got {hidden_size}")
        self.patch_embed = nn.Linear(in_channels * patch_size * patch_size, hidden_size)
        self.camera_embed = PluckerPatchEmbedding(patch_size, hidden_size)
        position = get_3d_sincos_pos_embed(hidden_size, sample_size // patch_size, num_frames)  # (F, P, D)
        self.register_buffer("position", position.float(), persistent=False)
        self.role_embed = nn.Embedding(2, hidden_size)
        if warp_conditioning:
            self.warp_embed = nn.Linear((in_channels + 1) * patch_size * patch_size, hidden_size)
            nn.init.zeros_(self.warp_embed.weight)
            nn.init.zeros_(self.warp_embed.bias)
        self.time_proj = Timesteps(hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(hidden_size, hidden_size)
        self.blocks = nn.ModuleList(PlenopticBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, in_channels * patch_size * patch_size)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        if refiner_width > 0:
            warp_channels = in_channels + 1 if warp_conditioning else 0
            self.refiner = PixelRefiner(hidden_size, patch_size, in_channels, warp_channels, refiner_width)

    def embed_videos(
        self, videos: torch.Tensor, cameras: torch.Tensor, intrinsics: torch.Tensor, role: int
    ) -> torch.Tensor:
        """Tokens of ``videos`` ``(B, N, F, C, H, W)`` with cameras ``(B, N, F, 4, 4)`` and per-video intrinsics
        ``(B, N, 3, 3)``: ``(B, N F P, D)``, the sum of patch, camera, 3-D position (frame, row, column) and role
        embeddings."""
        batch, count, frames, _, height, width = videos.shape
        if frames > self.position.shape[0]:
            raise ValueError(f"videos have {frames} frames; the model's clip is {self.position.shape[0]} (generate in chunks)")
        tokens = self.patch_embed(patchify(videos.to(self.dtype), self.config.patch_size))
        rays = self.camera_embed(cameras, intrinsics[:, :, None], height, width)
        tokens = tokens + rays.to(tokens.dtype) + self.position[:frames].to(tokens.dtype)
        tokens = tokens + self.role_embed.weight[role]
        return tokens.reshape(batch, count * frames * tokens.shape[-2], -1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        target_cameras: torch.Tensor,
        intrinsics: torch.Tensor,
        condition_videos: torch.Tensor | None = None,
        condition_cameras: torch.Tensor | None = None,
        condition_intrinsics: torch.Tensor | None = None,
        warp: torch.Tensor | None = None,
    ) -> PlenopticTransformerOutput:
        batch, frames, channels, height, width = sample.shape
        num_patches = self.position.shape[1]
        timestep = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32)
        frame_timesteps = timestep.reshape(-1, 1).expand(batch, frames) if timestep.ndim < 2 else timestep
        target = self.embed_videos(sample[:, None], target_cameras[:, None], intrinsics[:, None], TARGET)
        if self.config.warp_conditioning:
            if warp is None:
                warp = sample.new_zeros(batch, frames, channels + 1, height, width)
            if warp.shape != (batch, frames, channels + 1, height, width):
                raise ValueError(f"warp must be (B, F, {channels + 1}, H, W) like the sample plus a mask channel, got {tuple(warp.shape)}")
            target = target + self.warp_embed(patchify(warp.to(self.dtype), self.config.patch_size)).flatten(1, 2)
        elif warp is not None:
            raise ValueError("warp was given but this model has warp_conditioning=False (no warp input)")
        token_timesteps = frame_timesteps.repeat_interleave(num_patches, dim=1)
        if condition_videos is not None and condition_videos.shape[1] > 0:
            if condition_cameras is None or condition_cameras.shape[:3] != condition_videos.shape[:3]:
                raise ValueError("condition_cameras must be (B, N, F, 4, 4) matching condition_videos (B, N, F, C, H, W)")
            if condition_intrinsics is None:
                condition_intrinsics = intrinsics[:, None].expand(-1, condition_videos.shape[1], -1, -1)
            context = self.embed_videos(condition_videos, condition_cameras, condition_intrinsics, CONDITION)
            target = torch.cat([context, target], dim=1)
            token_timesteps = torch.cat([token_timesteps.new_zeros(batch, context.shape[1]), token_timesteps], dim=1)
        temb = self.time_embed(self.time_proj(token_timesteps.flatten()).to(target.dtype)).reshape(batch, -1, target.shape[-1])
        hidden = target
        for block in self.blocks:
            hidden = block(hidden, temb)
        num_target = frames * num_patches
        shift, scale = self.out_modulation(temb[:, -num_target:]).chunk(2, dim=-1)
        head = modulate(self.norm_out(hidden[:, -num_target:]), shift, scale).reshape(batch, frames, num_patches, -1)
        denoised = unpatchify(self.proj_out(head), self.config.patch_size, channels, height, width)
        sigma = (frame_timesteps / NUM_TRAIN_TIMESTEPS).clamp(min=MIN_SIGMA)
        if self.config.refiner_width > 0:
            denoised = denoised + self.refiner(denoised, sample, sigma, head, warp)
        sigma = sigma[..., None, None, None]
        velocity = (sample.float() - denoised.float()) / sigma
        return PlenopticTransformerOutput(sample=velocity, denoised=denoised)
