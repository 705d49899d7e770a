"""A judge for motion + appearance customisation that shares no weights with the model: template matching.

For every entity, the template is its reference image cropped to the sprite (pixels that differ from the
reference's plain background). In every frame the tracker places the template where the masked mean squared
difference to the frame is lowest; the template's centre there is the tracked position. From the tracks:

* ``trajectory_error``: mean Euclidean distance between tracked and requested centres, normalised coordinates;
* ``appearance_similarity``: ``1 - mean |frame - template|`` over the sprite's pixels at the tracked place,
  in ``[0, 1]`` (1 = the reference appearance, pixel for pixel);
* ``swap_rate``: over videos with two or more entities, the fraction whose tracks fit another assignment of
  the requested paths better than the intended one (two entities exchanging paths).

Each comes with its standard error (``*_se``: the binomial ``sqrt(p (1 - p) / n)`` over the multi-entity videos
for the swap rate, the standard error of the mean over entities for the others), and ``swap_chance`` is the
swap rate of tracks that carry no information about the paths (``1 - 1/K!`` for a video of ``K`` entities,
averaged over the multi-entity videos).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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


def _shuffled_targets(items: Sequence[dict], seed: int) -> list[list[np.ndarray]]:
    """Each video's entities paired with the paths of another video (entity ``i`` -> its ``i mod n``-th path)."""
    offset = int(np.random.default_rng(seed).integers(1, len(items))) if len(items) > 1 else 0
    targets = []
    for index, item in enumerate(items):
        other = items[(index + offset) % len(items)]["entities"]
        targets.append([other[slot % len(other)]["trajectory"] for slot in range(len(item["entities"]))])
    return targets


def evaluate_tracking(frames: np.ndarray, items: Sequence[dict], shuffle_seed: int | None = None) -> dict[str, float]:
    """Track every entity of every video ``frames[i]`` (``(N, F, H, W, 3)`` in ``[0, 1]``) by its
    ``reference_image`` and score the tracks against the requested ``trajectory`` of ``items[i]["entities"]``
    (or, with ``shuffle_seed``, against another video's paths: the shuffled-trajectory control)."""
    if len(frames) != len(items):
        raise ValueError(f"got {len(frames)} videos but {len(items)} items")
    if shuffle_seed is None:
        targets = [[np.asarray(e["trajectory"], np.float32) for e in item["entities"]] for item in items]
    else:
        targets = _shuffled_targets(items, shuffle_seed)
    errors, similarities, swaps, chances = [], [], [], []
    for video, item, video_targets in zip(frames, items, targets):
        tracks = []
        for entity, target in zip(item["entities"], video_targets):
            positions, similarity = track(video, entity["reference_image"])
            tracks.append(positions)
            errors.append(np.linalg.norm(positions - target, axis=-1).mean())
            similarities.append(similarity.mean())
        if len(tracks) > 1:
            swaps.append(_is_swapped(tracks, video_targets))
            chances.append(1 - 1 / math.factorial(len(tracks)))
    swap_rate = float(np.mean(swaps)) if swaps else float("nan")
    return {
        "trajectory_error": float(np.mean(errors)),
        "trajectory_error_se": standard_error(errors),
        "appearance_similarity": float(np.mean(similarities)),
        "appearance_similarity_se": standard_error(similarities),
        "swap_rate": swap_rate,
        "swap_rate_se": standard_error(swaps),
        "swap_chance": float(np.mean(chances)) if chances else float("nan"),
        "num_entities": len(errors),
        "num_multi_entity_videos": len(swaps),
    }



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
