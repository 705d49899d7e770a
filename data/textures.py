"""Texture/source recognition: 32x32 RGB crops of scikit-image's bundled photos, one class per photo.

Ten photos that ship inside scikit-image (no download) are the ten classes. Each photo is resized so
its shorter side is ``image_side`` pixels and split at ``(1 - test_fraction)`` of its width: training
crops (``crop_size`` squares on a ``crop_size // 2`` stride) lie entirely in the left part and test
crops entirely in the right part, so train and test crops come from disjoint regions of each photo.
Grayscale photos are repeated to RGB.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

TEXTURE_SOURCES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "rocket", "text")
TEXTURE_SPLITS = ("train", "test")


def _source_image(name: str, side: int) -> np.ndarray:
    """Photo ``name`` as ``(H, W, 3)`` float32 in ``[0, 1]``, the shorter side resized to ``side``."""
    from skimage import data

    pixels = getattr(data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    scale = side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def load_texture_arrays(
    split: str = "train", crop_size: int = 32, image_side: int = 192, test_fraction: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: images ``(N, 3, crop_size, crop_size)`` float32 in ``[-1, 1]``, labels
    ``(N,)`` int64 in ``[0, 10)`` (the index of the source photo in :data:`TEXTURE_SOURCES`)."""
    if split not in TEXTURE_SPLITS:
        raise ValueError(f"split must be one of {TEXTURE_SPLITS}, got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if image_side * test_fraction < crop_size:
        raise ValueError(
            f"image_side ({image_side}) * test_fraction ({test_fraction}) must be >= crop_size ({crop_size}) "
            "so that the test region holds a crop"
        )
    stride = crop_size // 2
    crops, labels = [], []
    for label, name in enumerate(TEXTURE_SOURCES):
        photo = _source_image(name, image_side)
        height, width = photo.shape[:2]
        boundary = round(width * (1 - test_fraction))
        low, high = (0, boundary) if split == "train" else (boundary, width)
        for top in range(0, height - crop_size + 1, stride):
            for left in range(low, high - crop_size + 1, stride):
                crops.append(photo[top : top + crop_size, left : left + crop_size])
                labels.append(label)
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2) * 2 - 1
    return images.contiguous(), torch.tensor(labels, dtype=torch.int64)


class TextureCropsDataset(Dataset):
    """:func:`load_texture_arrays` as ``{"pixel_values": (3, S, S) in [-1, 1], "label": int}`` examples."""

    def __init__(self, split: str = "train", crop_size: int = 32, image_side: int = 192, test_fraction: float = 0.3):
        self.images, self.labels = load_texture_arrays(split, crop_size, image_side, test_fraction)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "label": self.labels[index]}
