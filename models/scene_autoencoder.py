"""A tiny KL autoencoder for 32x32 scenes: the frozen latent space of the unified model's latent generation path.

BAGEL (Deng et al., 2025) generates in the latent space of a frozen, pretrained FLUX VAE: an ``AutoencoderKL``
that maps an image to ``z = scaling_factor * (mean(E(x)) - shift_factor)`` and back with
``D(z / scaling_factor + shift_factor)``. No pretrained autoencoder exists at 32x32, so selfgen trains one of the
same class (diffusers ``AutoencoderKL``) on training-split scene renders only (``selfgen train scene_autoencoder``)
and then freezes it. Departures from FLUX's VAE, and why:

* size: 32x32x3 -> 8x8x4 (downsample 4, not 8; 4 channels, not 16), three encoder levels of 32/64/64 channels, so
  that the 8x8 latent has as many tokens (64) as the unified model's 4x4 pixel patches;
* objective: mean-squared reconstruction + a small KL weight (:class:`~selfgen.train.scene_autoencoder.AutoencoderObjective`),
  no LPIPS and no adversarial loss (there is no perceptual network at this scale, and flat-colour scenes need none);
* ``shift_factor`` / ``scaling_factor`` are measured on training renders after training (the mean and the inverse
  standard deviation of the latent means), as FLUX's were chosen so that latents have unit variance.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def scene_autoencoder(
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    latent_channels: int = 4,
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` that downsamples by ``2 ** (len(block_out_channels) - 1)``."""
    if len(block_out_channels) < 2:
        raise ValueError(f"block_out_channels needs at least two levels (one downsampling), got {block_out_channels}")
    if any(channels % norm_num_groups for channels in block_out_channels):
        raise ValueError(f"every entry of block_out_channels {block_out_channels} must divide by {norm_num_groups}")
    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=32,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def encode_latents(autoencoder: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` pixels in ``[-1, 1]`` -> normalised latents ``scaling_factor * (mean - shift_factor)``
    (the posterior mean, no sampling. A departure: BAGEL's trainer encodes with FLUX's autoencoder, whose
    ``DiagonalGaussian(sample=True)`` draws a posterior sample; the mean gives fixed targets for the flow loss)."""
    config = autoencoder.config
    mean = autoencoder.encode(pixels).latent_dist.mean
    return (mean - (config.shift_factor or 0.0)) * config.scaling_factor


def decode_latents(autoencoder: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> pixels in ``[-1, 1]`` (clamped): the inverse of :func:`encode_latents`."""
    config = autoencoder.config
    pixels = autoencoder.decode(latents / config.scaling_factor + (config.shift_factor or 0.0)).sample
    return pixels.clamp(-1, 1)


@torch.no_grad()
def set_latent_normalisation(autoencoder: AutoencoderKL, pixels: torch.Tensor) -> tuple[float, float]:
    """Measure ``shift_factor`` (the mean) and ``scaling_factor`` (1 / std) of the posterior means of ``pixels``
    and write them into the autoencoder's config; returns ``(shift, scale)``."""
    mean = autoencoder.encode(pixels).latent_dist.mean
    shift, scale = float(mean.mean()), float(1.0 / mean.std())
    autoencoder.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale
