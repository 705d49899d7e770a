"""scikit-learn's bundled ``load_digits`` (1,797 8x8 handwritten digits) as an image dataset.

Images are upsampled to ``resolution`` (16 by default) with bilinear interpolation and scaled to
``[-1, 1]``, one channel. The train/test split is fixed: a stratified split seeded by ``split_seed``
so every run, test and benchmark sees the same held-out digits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGITS_SPLITS = ("train", "test", "all")


def load_digits_arrays(
    split: str = "train", resolution: int = 16, test_fraction: float = 0.2, split_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: images ``(N, 1, resolution, resolution)`` float32 in ``[-1, 1]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in DIGITS_SPLITS:
        raise ValueError(f"split must be one of {DIGITS_SPLITS}, got {split!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 (the digits are 8x8), got {resolution}")
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    if split != "all":
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, random_state=split_seed, stratify=labels
        )
        index = train_idx if split == "train" else test_idx
        images, labels = images[index], labels[index]
    pixels = torch.from_numpy(images).unsqueeze(1)
    if resolution != 8:
        pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return pixels.clamp(0, 1) * 2 - 1, torch.from_numpy(labels)


class DigitsDataset(Dataset):
    """``load_digits`` as ``{"pixel_values": (1, R, R) in [-1, 1], "label": int}`` examples."""

    def __init__(self, split: str = "train", resolution: int = 16, test_fraction: float = 0.2, split_seed: int = 0):
        self.images, self.labels = load_digits_arrays(split, resolution, test_fraction, split_seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "label": self.labels[index]}
