"""One input check per kind of data, shared by the loaders and the pipelines.

Silent garbage is worse than an error: a NaN pixel gives NaN features, a 0-255 image read as
0-1 gives a white picture, ``num_inference_steps=0`` quietly means "the default". These helpers
raise ``ValueError`` naming the argument and the expected form instead:

* :func:`check_positive_int` -- step counts, horizons, batch sizes (``0``, negatives, bools and
  floats are refused);
* :func:`images_to_tensor` -- numpy ``(N, H, W, C)`` in ``[0, 1]``, PIL images or torch
  ``(N, C, H, W)`` in ``[-1, 1]`` -> torch ``(N, C, H, W)`` in ``[-1, 1]``; empty batches, NaN/inf,
  integer (0-255) arrays and values outside the expected range are errors;
* :func:`video_to_array` -- numpy ``(T, H, W, 3)`` / ``(B, T, H, W, 3)`` frames in ``[0, 1]``;
* :func:`series_to_array` -- 1-D or ``(batch, length)`` series; NaN means "missing", inf is an error.

Cameras have theirs next to the multi-view data: :func:`selfgen.data.multiview.check_cameras`.

Pipelines import these from ``selfgen.data.validation``; data never imports pipelines.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

RANGE_TOLERANCE = 1e-3  # float outputs of other pipelines may overshoot [0, 1] by rounding


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``; else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_finite(values: np.ndarray | torch.Tensor, name: str, allow_nan: bool = False) -> None:
    finite = torch.isfinite(values) if isinstance(values, torch.Tensor) else np.isfinite(values)
    if allow_nan:
        finite = finite | (values.isnan() if isinstance(values, torch.Tensor) else np.isnan(values))
    if not bool(finite.all()):
        kinds = "infinite values" if allow_nan else "NaN or infinite values"
        count = int((~finite).sum())
        raise ValueError(f"{name} contains {count} {kinds}; expected finite numbers")


def _check_range(values: np.ndarray | torch.Tensor, name: str, low: float, high: float, layout: str) -> None:
    smallest, largest = float(values.min()), float(values.max())
    if smallest < low - RANGE_TOLERANCE or largest > high + RANGE_TOLERANCE:
        hint = " (0-255 pixels? divide by 255)" if largest > 2 else ""
        raise ValueError(
            f"{name} must be {layout} with values in [{low:g}, {high:g}]; got values in "
            f"[{smallest:.4g}, {largest:.4g}]{hint}"
        )


def _check_unit_array(array: np.ndarray, name: str, layout: str) -> np.ndarray:
    """A float array in ``[0, 1]``: integer arrays (0-255) and out-of-range values are errors."""
    if array.dtype.kind in "iub":
        raise ValueError(
            f"{name} must be {layout} as floats in [0, 1]; got a {array.dtype} array (0-255 pixels? "
            "use array.astype(np.float32) / 255)"
        )
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be {layout} as floats in [0, 1]; got dtype {array.dtype}")
    if array.size:  # an empty batch is reported by the caller, which knows the layout
        _check_finite(array, name)
        _check_range(array, name, 0.0, 1.0, layout)
    return array


def _pil_to_array(images: Sequence[Image.Image], name: str) -> np.ndarray:
    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]
    arrays = [array[..., None] if array.ndim == 2 else array for array in arrays]
    if len({array.shape for array in arrays}) != 1:
        raise ValueError(f"{name}: the PIL images differ in size or mode: {sorted({a.shape for a in arrays})}")
    return np.stack(arrays)


def images_to_tensor(
    images, name: str = "images", channels: int | None = None, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Images -> torch ``(N, C, H, W)`` float32 in ``[-1, 1]``.

    Accepts numpy ``(N, H, W, C)`` floats in ``[0, 1]``, a PIL image or a non-empty list of them, or a
    torch ``(N, C, H, W)`` tensor in ``[-1, 1]``. Refuses empty batches, NaN/inf, integer (0-255)
    arrays, values outside the expected range and, when given, another channel count or size.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images or not all(isinstance(image, Image.Image) for image in images):
            raise ValueError(f"{name} given as a list must be a non-empty list of PIL images")
        images = _pil_to_array(images, name)
    if isinstance(images, np.ndarray):
        layout = "numpy (N, H, W, C)"
        if images.ndim != 4:
            raise ValueError(f"{name} must be {layout} in [0, 1], got shape {images.shape}")
        _check_unit_array(images, name, layout)
        pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2) * 2 - 1
    elif isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"{name} must be torch (N, C, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [-1, 1], got {images.dtype} (0-255 pixels?)")
        pixels = images.float()
        if pixels.numel():
            _check_finite(pixels, name)
            _check_range(pixels, name, -1.0, 1.0, "torch (N, C, H, W)")
    else:
        raise ValueError(
            f"{name} must be a numpy array, a PIL image, a list of PIL images or a torch tensor, got {type(images).__name__}"
        )
    _check_image_shape(pixels, name, channels, size)
    return pixels


def _check_image_shape(pixels: torch.Tensor, name: str, channels: int | None, size) -> None:
    if pixels.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 images); expected at least one")
    height, width = (size, size) if isinstance(size, int) else (size or (None, None))
    expected = (channels, height, width)
    found = tuple(pixels.shape[1:])
    if any(want is not None and want != got for want, got in zip(expected, found)):
        shown = tuple("?" if want is None else want for want in expected)
        raise ValueError(
            f"{name} must have (C, H, W) = {shown}: torch (N, C, H, W) in [-1, 1] or numpy (N, H, W, C) in "
            f"[0, 1]; got (C, H, W) = {found}"
        )


def video_to_array(frames, name: str = "video") -> np.ndarray:
    """Frames ``(T, H, W, 3)`` or a batch ``(B, T, H, W, 3)`` as a float32 numpy array in ``[0, 1]``.

    Accepts numpy or torch; refuses empty clips, NaN/inf, integer (0-255) frames and other ranges.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    layout = "(T, H, W, 3) or (B, T, H, W, 3) frames"
    if frames.ndim not in (4, 5) or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be {layout} in [0, 1], got shape {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"{name} is empty (shape {frames.shape}); expected at least one frame")
    return _check_unit_array(frames, name, layout).astype(np.float32, copy=False)


def series_to_array(values, name: str = "context") -> np.ndarray:
    """A 1-D series or a ``(batch, length)`` array as float64 ``(batch, length)``.

    NaN marks a missing value and is kept; infinities (``inf``, ``1e309``), empty batches and empty
    series are errors naming ``name``.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers: a 1-D array or a (batch, length) array") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty 1-D array or a (batch, length) array, got shape {array.shape}")
    _check_finite(array, name, allow_nan=True)
    return array

