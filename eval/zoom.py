"""Judges for multi-scale generation: seams, cross-scale consistency, sharpness and per-scale Frechet distance.

All images are numpy ``(H, W, C)`` or ``(N, H, W, C)`` in ``[0, 1]``.

* ``seam_score(image, tile)`` = mean ``|grad|`` across tile borders / mean ``|grad|`` elsewhere, with
  horizontal and vertical finite differences; 1.0 means the borders are indistinguishable (seamless).
* ``psnr(a, b) = 10 log10(1 / mean((a - b)^2))``; ``consistency_psnr(large, low)`` compares the
  ``H / h`` area-downsampled large image with its low-resolution view.
* ``high_frequency_energy(image) = mean((x - blur(x))^2)`` with a 5x5 box blur: the detail a blurry
  (e.g. bicubic) upsampling lacks; report it as a ratio to the ground truth's.
* ``frechet_distance`` (from :mod:`selfgen.eval.digits`) on any feature space; ``random_cnn_features`` is a
  judge no model trained: a fixed, randomly initialised CNN (seeded), mean-pooled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .digits import frechet_distance

__all__ = ["seam_score", "psnr", "consistency_psnr", "high_frequency_energy", "frechet_distance", "area_downsample",
           "random_cnn_features"]


def _as_batch(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"{name} must be (H, W, C) or (N, H, W, C) in [0, 1], got shape {images.shape}")
    return images


def seam_score(images: np.ndarray, tile: int) -> float:
    """Mean absolute gradient across the borders of a ``tile``-pixel grid over the mean elsewhere."""
    images = _as_batch(images, "images")
    height, width = images.shape[1:3]
    if tile < 2 or height % tile or width % tile or max(height, width) <= tile:
        raise ValueError(f"tile ({tile}) must divide the image size {height}x{width} and leave at least one border")
    dx = np.abs(np.diff(images, axis=2)).mean(axis=(0, 1, 3))  # (W-1,): between column j and j+1
    dy = np.abs(np.diff(images, axis=1)).mean(axis=(0, 2, 3))  # (H-1,)
    border_x, border_y = np.arange(tile - 1, width - 1, tile), np.arange(tile - 1, height - 1, tile)
    inner_x, inner_y = np.setdiff1d(np.arange(width - 1), border_x), np.setdiff1d(np.arange(height - 1), border_y)
    border = np.concatenate([dx[border_x], dy[border_y]]).mean()
    inner = np.concatenate([dx[inner_x], dy[inner_y]]).mean()
    return float(border / max(inner, 1e-12))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {a.shape} and {b.shape}")
    return float(10 * np.log10(1.0 / max(((a - b) ** 2).mean(), 1e-12)))


def area_downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """``(N, H, W, C)`` averaged over ``factor x factor`` blocks."""
    images = _as_batch(images, "images")
    count, height, width, channels = images.shape
    if height % factor or width % factor:
        raise ValueError(f"factor {factor} must divide the image size {height}x{width}")
    return images.reshape(count, height // factor, factor, width // factor, factor, channels).mean(axis=(2, 4))


def consistency_psnr(large: np.ndarray, low: np.ndarray) -> float:
    """PSNR between ``large`` area-downsampled to ``low``'s size and ``low``."""
    large, low = _as_batch(large, "large"), _as_batch(low, "low")
    return psnr(area_downsample(large, large.shape[1] // low.shape[1]), low)


def high_frequency_energy(images: np.ndarray) -> float:
    """``mean((x - box5(x))^2)`` over pixels and channels."""
    images = _as_batch(images, "images")
    blurred = ndimage.uniform_filter(images, size=(1, 5, 5, 1), mode="reflect")
    return float(((images - blurred) ** 2).mean())


def random_cnn_features(images: np.ndarray, seed: int = 0, widths: tuple[int, ...] = (32, 64, 64)) -> np.ndarray:
    """``(N, widths[-1])`` features of a fixed random CNN: 3x3 stride-2 convolutions with He-normal weights drawn
    from ``seed`` and ReLU, the last layer mean-pooled, for ``(N, H, W, 3)`` images in ``[0, 1]``. No model
    trains it, so it favours none (a weaker judge than a trained encoder, but an independent one)."""
    import torch

    images = _as_batch(images, "images")
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.from_numpy(images).float().permute(0, 3, 1, 2) * 2 - 1
    previous = hidden.shape[1]
    with torch.no_grad():
        for width in widths:
            weight = torch.randn(width, previous, 3, 3, generator=generator) * np.sqrt(2.0 / (9 * previous))
            hidden = torch.relu(torch.nn.functional.conv2d(hidden, weight, stride=2, padding=1))
            previous = width
    return hidden.mean((-2, -1)).numpy().astype(np.float64)
