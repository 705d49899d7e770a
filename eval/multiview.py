"""Judges of multi-view video re-rendering against ground-truth renders (no weights shared with any model).

* :func:`psnr`, :func:`ssim` -- per-view quality against the ground truth (SSIM from scikit-image,
  per frame, averaged).
* :func:`masked_psnr` -- PSNR over the pixels of a mask; **view synchronisation** is the PSNR between two
  generations of the same camera path (e.g. views A and A' at the start and end of a chain), over the whole
  frame and over the pixels the source never saw (``selfgen.data.multiview.unseen_mask``), where the model
  must hallucinate and only memory can make the two generations agree.
* :func:`error_share` -- the share of a view's squared error on a set of pixels (e.g. the objects' pixels,
  ``selfgen.data.multiview.render_background``): where the error the PSNR counts comes from.
* :func:`chain_slope` -- how fast quality changes along an autoregressive chain: the least-squares slope of
  per-view PSNR against chain position (dB per view; negative = degrading).
* :func:`camera_error` -- the camera-accuracy proxy: a generated view is matched (lowest MSE) against
  ground-truth renders of candidate camera paths, the true path turned about the scene's vertical axis by
  each of a set of angles; the error is ``|chosen angle|`` in degrees (0 when the true path matches best).
  It measures whether the content sits where the requested camera would see it, at the resolution of the
  candidate spacing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.metrics import structural_similarity

MAX_PSNR = 100.0


def _check_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, target = np.asarray(prediction, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape, got {prediction.shape} and {target.shape}")
    return prediction, target


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """``10 log10(1 / MSE)`` for images in ``[0, 1]``, capped at :data:`MAX_PSNR` for identical inputs."""
    prediction, target = _check_pair(prediction, target)
    mse = float(np.mean((prediction - target) ** 2))
    return MAX_PSNR if mse <= 10 ** (-MAX_PSNR / 10) else float(10 * np.log10(1.0 / mse))


def masked_psnr(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the pixels where ``mask`` ``(..., H, W)`` is True (``nan`` if it selects nothing)."""
    prediction, target = _check_pair(prediction, target)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != prediction.shape[:-1]:
        raise ValueError(f"mask must have shape {prediction.shape[:-1]}, got {mask.shape}")
    if not mask.any():
        return float("nan")
    return psnr(prediction[mask], target[mask])


def error_share(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Share of the total squared error ``sum_mask (p - t)^2 / sum (p - t)^2`` that falls on the pixels of
    ``mask`` ``(..., H, W)`` (e.g. the object pixels); ``nan`` when the prediction is exact."""
    prediction, target = _check_pair(prediction, target)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != prediction.shape[:-1]:
        raise ValueError(f"mask must have shape {prediction.shape[:-1]}, got {mask.shape}")
    squared = ((prediction - target) ** 2).sum(-1)
    total = float(squared.sum())
    return float("nan") if total == 0 else float(squared[mask].sum() / total)


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM over frames of ``(F, H, W, 3)`` videos in ``[0, 1]`` (7x7 window, per-channel)."""
    prediction, target = _check_pair(prediction, target)
    frames = prediction.reshape(-1, *prediction.shape[-3:])
    targets = target.reshape(-1, *target.shape[-3:])
    return float(np.mean([
        structural_similarity(frame, truth, channel_axis=-1, data_range=1.0) for frame, truth in zip(frames, targets)
    ]))


def camera_error(generated: np.ndarray, candidate_renders: Sequence[np.ndarray], candidate_angles: Sequence[float]) -> float:
    """``|angle|`` (degrees) of the candidate render closest (MSE) to ``generated``; the true camera path
    is the candidate with angle 0."""
    if len(candidate_renders) != len(candidate_angles) or not len(candidate_renders):
        raise ValueError("candidate_renders and candidate_angles must be non-empty and of equal length")
    errors = [float(np.mean((np.asarray(generated) - render) ** 2)) for render in candidate_renders]
    return abs(float(candidate_angles[int(np.argmin(errors))]))


def chain_slope(values: Sequence[float]) -> float:
    """Least-squares slope ``b`` of ``values[i] ~ a + b i`` over positions ``i = 0, 1, ...``; ``nan`` for
    fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
    if len(values) < 2:
        return float("nan")
    positions = np.arange(len(values)) - (len(values) - 1) / 2
    return float(positions @ (values - values.mean()) / (positions @ positions))
