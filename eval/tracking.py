"""A judge for motion + appearance customisation that shares no weights with the model: template matching.

For every entity, the template is its reference image cropped to the sprite (pixels that differ from the
reference's plain background). In every frame the tracker places the template where the masked mean squared
difference to the frame is lowest; the template's centre there is the tracked position. From the tracks:

* ``trajectory_error``: mean Euclidean distance between tracked and requested centres, normalised coordinates;
* ``appearance_similarity``: ``1 - mean |frame - template|`` over the sprite's pixels at the tracked place,
  in ``[0, 1]`` (1 = the reference appearance, pixel for pixel);
* ``swap_rate``: over videos with two or more entities, the fraction whose tracks fit another assignment of
  the requested paths better than the intended one (two entities exchanging paths).

:func:`path_binding` (the colour along each entity's path vs the reference colours) and :func:`retrieval_top1`
are the probes of a model's clean estimate and contrastive embeddings at ``sigma = 1`` (``selfgen eval tora2``).

Each comes with its standard error (``*_se``: the binomial ``sqrt(p (1 - p) / n)`` over the multi-entity videos
for the swap rate, the standard error of the mean over entities for the others), and ``swap_chance`` is the
swap rate of tracks that carry no information about the paths (``1 - 1/K!`` for a video of ``K`` entities,
averaged over the multi-entity videos).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .statistics import standard_error

BACKGROUND_TOLERANCE = 0.08
TRACK_COLORS = ((255, 255, 255), (255, 64, 64), (64, 255, 64))


def sprite_template(reference_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(template (h, w, 3), mask (h, w), centre offset (x, y) in pixels)`` cropped from a reference image
    whose corner pixel is its plain background; the centre offset locates the image centre in the crop."""
    reference = np.asarray(reference_image, dtype=np.float32)
    if reference.ndim != 3 or reference.shape[-1] != 3:
        raise ValueError(f"reference_image must be (h, w, 3), got shape {reference.shape}")
    mask = np.abs(reference - reference[0, 0]).max(-1) > BACKGROUND_TOLERANCE
    if not mask.any():
        raise ValueError("reference_image shows nothing but its background colour; cannot build a template")
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    offset = np.array([reference.shape[1] / 2 - left, reference.shape[0] / 2 - top], np.float32)
    return reference[top:bottom, left:right], mask[top:bottom, left:right], offset


def track(video: np.ndarray, reference_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track one entity: ``(positions (F, 2) normalised (x, y), appearance similarity (F,))``."""
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (F, H, W, 3) in [0, 1], got shape {video.shape}")
    template, mask, offset = sprite_template(reference_image)
    height, width = template.shape[:2]
    if height > video.shape[1] or width > video.shape[2]:
        raise ValueError(f"template {template.shape[:2]} is larger than the frames {video.shape[1:3]}")
    frames = torch.from_numpy(video).permute(0, 3, 1, 2)
    windows = F.unfold(frames, (height, width))  # (F, 3*h*w, L)
    flat_template = torch.from_numpy(template).permute(2, 0, 1).reshape(-1, 1)
    flat_mask = torch.from_numpy(np.broadcast_to(mask, (3, *mask.shape)).reshape(-1, 1).astype(np.float32))
    difference = (windows - flat_template) * flat_mask
    count = flat_mask.sum()
    squared = difference.pow(2).sum(1) / count
    best = squared.argmin(1)
    grid_width = video.shape[2] - width + 1
    rows, cols = (best // grid_width).numpy(), (best % grid_width).numpy()
    centres = np.stack([cols + offset[0], rows + offset[1]], axis=1) / np.float32([video.shape[2], video.shape[1]])
    absolute = difference.abs().sum(1) / count
    similarity = 1 - absolute.gather(1, best[:, None])[:, 0].numpy()
    return centres.astype(np.float32), similarity.astype(np.float32)


def _is_swapped(tracks: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> bool:
    """Whether another assignment of ``targets`` to ``tracks`` has a lower total mean distance."""
    distance = np.array([[np.linalg.norm(t - p, axis=-1).mean() for p in targets] for t in tracks])
    identity = np.trace(distance)
    return any(
        distance[range(len(tracks)), list(order)].sum() < identity - 1e-9
        for order in itertools.permutations(range(len(tracks)))
    )


def shuffled_partners(items: Sequence[dict], seed: int) -> list[int | None]:
    """For each video, another video with at least as many entities (drawn with ``seed``), or ``None`` when
    there is none: the donor of the shuffled controls, so no path or appearance is ever used twice."""
    rng = np.random.default_rng(seed)
    counts = [len(item["entities"]) for item in items]
    partners: list[int | None] = []
    for index, count in enumerate(counts):
        candidates = [other for other, size in enumerate(counts) if other != index and size >= count]
        partners.append(int(rng.choice(candidates)) if candidates else None)
    return partners


def evaluate_tracking(frames: np.ndarray, items: Sequence[dict], shuffle_seed: int | None = None) -> dict[str, Any]:
    """Track every entity of every video ``frames[i]`` (``(N, F, H, W, 3)`` in ``[0, 1]``) by its
    ``reference_image`` and score the tracks against the requested ``trajectory`` of ``items[i]["entities"]``.

    With ``shuffle_seed`` (the shuffled-trajectory control) the tracks are scored against the first paths of a
    :func:`shuffled_partners` video instead (distinct paths, so a swap is always decidable); videos without a
    partner are left out. ``per_video`` holds each video's mean trajectory error and appearance similarity and
    its swap indicator (``nan`` for a single entity), for paired comparisons across models."""
    if len(frames) != len(items):
        raise ValueError(f"got {len(frames)} videos but {len(items)} items")
    paths = [[np.asarray(e["trajectory"], np.float32) for e in item["entities"]] for item in items]
    if shuffle_seed is None:
        targets: list[list[np.ndarray] | None] = paths
    else:
        partners = shuffled_partners(items, shuffle_seed)
        targets = [
            None if partner is None else paths[partner][: len(item["entities"])]
            for item, partner in zip(items, partners)
        ]
    errors, similarities, swaps, chances = [], [], [], []
    per_video: dict[str, list[float]] = {"trajectory_error": [], "appearance_similarity": [], "swapped": []}
    for video, item, video_targets in zip(frames, items, targets):
        if video_targets is None:
            continue
        tracks, video_errors, video_similarities = [], [], []
        for entity, target in zip(item["entities"], video_targets):
            positions, similarity = track(video, entity["reference_image"])
            tracks.append(positions)
            video_errors.append(float(np.linalg.norm(positions - target, axis=-1).mean()))
            video_similarities.append(float(similarity.mean()))
        swapped = float("nan")
        if len(tracks) > 1:
            swapped = float(_is_swapped(tracks, video_targets))
            swaps.append(swapped)
            chances.append(1 - 1 / math.factorial(len(tracks)))
        errors += video_errors
        similarities += video_similarities
        per_video["trajectory_error"].append(float(np.mean(video_errors)))
        per_video["appearance_similarity"].append(float(np.mean(video_similarities)))
        per_video["swapped"].append(swapped)
    return {
        "trajectory_error": float(np.mean(errors)),
        "trajectory_error_se": standard_error(errors),
        "appearance_similarity": float(np.mean(similarities)),
        "appearance_similarity_se": standard_error(similarities),
        "swap_rate": float(np.mean(swaps)) if swaps else float("nan"),
        "swap_rate_se": standard_error(swaps),
        "swap_chance": float(np.mean(chances)) if chances else float("nan"),
        "num_entities": len(errors),
        "num_multi_entity_videos": len(swaps),
        "per_video": per_video,
    }


def mean_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean RGB of ``image (..., 3)`` over ``mask`` (same leading shape, weights)."""
    weights = mask[..., None].astype(np.float32)
    return (image * weights).reshape(-1, 3).sum(0) / max(weights.sum(), 1e-6)


def path_colour(video: np.ndarray, trajectory: np.ndarray, radius: float) -> np.ndarray:
    """Mean colour of ``video (F, H, W, 3)`` within ``radius`` pixels of the entity's centre in each frame."""
    frames, height, width = video.shape[:3]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    points = np.asarray(trajectory, np.float32) * np.float32([width, height])
    near = (xs[None] - points[:, 0, None, None]) ** 2 + (ys[None] - points[:, 1, None, None]) ** 2 <= radius**2
    return mean_colour(video, near)


def reference_colour(reference_image: np.ndarray) -> np.ndarray:
    """Mean colour of the sprite's own pixels in its reference image (see :func:`sprite_template`)."""
    template, mask, _ = sprite_template(reference_image)
    return mean_colour(template, mask)


def path_binding(videos: np.ndarray, items: Sequence[dict], radius: float = 2.5) -> dict[str, Any]:
    """The appearance-to-path binding probe: over ordered pairs ``(k, j)`` of entities of a multi-entity video,
    whether the colour of ``videos[i]`` along entity ``k``'s path is nearer ``k``'s reference colour than
    ``j``'s. Applied to the denoiser's clean estimate at ``sigma = 1`` (where the layout is decided) it says
    whether the model puts each entity's appearance on its own path; 0.5 is chance. ``per_video``: each
    multi-entity video's fraction (NaN for single-entity videos), ``binding`` their mean and ``binding_se``."""
    per_video = []
    for video, item in zip(videos, items):
        entities = item["entities"]
        if len(entities) < 2:
            per_video.append(float("nan"))
            continue
        colours = [reference_colour(entity["reference_image"]) for entity in entities]
        hits = []
        for k, entity in enumerate(entities):
            seen = path_colour(video, entity["trajectory"], radius)
            own = np.linalg.norm(seen - colours[k])
            hits += [float(own < np.linalg.norm(seen - colours[j])) for j in range(len(entities)) if j != k]
        per_video.append(float(np.mean(hits)))
    return {"binding": float(np.nanmean(per_video)), "binding_se": standard_error(per_video), "per_video": per_video}


def retrieval_top1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of rows ``i`` of ``queries (N, d)`` whose cosine-nearest row of ``keys (N, d)`` is row ``i`` (chance ``1/N``)."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-8)
    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True).clip(1e-8)
    return float(((queries @ keys.T).argmax(1) == np.arange(len(queries))).mean())


def draw_trajectories(frames: np.ndarray, trajectories: Sequence[np.ndarray], scale: int = 1) -> np.ndarray:
    """``frames (F, H, W, 3)`` in ``[0, 1]``, enlarged ``scale`` times, with each path drawn as a polyline
    and the current frame's point as a dot (one colour per entity)."""
    from PIL import Image, ImageDraw

    annotated = []
    for frame_index, frame in enumerate(np.asarray(frames)):
        image = Image.fromarray((frame * 255).round().astype(np.uint8)).resize(
            (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST
        )
        draw = ImageDraw.Draw(image)
        for entity_index, path in enumerate(trajectories):
            color = TRACK_COLORS[entity_index % len(TRACK_COLORS)]
            points = [(x * image.width, y * image.height) for x, y in np.asarray(path)]
            draw.line(points, fill=color, width=max(1, scale // 4))
            x, y = points[frame_index]
            radius = max(1, scale // 2)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=color, width=max(1, scale // 4))
        annotated.append(np.asarray(image, dtype=np.float32) / 255)
    return np.stack(annotated)
