"""Pictures of results: image grids and metric curves, written as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def save_image_grid(images: np.ndarray, path: str | Path, columns: int = 8, scale: int = 4) -> Path:
    """Tile ``(N, H, W, C)`` images in ``[0, 1]`` into one PNG, ``columns`` wide, each upscaled ``scale`` x
    (nearest neighbour, so small samples stay legible). Missing cells of the last row are black."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1|3) in [0, 1], got shape {images.shape}")
    count, height, width, channels = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    pixels = (grid.clip(0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (creating folders) and close it."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
    return path


def save_metric_curves(history: Sequence[dict[str, float]], keys: Sequence[str], path: str | Path) -> Path:
    """Plot ``keys`` of a list of per-step records (each with ``"step"``) against step."""
    figure, axes = pyplot().subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(record["step"], record[key]) for record in history if key in record]
        if points:
            axis.plot(*zip(*points))
        axis.set_xlabel("step")
        axis.set_title(key)
    return save_figure(figure, path)
