"""A small multiple-instance-learning (MIL) probe of ZoomLDM's multi-scale features.

The paper reports that features extracted from ZoomLDM at several magnifications help slide-level MIL
classification more than single-magnification features. This is that experiment in miniature:

* **Bag** = one square region of ``P 2^L`` source pixels (``L = bag_level``, 128 px by default) from the
  **held-out** right-most 25% of an image's columns (regions on the level-0 grid, stride ``P``).
* **Instances at level k** = the region area-downsampled by ``2^k`` and cut into its ``4^(L-k)``
  ``P x P`` patches (level 0: 16 full-resolution patches; level L: one thumbnail).
* **Bag feature** = mean over instances (mean-pool MIL) for each level; *single-scale* uses level 0 only,
  *multi-scale* concatenates levels ``0..L``.
* **Feature families**: ``pixels`` (each instance area-downsampled to ``8 x 8``, flattened), ``ssl`` (the
  pipeline's SSL encoder), ``zoomldm`` (the denoiser's last-block states averaged over tokens, or a UNet's
  mid-block output averaged over positions, for the instance's latent noised to ``timestep`` with one fixed
  noise sample, conditioned on the instance's own SSL grid through the summarizer at magnification ``k``;
  the paper's "ZoomLDM features").
* **Classifier**: standardised logistic regression (:func:`selfgen.eval.probe.linear_probe`), stratified
  ``folds``-fold cross-validated accuracy over bags.

Tasks (:func:`mil_probe`):

* ``"source"``: which bundled image a held-out region comes from (retina / immunohistochemistry /
  hubble_deep_field), bags balanced by evenly spaced picks.
* ``"arrangement"`` (constructed): each held-out region intact vs the same region with its level-0 patches
  randomly permuted. Both bags hold the same multiset of level-0 instances, so mean-pooled level-0
  features are identical within a pair (single-scale is at chance by construction) and only coarser
  magnifications -- which see how the patches fit together -- can tell them apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedGroupKFold

from ..data.zoom import HELD_OUT_FRACTION, load_bundled_image, split_bounds
from .probe import linear_probe

__all__ = [
    "MIL_FAMILIES",
    "MIL_TASKS",
    "held_out_regions",
    "shuffle_patches",
    "bag_features",
    "denoiser_features",
    "cross_validated_accuracy",
    "mil_probe",
]

MIL_FAMILIES = ("pixels", "ssl", "zoomldm")
MIL_TASKS = ("source", "arrangement")
PIXEL_SIDE = 8


def held_out_regions(
    image: torch.Tensor, size: int, stride: int, held_out_fraction: float = HELD_OUT_FRACTION
) -> tuple[torch.Tensor, np.ndarray]:
    """All ``(3, size, size)`` regions of a ``(3, H, W)`` image lying in its held-out columns, corners on a
    ``stride`` grid (columns rounded up to it): ``(regions (n, 3, size, size), tops (n,))``."""
    height, width = image.shape[-2:]
    start, stop = split_bounds(width, "test", held_out_fraction)
    first = -(-start // stride) * stride
    corners = [(top, left) for top in range(0, height - size + 1, stride) for left in range(first, stop - size + 1, stride)]
    if not corners:
        raise ValueError(f"image of {width}x{height} holds no {size}-px region in its held-out columns [{start}, {stop})")
    regions = torch.stack([image[:, top : top + size, left : left + size] for top, left in corners])
    return regions, np.array([top for top, _ in corners])


def split_squares(regions: torch.Tensor, side: int) -> torch.Tensor:
    """``(n, 3, S, S)`` -> ``(n, (S/side)^2, 3, side, side)``, row-major."""
    count, channels, size, _ = regions.shape
    cells = size // side
    grid = regions.reshape(count, channels, cells, side, cells, side).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(count, cells * cells, channels, side, side)


def shuffle_patches(regions: torch.Tensor, patch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Each region with its ``patch_size`` patches randomly permuted (one permutation per region)."""
    count, channels, size, _ = regions.shape
    cells = size // patch_size
    squares = split_squares(regions, patch_size)
    order = torch.stack([torch.randperm(cells * cells, generator=generator) for _ in range(count)])
    shuffled = torch.gather(squares, 1, order[:, :, None, None, None].expand_as(squares))
    grid = shuffled.reshape(count, cells, cells, channels, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(count, channels, size, size)


@torch.no_grad()
def instance_features(pipe, squares: torch.Tensor, level: int, family: str, timestep: int) -> torch.Tensor:
    """Features ``(m, D)`` of ``m`` full-resolution ``(3, P 2^k, P 2^k)`` squares in ``[0, 1]`` seen at level ``k``."""
    instances = F.avg_pool2d(squares, 2**level) if level else squares
    if family == "pixels":
        return F.adaptive_avg_pool2d(instances, PIXEL_SIDE).flatten(1)
    pixels = instances * 2 - 1
    if family == "ssl":
        return pipe.ssl_encoder(pixels.to(pipe.ssl_encoder.dtype)).float()
    tokens, mask = pipe.embed_regions(squares * 2 - 1, level)
    context = pipe.context(tokens, mask, level, 1.0)
    latents = pipe.encode_latents(pixels)
    noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(0)).expand_as(latents)
    noisy = pipe.scheduler.add_noise(latents, noise.to(latents.dtype), torch.tensor([timestep]))
    return denoiser_features(pipe.denoiser, noisy.to(pipe.denoiser.dtype), timestep, context).float()


def denoiser_features(denoiser, latents: torch.Tensor, timestep: int, context: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` ZoomLDM features: a :class:`ZoomLDMDenoiser`'s last-block states averaged over tokens, or a diffusers
    ``UNet2DConditionModel``'s mid-block output (its deepest, lowest-resolution features) averaged over positions."""
    if hasattr(denoiser, "pooled_features"):
        return denoiser.pooled_features(latents, timestep, context)
    captured = []
    handle = denoiser.mid_block.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        denoiser(latents, timestep, encoder_hidden_states=context)
    finally:
        handle.remove()
    return captured[0].mean(dim=(2, 3))


def bag_features(pipe, regions: torch.Tensor, levels: list[int], family: str, timestep: int = 100) -> np.ndarray:
    """Mean-pooled instance features of every ``(n, 3, S, S)`` region (``[0, 1]``) at each of ``levels``,
    concatenated: ``(n, len(levels) D)``."""
    if family not in MIL_FAMILIES:
        raise ValueError(f"family must be one of {MIL_FAMILIES}, got {family!r}")
    size = pipe.patch_size
    pooled = []
    for level in levels:
        squares = split_squares(regions, size * 2**level)
        count, per_bag = squares.shape[:2]
        features = instance_features(pipe, squares.flatten(0, 1), level, family, timestep)
        pooled.append(features.reshape(count, per_bag, -1).mean(dim=1))
    return torch.cat(pooled, dim=1).numpy()


def cross_validated_accuracy(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0
) -> float:
    """Mean accuracy of :func:`linear_probe` over stratified ``folds``-fold splits of the bags that keep each
    group (a spatial band of one image; an intact/shuffled pair) inside one fold."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = [
        linear_probe(features[train], labels[train], features[test], labels[test])
        for train, test in splitter.split(features, labels, groups)
    ]
    return float(np.mean(scores))


def task_bags(
    task: str, images: list[str], size: int, patch_size: int, max_bags: int, seed: int, min_std: float = 0.05
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``(regions (n, 3, S, S) in [0, 1], labels (n,), groups (n,))`` of ``task`` on the held-out columns of
    bundled ``images`` (corners every ``patch_size`` pixels, at most ``max_bags`` evenly spaced per image).
    Groups are ``S``-pixel row bands of one image, so overlapping regions stay in one fold. The
    ``arrangement`` task keeps regions whose pixel standard deviation is at least ``min_std`` (shuffling
    a flat region changes nothing) and gives both bags of a pair the intact region's group."""
    if task not in MIL_TASKS:
        raise ValueError(f"task must be one of {MIL_TASKS}, got {task!r}")
    chosen, groups = [], []
    for index, name in enumerate(images):
        regions, tops = held_out_regions(load_bundled_image(name), size, patch_size)
        if task == "arrangement":
            keep = regions.flatten(1).std(dim=1).numpy() >= min_std
            regions, tops = regions[torch.from_numpy(keep)], tops[keep]
        picks = np.linspace(0, len(regions) - 1, min(max_bags, len(regions))).astype(int)
        chosen.append(regions[torch.from_numpy(picks)])
        groups.append(index * 100_000 + tops[picks] // size)
    regions, groups = torch.cat(chosen), np.concatenate(groups)
    if task == "source":
        return regions, np.concatenate([np.full(len(part), index) for index, part in enumerate(chosen)]), groups
    shuffled = shuffle_patches(regions, patch_size, torch.Generator().manual_seed(seed))
    return torch.cat([regions, shuffled]), np.repeat([0, 1], len(regions)), np.tile(groups, 2)


def mil_probe(
    pipe,
    task: str = "arrangement",
    images: list[str] | None = None,
    bag_level: int = 2,
    families: tuple[str, ...] = MIL_FAMILIES,
    max_bags: int = 48,
    timestep: int = 100,
    folds: int = 5,
    seed: int = 0,
    bags: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Cross-validated MIL accuracy ``{family: {"single_scale": acc, "multi_scale": acc}}`` plus the bag count
    and chance level, for ``task`` on held-out regions of bundled ``images`` (or the given ``bags``:
    ``(regions (n, 3, P 2^L, P 2^L) in [0, 1], labels, groups)``)."""
    if not 1 <= bag_level < pipe.num_levels:
        raise ValueError(f"bag_level must be a trained level in [1, {pipe.num_levels - 1}], got {bag_level}")
    size = pipe.patch_size * 2**bag_level
    images = images or ["retina", "immunohistochemistry", "hubble_deep_field"]
    regions, labels, groups = bags if bags is not None else task_bags(task, images, size, pipe.patch_size, max_bags, seed)
    scores: dict = {"num_bags": len(labels), "chance": float(np.bincount(labels).max() / len(labels))}
    for family in families:
        multi = bag_features(pipe, regions, list(range(bag_level + 1)), family, timestep)
        single_width = multi.shape[1] // (bag_level + 1)
        scores[family] = {
            "single_scale": cross_validated_accuracy(multi[:, :single_width], labels, groups, folds, seed),
            "multi_scale": cross_validated_accuracy(multi, labels, groups, folds, seed),
        }
    return scores
