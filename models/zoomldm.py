"""ZoomLDM's networks (Yellapragada et al., CVPR 2025), small enough for a CPU.

* :class:`ZoomAutoencoder` -- a norm-free patch autoencoder (downsampling ``f``, ``c`` latent channels):
  ``z = W_e u(x) + R_e(u(x))``, ``x_hat = s(W_d z + R_d(z)) + R_p(.)`` with ``u``/``s`` pixel-(un)shuffle by ``f``,
  ``W`` linear maps initialised from the PCA of ``f x f`` training blocks and ``R`` small convolutional residuals
  (last layers zero-initialised), trained with ``||x - D(z)||^2 + beta KL``. No normalisation and no attention,
  so a decoder window depends only on nearby latents: windows straddling independently encoded tiles decode as
  the canvas would (the paper's KL/VQ-f4 autoencoder has GroupNorm and attention and is trained on 256-px crops).
  After training each latent channel is divided by its std (``channel_scale``), so all reach the denoiser at
  unit scale (LDM uses one global scale; PCA channels differ by orders of magnitude).
* :class:`ZoomSSLEncoder` -- a small CNN trained with SimCLR's InfoNCE on full-resolution patches:
  ``e(x) = W pool(f(x))``; its embeddings of the level-0 sub-patches are the conditioning signal.
* :class:`ZoomSummarizer` -- ``c = P(T([m_k; pad(A e_1..e_n) + pos]))``: the pooled sub-patch embeddings
  (``n <= G^2`` tokens, reduced by ``A``, missing tokens replaced by a learned pad token, plus learned
  positions) and a learned **magnification embedding** ``m_k`` go through a transformer ``T``; its
  ``1 + G^2`` outputs, projected by ``P``, are the fixed-length cross-attention context. Classifier-free
  guidance replaces the *output* (after the transformer, where the authors' EmbeddingViT2 does it) by a
  **learned** null context; the authors' null context is all zeros (``0 * c``). Departure kept because the
  bundled checkpoints were trained with the learned one (it starts near zero, ``N(0, 0.02^2)``, and a
  zero context is a point it can learn); swapping in zeros would give them a null they never saw.
* :class:`ZoomLDMDenoiser` -- a latent transformer ``eps_theta(z_t, t, c)``: patchified latent tokens,
  blocks of adaLN-modulated self-attention, cross-attention to ``c`` and an MLP (a DiT with
  cross-attention instead of the paper's UNet).
* :class:`ZoomConditioner` -- the summarizer as its own component, so that a diffusers
  ``UNet2DConditionModel`` conditioned by cross-attention on its tokens can be the denoiser.
* :class:`ZoomEmbeddingDiffusion` -- the conditioning diffusion model (the paper's CDM): ``eps_phi(s_t, t, k)``
  over the ``G x G`` grid of SSL embeddings at magnification ``k`` (finer grids nearest-upsampled to
  ``G x G``), so sampling without a reference draws ``s_0`` first and then the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from .attention import Attention, AttentionBackendMixin


@dataclass
class ZoomDenoiserOutput(BaseOutput):
    sample: torch.Tensor


def check_magnification(magnification: torch.Tensor, num_levels: int) -> None:
    if magnification.numel() and (magnification.min() < 0 or magnification.max() >= num_levels):
        raise ValueError(
            f"magnification must be a trained level in [0, {num_levels}) (0 = highest magnification), "
            f"got {magnification.unique().tolist()}"
        )


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block ``h += Attn(LN h); h += MLP(LN h)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attn(self.norm1(hidden))
        return hidden + self.mlp(self.norm2(hidden))


def conv_residual(in_channels: int, hidden: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """``conv3x3 -> SiLU -> conv3x3 -> SiLU -> conv(kernel)``, the last layer zero-initialised (starts as 0)."""
    last = nn.Conv2d(hidden, out_channels, kernel, padding=kernel // 2)
    nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(), last
    )


class ZoomAutoencoder(ModelMixin, ConfigMixin):
    """A KL autoencoder with the ``AutoencoderKL`` interface (``encode(x).latent_dist``, ``decode(z).sample``,
    ``config.scaling_factor``) built from a linear patch code plus convolutional residuals (module docstring).
    ``(N, 3, H, W)`` in ``[-1, 1]`` -> ``(N, c, H / f, W / f)``; a latent keeps ``c / (3 f^2)`` of the values."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 8,
        factor: int = 4,
        hidden: int = 64,
        pixel_hidden: int = 16,
        logvar_init: float = -10.0,
        scaling_factor: float = 1.0,
        channel_scale: list[float] | None = None,
        latent_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if not (math.isfinite(latent_noise) and latent_noise >= 0):
            raise ValueError(f"latent_noise must be a finite fraction >= 0 of each channel's std, got {latent_noise}")
        block = in_channels * factor**2
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(factor), nn.PixelShuffle(factor)
        self.encode_linear = nn.Conv2d(block, 2 * latent_channels, 1)
        nn.init.zeros_(self.encode_linear.weight[latent_channels:])
        nn.init.constant_(self.encode_linear.bias[latent_channels:], logvar_init)
        self.encode_residual = conv_residual(block, hidden, 2 * latent_channels, 1)
        self.decode_linear = nn.Conv2d(latent_channels, block, 1)
        self.decode_residual = conv_residual(latent_channels, hidden, block)
        self.pixel_residual = conv_residual(in_channels, pixel_hidden, in_channels)

    @torch.no_grad()
    def init_from_pca(self, pixels: torch.Tensor) -> None:
        """Set ``W_e`` (means) to the top-``c`` principal directions of the ``f x f`` blocks of ``pixels``
        ``(N, 3, H, W)`` and ``W_d = W_e^T`` (the optimal linear code), biases from the block mean; channels standardised
        from the start, so ``latent_noise`` is a fraction of each channel's std during training too."""
        blocks = self.unshuffle(pixels).permute(0, 2, 3, 1).reshape(-1, self.encode_linear.in_channels).double()
        mean = blocks.mean(0)
        directions = torch.linalg.svd(blocks - mean, full_matrices=False).Vh[: self.config.latent_channels]
        count = self.config.latent_channels
        self.encode_linear.weight[:count] = directions[:, :, None, None].float()
        self.encode_linear.bias[:count] = -(directions @ mean).float()
        self.decode_linear.weight.copy_(directions.T[:, :, None, None].float())
        self.decode_linear.bias.copy_(mean.float())
        self.set_channel_scale(pixels)

    @torch.no_grad()
    def set_channel_scale(self, pixels: torch.Tensor) -> None:
        """``channel_scale`` = the per-channel std of the latent means of ``pixels``; latents are divided by it
        (the reconstruction does not change). PCA channels span orders of magnitude, and with one global scale the
        denoiser's errors would swamp the small (high-frequency) channels and decode as blocks."""
        self.register_to_config(channel_scale=None)
        self.register_to_config(channel_scale=self.encode(pixels).latent_dist.mean.std((0, 2, 3)).tolist())

    def _channel_scale(self, like: torch.Tensor) -> torch.Tensor:
        scale = self.config.channel_scale or [1.0] * self.config.latent_channels
        return torch.tensor(scale, dtype=like.dtype, device=like.device)[:, None, None]

    def encode(self, pixels: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        blocks = self.unshuffle(pixels)
        mean, logvar = (self.encode_linear(blocks) + self.encode_residual(blocks)).chunk(2, dim=1)
        scale = self._channel_scale(mean)
        logvar = logvar - 2 * scale.log()
        if self.config.latent_noise > 0:  # posterior std floor: the decoder learns to tolerate latent errors
            logvar = logvar.clamp(min=2 * math.log(self.config.latent_noise))
        posterior = DiagonalGaussianDistribution(torch.cat([mean / scale, logvar], dim=1))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        latents = latents * self._channel_scale(latents)
        coarse = self.shuffle(self.decode_linear(latents) + self.decode_residual(latents))
        sample = coarse + self.pixel_residual(coarse)
        return DecoderOutput(sample=sample) if return_dict else (sample,)


class ZoomSSLEncoder(ModelMixin, ConfigMixin):
    """``e(x) = LN(W avgpool(CNN(x)))`` for ``(N, 3, P, P)`` patches in ``[-1, 1]`` (unit scale, so the
    conditioning diffusion needs no statistics); ``project`` is the SimCLR head."""

    @register_to_config
    def __init__(self, embed_dim: int = 32, channels: tuple[int, ...] = (32, 64, 64), projection_dim: int = 32) -> None:
        super().__init__()
        layers, previous = [], 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(previous, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.projection = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, projection_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embed(self.features(pixels).mean((-2, -1))))

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.projection(embeddings)


class ZoomSummarizer(nn.Module):
    """The conditioning summarizer: ``(tokens (N, G^2, D), mask (N, G^2), level (N,))`` -> ``(N, 1 + G^2, C)``."""

    def __init__(
        self, ssl_dim: int, hidden: int, context_dim: int, max_grid: int, num_levels: int, depth: int, num_heads: int
    ) -> None:
        super().__init__()
        self.dim_reduce = nn.Linear(ssl_dim, hidden)
        self.magnification_embedding = nn.Embedding(num_levels, hidden)
        self.pad_token = nn.Parameter(torch.randn(hidden) * 0.02)
        self.position = nn.Parameter(torch.randn(1 + max_grid * max_grid, hidden) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(hidden, num_heads, 4.0) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, context_dim)
        self.null_context = nn.Parameter(torch.randn(1 + max_grid * max_grid, context_dim) * 0.02)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, magnification: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        reduced = torch.where(mask[..., None], self.dim_reduce(tokens), self.pad_token)
        hidden = torch.cat([self.magnification_embedding(magnification)[:, None], reduced], dim=1) + self.position
        for block in self.blocks:
            hidden = block(hidden)
        context = self.proj(self.norm(hidden))
        if drop is not None:
            context = torch.where(drop[:, None, None], self.null_context.to(context.dtype), context)
        return context


class ZoomConditioner(ModelMixin, ConfigMixin):
    """The summarizer as a standalone component, for denoisers that only take a cross-attention context (a
    diffusers ``UNet2DConditionModel``: ``unet(z_t, t, encoder_hidden_states=conditioner(tokens, mask, k))``):
    ``(tokens (N, G^2, D), mask, magnification (N,), drop (N,) | None)`` -> ``(N, 1 + G^2, context_dim)``, the
    magnification a token. Carries the grid and patch geometry the pipeline needs."""

    @register_to_config
    def __init__(
        self,
        ssl_dim: int = 32,
        hidden_size: int = 64,
        context_dim: int = 64,
        max_grid: int = 4,
        num_levels: int = 4,
        depth: int = 2,
        num_heads: int = 4,
        image_patch_size: int = 32,
    ) -> None:
        super().__init__()
        self.summarizer = ZoomSummarizer(ssl_dim, hidden_size, context_dim, max_grid, num_levels, depth, num_heads)

    def forward(self, tokens, mask, magnification, drop_condition=None) -> torch.Tensor:
        check_magnification(magnification, self.config.num_levels)
        return self.summarizer(tokens.to(self.dtype), mask, magnification, drop_condition)


def modulate(hidden: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return hidden * (1 + scale[:, None]) + shift[:, None]


class DenoiserBlock(nn.Module):
    """``h += g1 * SelfAttn(adaLN(h)); h += CrossAttn(LN h, c); h += g2 * MLP(adaLN(h))`` with
    ``(shift, scale, g)`` regressed from the timestep embedding (adaLN-zero, DiT)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn = Attention(dim, num_heads, context_dim=context_dim)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(temb).chunk(6, dim=-1)
        hidden = hidden + gate1[:, None] * self.self_attn(modulate(self.norm1(hidden), shift1, scale1))
        hidden = hidden + self.cross_attn(self.norm2(hidden), context)
        return hidden + gate2[:, None] * self.mlp(modulate(self.norm3(hidden), shift2, scale2))


class ZoomLDMDenoiser(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """``eps_theta(z_t, t, c)`` on VAE latents, ``c = summarizer(ssl_tokens, ssl_mask, magnification)``.

    ``forward(latents (N, C, S, S), timestep, ssl_tokens (N, G^2, D), ssl_mask (N, G^2), magnification (N,),
    drop_condition (N,) bool = None)`` -> :class:`ZoomDenoiserOutput`.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 4,
        patch_size: int = 1,
        hidden_size: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        ssl_dim: int = 32,
        max_grid: int = 4,
        num_levels: int = 4,
        summarizer_hidden: int = 64,
        summarizer_depth: int = 2,
        context_dim: int = 64,
        image_patch_size: int = 32,
    ) -> None:
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size})")
        num_tokens = (sample_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(num_tokens, hidden_size) * 0.02)
        self.time_proj = Timesteps(hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(hidden_size, hidden_size)
        self.summarizer = ZoomSummarizer(
            ssl_dim, summarizer_hidden, context_dim, max_grid, num_levels, summarizer_depth, num_heads
        )
        self.blocks = nn.ModuleList(
            DenoiserBlock(hidden_size, context_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * in_channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def summarize(self, ssl_tokens, ssl_mask, magnification, drop_condition=None) -> torch.Tensor:
        check_magnification(magnification, self.config.num_levels)
        return self.summarizer(ssl_tokens.to(self.dtype), ssl_mask, magnification, drop_condition)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | int,
        ssl_tokens: torch.Tensor,
        ssl_mask: torch.Tensor,
        magnification: torch.Tensor,
        drop_condition: torch.Tensor | None = None,
    ) -> ZoomDenoiserOutput:
        context = self.summarize(ssl_tokens, ssl_mask, magnification, drop_condition)
        return ZoomDenoiserOutput(sample=self.denoise_with_context(latents, timestep, context))

    def hidden_states(self, latents: torch.Tensor, timestep, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last block's ``(N, tokens, hidden)`` states and the timestep embedding ``(N, hidden)``."""
        timesteps = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(len(latents))
        temb = self.time_embed(self.time_proj(timesteps).to(latents.dtype))
        hidden = self.patch_embed(latents).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            hidden = block(hidden, context, temb)
        return hidden, temb

    def pooled_features(self, latents: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
        """``(N, hidden)``: the last block's states averaged over tokens (ZoomLDM features for MIL)."""
        return self.hidden_states(latents, timestep, context)[0].mean(dim=1)

    def denoise_with_context(self, latents: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
        batch, channels, size, _ = latents.shape
        patch = self.config.patch_size
        hidden, temb = self.hidden_states(latents, timestep, context)
        shift, scale = self.out_modulation(temb).chunk(2, dim=-1)
        out = self.proj_out(modulate(self.norm_out(hidden), shift, scale))
        side = size // patch
        return rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=side, p=patch, q=patch)


class ZoomEmbeddingDiffusion(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """The conditioning diffusion model ``eps_phi(s_t, t, k)`` over ``(N, G^2, D)`` SSL-embedding grids."""

    @register_to_config
    def __init__(
        self,
        ssl_dim: int = 32,
        max_grid: int = 4,
        num_levels: int = 4,
        hidden_size: int = 96,
        depth: int = 3,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(ssl_dim, hidden_size)
        self.position = nn.Parameter(torch.randn(max_grid * max_grid, hidden_size) * 0.02)
        self.magnification_embedding = nn.Embedding(num_levels, hidden_size)
        self.time_proj = Timesteps(hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(hidden_size, hidden_size)
        self.blocks = nn.ModuleList(EncoderBlock(hidden_size, num_heads, 4.0) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_size)
        self.proj_out = nn.Linear(hidden_size, ssl_dim)

    def forward(self, grid: torch.Tensor, timestep: torch.Tensor | int, magnification: torch.Tensor) -> ZoomDenoiserOutput:
        check_magnification(magnification, self.config.num_levels)
        timesteps = torch.as_tensor(timestep, device=grid.device).reshape(-1).expand(grid.shape[0])
        temb = self.time_embed(self.time_proj(timesteps).to(grid.dtype)) + self.magnification_embedding(magnification)
        hidden = torch.cat([temb[:, None], self.proj_in(grid) + self.position], dim=1)
        for block in self.blocks:
            hidden = block(hidden)
        return ZoomDenoiserOutput(sample=self.proj_out(self.norm(hidden[:, 1:])))


def grid_side(level: int, max_grid: int) -> int:
    """Side of the pooled embedding grid of a level-``level`` patch: ``min(2**level, max_grid)``."""
    return min(2**level, max_grid)


def tokens_to_full_grid(tokens: torch.Tensor, level: int, max_grid: int) -> torch.Tensor:
    """``(N, G^2, D)`` tokens (valid first) of a level-``level`` patch -> the ``G x G`` grid, nearest-upsampled."""
    side, dim = grid_side(level, max_grid), tokens.shape[-1]
    grid = tokens[:, : side * side].reshape(-1, side, side, dim).permute(0, 3, 1, 2)
    full = F.interpolate(grid, size=(max_grid, max_grid), mode="nearest")
    return full.permute(0, 2, 3, 1).reshape(-1, max_grid * max_grid, dim)


def full_grid_to_tokens(full: torch.Tensor, level: int, max_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`tokens_to_full_grid`: average-pool back to ``min(2**level, G)`` per side; ``(tokens, mask)``."""
    side, dim = grid_side(level, max_grid), full.shape[-1]
    grid = full.reshape(-1, max_grid, max_grid, dim).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(grid, side).permute(0, 2, 3, 1).reshape(-1, side * side, dim)
    tokens = torch.zeros_like(full)
    tokens[:, : side * side] = pooled
    mask = (torch.arange(max_grid * max_grid, device=full.device) < side * side).expand(full.shape[0], -1)
    return tokens, mask
