"""A folder of the user's images, following the Hugging Face ``imagefolder`` convention.

Images (png, jpg, jpeg, bmp, webp, tif, tiff) are found recursively under ``root``. An optional
``metadata.jsonl`` next to them holds one JSON object per image: ``{"file_name": "a/b.png",
"caption": "...", "label": 3}``, where ``caption`` (str) and ``label`` (int) are optional but, when
given, given for every image. Everything is validated when the dataset is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

from .common import ReportsSkips, SkipLog, expect_type, find_files, load_metadata

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CHANNEL_MODES = {1: "L", 3: "RGB"}
METADATA_FIELDS = {"caption": expect_type(str, "a string"), "label": expect_type(int, "an integer")}


def verify_image(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless PIL can open, verify and fully decode it.

    ``verify()`` checks headers and chunk checksums only; a truncated JPEG or a PNG whose compressed
    data is corrupt passes it and fails at the first ``__getitem__``, so every pixel is decoded here."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt or unreadable image {path}: {error}") from None


def image_transform(resolution: int, channels: int, center_crop: bool, random_flip: bool) -> transforms.Compose:
    """Resize the shorter side to ``resolution``, crop a square, optionally flip, scale to ``[-1, 1]``."""
    crop = transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution)
    steps = [transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR), crop]
    if random_flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    return transforms.Compose(steps)


class ImageFolderDataset(ReportsSkips, Dataset):
    """Images under ``root`` as ``{"pixel_values": (C, R, R) float32 in [-1, 1]}`` items.

    Items also carry ``"caption"`` (str) and/or ``"label"`` (int64 tensor) when ``metadata_file``
    gives them. Corrupt images raise ``ValueError`` naming the file, or with ``on_error="skip"``
    are left out and counted in ``num_skipped``.
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int,
        channels: int = 3,
        center_crop: bool = True,
        random_flip: bool = False,
        metadata_file: str = "metadata.jsonl",
        on_error: str = "raise",
    ):
        if channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution}")
        self.skip_log = SkipLog(on_error)
        self.root, files = find_files(root, IMAGE_EXTENSIONS, "image")
        metadata_path = self.root / metadata_file
        records = load_metadata(metadata_path, self.root, files, METADATA_FIELDS) if metadata_path.is_file() else None
        kept = {path for path, _ in self.skip_log.probe_all(files, verify_image)}
        if not kept:
            raise ValueError(f"none of the {len(files)} image files under {self.root} could be read")
        self.files = [path for path in files if path in kept]
        self.metadata = (
            [record.fields for path, record in zip(files, records, strict=True) if path in kept] if records else None
        )
        self.mode = CHANNEL_MODES[channels]
        self.transform = image_transform(resolution, channels, center_crop, random_flip)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert(self.mode))
        except OSError as error:
            raise ValueError(f"could not decode image {path}: {error}") from None
        item: dict[str, Any] = {"pixel_values": pixels}
        if self.metadata is not None:
            item.update(self.metadata[index])
            if "label" in item:
                item["label"] = torch.tensor(item["label"], dtype=torch.int64)
        return item
