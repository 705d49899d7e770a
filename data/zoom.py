"""Multi-scale patches of large images (ZoomLDM, Yellapragada et al. 2025).

A large image is seen through fixed-size ``patch_size`` patches at ``num_levels`` magnifications.
A patch at level ``k`` covers ``patch_size * 2**k`` source pixels, area-downsampled by ``2**k`` to
``patch_size``: level 0 is the highest magnification (full resolution), level ``num_levels - 1``
the lowest. Patch corners lie on the level-0 grid (multiples of ``patch_size`` source pixels);
level 0 patches do not overlap, level ``k >= 1`` patches overlap by half (stride ``patch_size * 2**(k-1)``),
so low magnifications have far fewer patches, as in whole-slide images.

Every patch also knows its **level-0 sub-grid**: the ``2**k x 2**k`` full-resolution patches it
covers. Their self-supervised embeddings, average-pooled to at most ``max_grid x max_grid``, are
the patch's conditioning (see ``models/zoomldm.py``); :meth:`ZoomPatchDataset.attach_embeddings`
receives them once an SSL encoder exists (the data layer never imports models).

**Held-out split.** The right-most ``held_out_fraction`` (25%) of the columns of every image is
held out: ``split="train"`` patches lie entirely left of column ``floor(0.75 * W)`` and
``split="test"`` patches entirely right of it, so no test pixel is ever a training pixel.

Sources: bundled scikit-image photos (:data:`BUNDLED_IMAGES`, no download) or a folder of the
user's own large images (PNG/TIFF/JPEG/BMP/WebP, any size), validated up front.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .common import find_files
from .images import IMAGE_EXTENSIONS, verify_image

BUNDLED_IMAGES = ("retina", "immunohistochemistry", "hubble_deep_field")
ZOOM_SPLITS = ("train", "test", "all")
HELD_OUT_FRACTION = 0.25

Image.MAX_IMAGE_PIXELS = None  # large images are the point here


def load_bundled_image(name: str) -> torch.Tensor:
    """scikit-image photo ``name`` as ``(3, H, W)`` float32 in ``[0, 1]`` (grayscale repeated to RGB)."""
    if name not in BUNDLED_IMAGES:
        raise ValueError(f"unknown bundled image {name!r}; expected one of {BUNDLED_IMAGES}")
    from skimage import data

    pixels = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def load_image_file(path: str | Path) -> torch.Tensor:
    """The image file ``path`` as ``(3, H, W)`` float32 in ``[0, 1]``; a corrupt file is a ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    verify_image(path)
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as error:
        raise ValueError(f"could not decode image {path}: {error}") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def load_large_images(source: str | Path | list[str]) -> list[tuple[str, torch.Tensor]]:
    """``[(name, (3, H, W) image)]`` from a folder of images, one image file, or bundled names."""
    if isinstance(source, (list, tuple)):
        return [(name, load_bundled_image(name)) for name in source]
    path = Path(source)
    if path.is_file():
        return [(path.name, load_image_file(path))]
    root, files = find_files(path, IMAGE_EXTENSIONS, "image")
    return [(str(file.relative_to(root)), load_image_file(file)) for file in files]


def min_image_side(patch_size: int, num_levels: int, held_out_fraction: float = HELD_OUT_FRACTION) -> int:
    """The smallest side an image needs so both splits hold one lowest-magnification patch."""
    largest = patch_size * 2 ** (num_levels - 1)
    return int(np.ceil(largest / min(held_out_fraction, 1 - held_out_fraction)))


def split_bounds(width: int, split: str, held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[int, int]:
    """``[start, stop)`` source columns of ``split``: the right-most ``held_out_fraction`` is ``"test"``."""
    if split not in ZOOM_SPLITS:
        raise ValueError(f"split must be one of {ZOOM_SPLITS}, got {split!r}")
    boundary = int(width * (1 - held_out_fraction))
    return {"train": (0, boundary), "test": (boundary, width), "all": (0, width)}[split]


def level_stride(level: int, patch_size: int) -> int:
    """Source-pixel stride of level ``level``: ``patch_size`` at level 0, half a patch's extent above."""
    return patch_size * 2 ** max(level - 1, 0)


@dataclass
class PatchIndex:
    """Where one patch is: image ``image``, level ``level``, top-left ``(top, left)`` in source pixels."""

    image: int
    level: int
    top: int
    left: int


def patch_positions(height: int, start: int, stop: int, level: int, patch_size: int) -> list[tuple[int, int]]:
    """Top-left corners of level-``level`` patches inside rows ``[0, height)`` and columns ``[start, stop)``,
    on the level-0 grid (``start`` rounded up to a multiple of ``patch_size``)."""
    extent, stride = patch_size * 2**level, level_stride(level, patch_size)
    first = -(-start // patch_size) * patch_size
    rows = range(0, height - extent + 1, stride)
    columns = range(first, stop - extent + 1, stride)
    return [(top, left) for top in rows for left in columns]


def area_downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """``(..., C, H, W)`` averaged over ``factor x factor`` blocks (the ``2**k`` pyramid level)."""
    return image if factor == 1 else F.avg_pool2d(image, factor)


class ZoomPatchDataset(Dataset):
    """Multi-scale ``patch_size`` patches of large images, with their level (= magnification).

    Items: ``{"pixel_values": (3, P, P) in [-1, 1], "magnification": int64 level}``, plus, once
    :meth:`attach_embeddings` was called, ``"ssl_tokens": (max_grid**2, D)`` and ``"ssl_mask":
    (max_grid**2,)`` bool (the pooled sub-grid embeddings, valid tokens first).

    Args:
        source: a folder of images, one image file, or a list of :data:`BUNDLED_IMAGES` names.
        split: ``"train"`` (left 75% of columns), ``"test"`` (right 25%) or ``"all"``.
        levels: magnification levels to take patches from (default all ``num_levels``).
    """

    def __init__(
        self,
        source: str | Path | list[str],
        split: str = "train",
        patch_size: int = 32,
        num_levels: int = 4,
        levels: list[int] | None = None,
        max_grid: int = 4,
        held_out_fraction: float = HELD_OUT_FRACTION,
    ) -> None:
        if patch_size < 4 or num_levels < 1 or max_grid < 1:
            raise ValueError(
                f"need patch_size >= 4, num_levels >= 1 and max_grid >= 1; got {patch_size}, {num_levels}, {max_grid}"
            )
        self.levels = list(range(num_levels)) if levels is None else list(levels)
        if not self.levels or any(not 0 <= level < num_levels for level in self.levels):
            raise ValueError(f"levels must be a non-empty subset of range({num_levels}), got {levels}")
        self.patch_size, self.num_levels, self.max_grid, self.split = patch_size, num_levels, max_grid, split
        self.held_out_fraction = held_out_fraction
        self.images = load_large_images(source)
        self._check_sizes()
        self.pyramids = [[area_downsample(image, 2**level) for level in range(num_levels)] for _, image in self.images]
        self.index = self._build_index()
        self.embedding_grids: list[torch.Tensor] | None = None

    def _check_sizes(self) -> None:
        needed = min_image_side(self.patch_size, self.num_levels, self.held_out_fraction)
        for name, image in self.images:
            height, width = image.shape[-2:]
            if min(height, width) < needed:
                raise ValueError(
                    f"image {name} is {width}x{height}; with patch_size={self.patch_size} and num_levels="
                    f"{self.num_levels} every image needs sides >= {needed} pixels (one lowest-magnification "
                    "patch in both the training and the held-out columns)"
                )

    def _build_index(self) -> list[PatchIndex]:
        index = []
        for image_id, (_, image) in enumerate(self.images):
            height, width = image.shape[-2:]
            start, stop = split_bounds(width, self.split, self.held_out_fraction)
            for level in self.levels:
                for top, left in patch_positions(height, start, stop, level, self.patch_size):
                    index.append(PatchIndex(image_id, level, top, left))
        return index

    def __len__(self) -> int:
        return len(self.index)

    def level_counts(self) -> dict[int, int]:
        return {level: sum(entry.level == level for entry in self.index) for level in self.levels}

    def patch(self, entry: PatchIndex) -> torch.Tensor:
        """The ``(3, P, P)`` patch in ``[0, 1]``."""
        factor, size = 2**entry.level, self.patch_size
        top, left = entry.top // factor, entry.left // factor
        return self.pyramids[entry.image][entry.level][:, top : top + size, left : left + size]

    def level0_grid(self, image_id: int) -> torch.Tensor:
        """All full-resolution patches of image ``image_id`` on the level-0 grid: ``(rows, cols, 3, P, P)`` in
        ``[0, 1]`` (the whole image: patches of both splits only read their own cells)."""
        image, size = self.images[image_id][1], self.patch_size
        rows, cols = image.shape[-2] // size, image.shape[-1] // size
        cropped = image[:, : rows * size, : cols * size]
        return cropped.reshape(3, rows, size, cols, size).permute(1, 3, 0, 2, 4)

    def attach_embeddings(self, grids: list[torch.Tensor]) -> None:
        """Set the ``(rows, cols, D)`` SSL embeddings of every image's :meth:`level0_grid`."""
        if len(grids) != len(self.images):
            raise ValueError(f"attach_embeddings needs one grid per image ({len(self.images)}), got {len(grids)}")
        self.embedding_grids = grids

    def conditioning(self, entry: PatchIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (max_grid**2, D), mask)`` of ``entry``: its sub-grid embeddings pooled to
        ``g = min(2**level, max_grid)`` per side, row-major, valid tokens first, zeros after."""
        grid = self.embedding_grids[entry.image]
        cells, size = 2**entry.level, self.patch_size
        row, col = entry.top // size, entry.left // size
        return pool_embedding_grid(grid[row : row + cells, col : col + cells], self.max_grid)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.index[index]
        item = {"pixel_values": self.patch(entry) * 2 - 1, "magnification": torch.tensor(entry.level)}
        if self.embedding_grids is not None:
            item["ssl_tokens"], item["ssl_mask"] = self.conditioning(entry)
        return item


def pool_embedding_grid(grid: torch.Tensor, max_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool a ``(n, n, D)`` embedding grid to ``g = min(n, max_grid)`` per side and lay it out as
    ``max_grid**2`` tokens (row-major, valid first) with a boolean mask of the valid ones."""
    cells, dim = grid.shape[0], grid.shape[-1]
    side = min(cells, max_grid)
    pooled = F.adaptive_avg_pool2d(grid.permute(2, 0, 1), side).permute(1, 2, 0).reshape(side * side, dim)
    tokens = torch.zeros(max_grid * max_grid, dim, dtype=grid.dtype)
    tokens[: side * side] = pooled
    mask = torch.arange(max_grid * max_grid) < side * side
    return tokens, mask


class UniformMagnificationDataset(Dataset):
    """Draw a magnification uniformly, then a patch of that magnification uniformly (the official loader's
    sampling): every level is ``1 / K`` of the batches whatever its patch count, instead of the patch-count
    proportions of shuffling ``dataset`` (retina: level 3 would be 2% of batches, not 25%).

    ``__getitem__`` ignores its index and draws from a ``numpy`` generator seeded with ``seed`` (deterministic in
    one process; with ``num_workers > 0`` every worker copies the generator, as ``np.random`` does in the official
    loader). ``len`` is that of ``dataset``, so an epoch is as long as before."""

    def __init__(self, dataset: ZoomPatchDataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.rng = np.random.default_rng(seed)
        by_level: dict[int, list[int]] = {}
        for position, entry in enumerate(dataset.index):
            by_level.setdefault(entry.level, []).append(position)
        self.by_level = [np.asarray(positions) for _, positions in sorted(by_level.items())]
        if not self.by_level:
            raise ValueError("UniformMagnificationDataset needs a dataset with at least one patch")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        positions = self.by_level[self.rng.integers(len(self.by_level))]
        return self.dataset[int(positions[self.rng.integers(len(positions))])]
