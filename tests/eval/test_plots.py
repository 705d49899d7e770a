"""save_image_grid: gaps between tiles, titles, row/column/tile labels and a colour bar."""

import numpy as np
import pytest
from PIL import Image

from selfgen.eval.plots import ColorBar, save_image_grid


def read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_tiles_are_separated_by_white_gaps(tmp_path):
    black = np.zeros((3, 4, 4, 1))
    pixels = read(save_image_grid(black, tmp_path / "g.png", columns=3, scale=2, gap=1))
    # gap | tile | gap | tile | gap | tile | gap, all scaled 2x: 2 + 3 * (8 + 2) = 32 wide, 2 + 8 + 2 = 12 high
    assert pixels.shape == (12, 32, 3)
    row = pixels[6, :, 0]
    assert (row[:2] == 255).all() and (row[2:10] == 0).all() and (row[10:12] == 255).all() and (row[12:20] == 0).all()


def test_labels_and_title_add_bands_with_text(tmp_path):
    images = np.zeros((4, 8, 8, 3))
    plain = read(save_image_grid(images, tmp_path / "plain.png", columns=2))
    labelled = read(save_image_grid(
        images, tmp_path / "labelled.png", columns=2, title="what this shows", row_labels=["level 0", "level 1"],
        column_labels=["view A", "view B"],
    ))
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    band = labelled[: labelled.shape[0] - plain.shape[0]]
    assert (band < 128).any()  # dark text drawn in the title/label band
    left = labelled[-plain.shape[0]:, : labelled.shape[1] - plain.shape[1]]
    assert (left < 128).any()  # row labels drawn left of the grid


def test_colorbar_runs_from_high_at_the_top_to_low_at_the_bottom(tmp_path):
    images = np.full((2, 8, 8, 3), 0.5)
    bar = ColorBar("reward", lambda v: np.stack([1 - v, v, 0 * v], -1))
    plain = read(save_image_grid(images, tmp_path / "plain.png", columns=2))
    pixels = read(save_image_grid(images, tmp_path / "bar.png", columns=2, colorbar=bar))
    strip = pixels[:, plain.shape[1] + 8]  # a column inside the gradient strip
    assert strip[1, 1] > 200 and strip[1, 0] < 50  # green (1) on top
    assert strip[-2, 0] > 200 and strip[-2, 1] < 50  # red (0) at the bottom


def test_label_counts_must_match(tmp_path):
    with pytest.raises(ValueError, match=r"row_labels must have 2 labels \(one per row\), got 1"):
        save_image_grid(np.zeros((4, 4, 4, 1)), tmp_path / "g.png", columns=2, row_labels=["a"])
    with pytest.raises(ValueError, match=r"tile_labels must have 4 labels \(one per tile\), got 3"):
        save_image_grid(np.zeros((4, 4, 4, 1)), tmp_path / "g.png", columns=2, tile_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="non-empty"):
        save_image_grid(np.zeros((0, 4, 4, 1)), tmp_path / "g.png")
