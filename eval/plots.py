"""Pictures of results: labelled image grids, fan charts and metric curves, written as PNG.

Every picture says what it shows: :func:`save_image_grid` separates tiles by a gap (a column of
digits must not read as one squiggle), and takes a title, row and column labels (level, view,
prompt) and a :class:`ColorBar` for heat maps overlaid on the tiles.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)  # gaps and label bands
TEXT = (0, 0, 0)
FONT_SIZE = 14
MARGIN = 6  # pixels around labels and the colour bar


@dataclass(frozen=True)
class ColorBar:
    """A legend for values in ``[0, 1]`` drawn with ``colormap`` (``(N,)`` -> ``(N, 3)`` RGB in ``[0, 1]``)."""

    label: str
    colormap: Callable[[np.ndarray], np.ndarray]
    low: str = "0"
    high: str = "1"


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _tile_grid(images: np.ndarray, columns: int, gap: int) -> np.ndarray:
    """``(N, H, W, C)`` -> one ``(rows H + gaps, columns W + gaps, 3)`` array with background-coloured gaps."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    grid = np.ones((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        grid[top : top + height, left : left + width] = image if channels == 3 else image.repeat(3, axis=-1)
    return grid


def _wrap(text: str, width_pixels: int, font: ImageFont.ImageFont) -> str:
    """``text`` wrapped so that each line fits ``width_pixels`` (at least 4 characters a line)."""
    per_line = max(4, int(width_pixels / max(font.getlength("n"), 1)))
    return "\n".join(textwrap.wrap(text, per_line, break_long_words=False)) or text


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _colorbar_image(colorbar: ColorBar, height: int, font) -> Image.Image:
    """A vertical gradient (high at the top) with its end labels and its label rotated beside it."""
    strip = colorbar.colormap(np.linspace(1, 0, height))[:, None, :].repeat(14, axis=1)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w, label_h = _text_size(scratch, colorbar.label, font)
    ends_w = max(_text_size(scratch, text, font)[0] for text in (colorbar.low, colorbar.high))
    width = 14 + MARGIN + ends_w + MARGIN + label_h + MARGIN
    picture = Image.new("RGB", (width, height), BACKGROUND)
    picture.paste(Image.fromarray((strip.clip(0, 1) * 255).round().astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(picture)
    draw.text((14 + MARGIN, 0), colorbar.high, fill=TEXT, font=font)
    draw.text((14 + MARGIN, height - _text_size(draw, colorbar.low, font)[1] - 4), colorbar.low, fill=TEXT, font=font)
    label = Image.new("RGB", (label_w + 4, label_h + 6), BACKGROUND)
    ImageDraw.Draw(label).text((2, 0), colorbar.label, fill=TEXT, font=font)
    label = label.rotate(90, expand=True)
    picture.paste(label, (width - label.width, max(0, (height - label.height) // 2)))
    return picture


def save_image_grid(
    images: np.ndarray,
    path: str | Path,
    columns: int = 8,
    scale: int = 4,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    tile_labels: Sequence[str] | None = None,
    colorbar: ColorBar | None = None,
    gap: int = 2,
) -> Path:
    """Tile ``(N, H, W, C)`` images in ``[0, 1]`` into one PNG, ``columns`` wide, each upscaled ``scale`` x
    (nearest neighbour, so small samples stay legible) with ``gap`` source pixels of white between tiles.

    ``title`` goes above the grid, ``row_labels`` (one per row) to its left, ``column_labels`` (one per
    column) above the first row, ``tile_labels`` (one per image, e.g. its prompt) above each tile, all
    wrapped to the tile width, and ``colorbar`` to the right."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, H, W, 1|3) array in [0, 1], got shape {images.shape}")
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    for name, labels, expected in (
        ("row_labels", row_labels, rows), ("column_labels", column_labels, columns), ("tile_labels", tile_labels, len(images))
    ):
        if labels is not None and len(labels) != expected:
            raise ValueError(f"{name} must have {expected} labels (one per {name[:-7]}), got {len(labels)}")
    above = [[] for _ in range(rows)]
    if tile_labels is not None:
        above = [list(tile_labels[row * columns : (row + 1) * columns]) for row in range(rows)]
    elif column_labels is not None:
        above[0] = list(column_labels)
    strips = [_tile_grid(images[row * columns : (row + 1) * columns], columns, gap) for row in range(rows)]
    strips = [_scaled(strip if row == rows - 1 else strip[:-gap], scale) for row, strip in enumerate(strips)]
    picture = _compose(strips, images.shape[2] * scale, gap * scale, title, row_labels, above, colorbar)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def _scaled(grid: np.ndarray, scale: int) -> Image.Image:
    picture = Image.fromarray((grid.clip(0, 1) * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def _compose(strips, tile_w, gap, title, row_labels, above, colorbar) -> Image.Image:
    """Stack the scaled row ``strips`` under their label bands, with the title, row labels and colour bar."""
    font, small = _font(), _font(min(FONT_SIZE, max(9, tile_w // 8)))  # labels above narrow tiles get smaller
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [[_wrap(text, tile_w, small) for text in texts] for texts in above]
    bands = [max((_text_size(draw, t, small)[1] for t in texts), default=-2 * MARGIN) + 2 * MARGIN for texts in wrapped]
    left = max((_text_size(draw, t, font)[0] for t in row_labels), default=0) + 2 * MARGIN if row_labels else 0
    title_h = _text_size(draw, title, font)[1] + 2 * MARGIN if title else 0
    grid_h = sum(bands) + sum(strip.height for strip in strips)
    bar = _colorbar_image(colorbar, strips[0].height * len(strips), font) if colorbar else None
    width = left + strips[0].width + (bar.width + MARGIN if bar else 0)
    width = max(width, _text_size(draw, title, font)[0] + 2 * MARGIN if title else 0)
    picture = Image.new("RGB", (width, title_h + grid_h), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((MARGIN, MARGIN), title, fill=TEXT, font=font)
    top = title_h
    for row, (strip, band, texts) in enumerate(zip(strips, bands, wrapped)):
        for column, text in enumerate(texts):
            draw.multiline_text((left + gap + column * (tile_w + gap), top + MARGIN), text, fill=TEXT, font=small)
        top += band
        picture.paste(strip, (left, top))
        if row_labels:
            text_h = _text_size(draw, row_labels[row], font)[1]
            draw.text((MARGIN, top + (strip.height - text_h) // 2), row_labels[row], fill=TEXT, font=font)
        top += strip.height
    if bar:
        picture.paste(bar, (left + strips[0].width + MARGIN, title_h + bands[0]))
    return picture


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
