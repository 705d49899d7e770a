"""Multi-view videos of dynamic 3D scenes, with their cameras, for camera-controlled re-rendering.

Two sources share one item contract, ``{"videos": (V, F, H, W, 3) float32 in [0, 1], "cameras": (V, F, 4, 4)
camera-to-world, "intrinsics": (3, 3) shared or (V, 3, 3) per view}``; view 0 is the source video:

* :class:`MultiViewSceneDataset` -- a seeded numpy ray caster of small dynamic scenes (a checkered floor,
  a few coloured boxes and spheres, some moving on the floor, under a sky gradient) seen along orbit,
  pan, dolly and arc camera paths and their mixtures. Every view of every scene has an exact ground
  truth, and :func:`render` renders any other camera path of a scene (with depth, for visibility masks).
  ``split="test"`` draws held-out scenes from a different seed stream than ``split="train"``;
  :func:`render_background` renders a scene without its objects and masks the object pixels.
* :class:`MultiViewVideoFolder` -- the user's own multi-camera recordings: one sub-folder per scene
  holding videos and, beside each, a camera JSON of the same name (see :func:`load_camera_file`); OpenCV or
  OpenGL camera axes (``camera_convention``), per-view intrinsics, camera positions rescaled to the synthetic
  scenes' scale (:func:`normalize_pose_scale`), every frame used (one item per clip-length chunk).

Cameras follow OpenCV (x right, y down, z forward; see ``selfgen.models.embeddings``); the world is
y-up with the floor at ``y = 0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import find_files
from .video import VIDEO_EXTENSIONS, resize_and_crop, video_backends

CAMERA_PATHS = ("orbit", "pan", "dolly", "arc", "orbit+dolly", "arc+pan")
SPLITS = {"train": 0, "test": 1}
LIGHT_DIRECTION = np.array([0.4, 1.0, 0.3]) / np.linalg.norm([0.4, 1.0, 0.3])
FLOOR_RADIUS = 9.0
FAR = 1e9


@dataclass
class SceneObject:
    """A sphere (``half_extent`` = radius) or an axis-aligned box resting on the floor, moving at
    ``velocity`` world units per frame."""

    kind: str
    center: np.ndarray
    half_extent: float
    color: np.ndarray
    velocity: np.ndarray

    def center_at(self, frame: int) -> np.ndarray:
        return self.center + frame * self.velocity


@dataclass
class Scene:
    objects: list[SceneObject]
    floor_colors: np.ndarray  # (2, 3) checker colours
    sky_colors: np.ndarray  # (2, 3) horizon and zenith


def sample_scene(rng: np.random.Generator, static: bool = False) -> Scene:
    """Three to five objects within 2 units of the origin; about half of them move (none if ``static``; the
    random stream is the same either way, so a static scene is its dynamic twin frozen at frame 0)."""
    objects = []
    for _ in range(int(rng.integers(3, 6))):
        kind = "sphere" if rng.random() < 0.5 else "box"
        half_extent = float(rng.uniform(0.35, 0.7))
        position = rng.uniform(-2.0, 2.0, size=2)
        velocity = np.zeros(3)
        if rng.random() < 0.5:
            heading = rng.uniform(0, 2 * np.pi)
            velocity[[0, 2]] = 0.0 if static else 0.12 * np.array([np.cos(heading), np.sin(heading)])
        color = rng.uniform(0.15, 1.0, size=3)
        color[rng.integers(3)] = rng.uniform(0.0, 0.2)  # saturated colours tell the objects apart
        objects.append(SceneObject(kind, np.array([position[0], half_extent, position[1]]), half_extent, color, velocity))
    floor = rng.uniform(0.3, 0.8, size=3)
    return Scene(objects, np.stack([floor, floor * 0.55]), np.stack([rng.uniform(0.6, 0.9, 3), rng.uniform(0.2, 0.6, 3)]))


def default_intrinsics(size: int) -> np.ndarray:
    """A pinhole with focal length ``size`` pixels (about 53 degrees field of view), centred."""
    return np.array([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes, world y-up)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    camera = np.eye(4)
    camera[:3, 0], camera[:3, 1], camera[:3, 2], camera[:3, 3] = right, down, forward, eye
    return camera


def camera_path(kind: str, azimuth: float, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``(num_frames, 4, 4)`` cameras along a path starting at ``azimuth`` (radians) around the origin.

    ``orbit`` turns around the vertical axis, ``arc`` also climbs, ``dolly`` moves towards or away from
    the centre, ``pan`` stays put and turns its look-at point sideways; ``a+b`` does both at once.
    """
    if kind not in CAMERA_PATHS:
        raise ValueError(f"camera path kind must be one of {CAMERA_PATHS}, got {kind!r}")
    parts = kind.split("+")
    radius, height = rng.uniform(3.8, 5.2), rng.uniform(1.2, 2.8)
    sweep = rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) if {"orbit", "arc"} & set(parts) else 0.0
    climb = rng.uniform(-1.0, 1.5) if "arc" in parts else 0.0
    dolly = rng.choice([-1, 1]) * rng.uniform(0.8, 1.5) if "dolly" in parts else 0.0
    pan = rng.choice([-1, 1]) * rng.uniform(0.8, 1.6) if "pan" in parts else 0.0
    cameras = []
    for step in np.linspace(0.0, 1.0, num_frames):
        angle, distance = azimuth + step * sweep, radius + step * dolly
        eye = np.array([distance * np.sin(angle), height + step * climb, distance * np.cos(angle)])
        sideways = np.array([np.cos(angle), 0.0, -np.sin(angle)])
        cameras.append(look_at(eye, np.array([0.0, 0.4, 0.0]) + step * pan * sideways))
    return np.stack(cameras)


def rotate_about_vertical(cameras: np.ndarray, angle: float) -> np.ndarray:
    """Cameras ``(..., 4, 4)`` rotated by ``angle`` radians about the world's vertical axis through the origin."""
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.eye(4)
    rotation[0, 0], rotation[0, 2], rotation[2, 0], rotation[2, 2] = cos, sin, -sin, cos
    return rotation @ cameras


def _intersect_sphere(origin, directions, center, radius):
    offset = origin - center
    b = directions @ offset
    disc = b**2 - (offset @ offset - radius**2)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc > 0) & (t > 1e-4), t, FAR)
    normals = origin + t[:, None] * directions - center
    return t, normals / radius


def _intersect_box(origin, directions, center, half_extent):
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions
        near = (center - half_extent - origin) * inverse
        far = (center + half_extent - origin) * inverse
    t_near = np.minimum(near, far).max(axis=1)
    t_far = np.maximum(near, far).min(axis=1)
    t = np.where((t_near <= t_far) & (t_near > 1e-4), t_near, FAR)
    local = (origin + t[:, None] * directions - center) / half_extent
    axis = np.abs(local).argmax(axis=1)
    normals = np.zeros_like(local)
    normals[np.arange(len(local)), axis] = np.sign(local[np.arange(len(local)), axis])
    return t, normals


def _render_frame(scene: Scene, camera: np.ndarray, intrinsics: np.ndarray, frame: int, size: int):
    rows, cols = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    pixels = np.stack([cols, rows, np.ones_like(rows)], axis=-1).reshape(-1, 3)
    directions = pixels @ np.linalg.inv(intrinsics).T @ camera[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origin = camera[:3, 3]
    elevation = np.clip(directions[:, 1:2], 0.0, 1.0)
    color = (1 - elevation) * scene.sky_colors[0] + elevation * scene.sky_colors[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        floor_t = np.where(directions[:, 1] < -1e-6, -origin[1] / directions[:, 1], FAR)
    hit = origin + floor_t[:, None] * directions
    floor_t = np.where(np.hypot(hit[:, 0], hit[:, 2]) < FLOOR_RADIUS, floor_t, FAR)
    checker = (np.floor(hit[:, 0]) + np.floor(hit[:, 2])).astype(np.int64) % 2
    depth = floor_t
    surface = scene.floor_colors[checker]
    normals = np.tile([0.0, 1.0, 0.0], (len(directions), 1))
    for obj in scene.objects:
        intersect = _intersect_sphere if obj.kind == "sphere" else _intersect_box
        t, obj_normals = intersect(origin, directions, obj.center_at(frame), obj.half_extent)
        closer = t < depth
        depth = np.where(closer, t, depth)
        surface = np.where(closer[:, None], obj.color, surface)
        normals = np.where(closer[:, None], obj_normals, normals)
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT_DIRECTION, 0.0, 1.0)
    visible = depth < FAR
    color = np.where(visible[:, None], surface * shade[:, None], color)
    z_depth = np.where(visible, depth * (directions @ camera[:3, 2]), np.inf)
    return color.reshape(size, size, 3), z_depth.reshape(size, size)


def render(
    scene: Scene, cameras: np.ndarray, intrinsics: np.ndarray, size: int = 32, return_depth: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` along ``cameras`` ``(F, 4, 4)``: frame ``f`` is seen by camera ``f`` at scene time ``f``.

    Returns ``(F, size, size, 3)`` float32 in ``[0, 1]`` and, with ``return_depth``, the ``(F, size, size)``
    camera-space depth ``z`` of each pixel's surface (``inf`` for sky).
    """
    cameras = check_cameras(np.asarray(cameras, dtype=np.float64), "cameras")
    frames = [_render_frame(scene, camera, np.asarray(intrinsics, float), f, size) for f, camera in enumerate(cameras)]
    video = np.stack([color for color, _ in frames]).clip(0, 1).astype(np.float32)
    if return_depth:
        return video, np.stack([depth for _, depth in frames]).astype(np.float32)
    return video


def render_background(scene: Scene, cameras: np.ndarray, intrinsics: np.ndarray, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``scene`` with its objects removed (floor and sky only) along ``cameras``, and the ``(F, H, W)`` mask of
    the pixels where the full scene shows an object (an object surface is the nearest hit)."""
    background, background_depth = render(Scene([], scene.floor_colors, scene.sky_colors), cameras, intrinsics, size, True)
    _, depth = render(scene, cameras, intrinsics, size, return_depth=True)
    return background, depth < background_depth


def project_points(points: np.ndarray, camera: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` -> pixel coordinates ``(N, 2)`` as ``(u, v)`` and camera depth ``z`` ``(N,)``."""
    local = (points - camera[:3, 3]) @ camera[:3, :3]
    pixels = local @ np.asarray(intrinsics, float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return pixels[:, :2] / pixels[:, 2:3], local[:, 2]


def unseen_mask(
    depth: np.ndarray, cameras: np.ndarray, source_depth: np.ndarray, source_cameras: np.ndarray, intrinsics: np.ndarray
) -> np.ndarray:
    """``(F, H, W)`` True where a target pixel's surface point is seen by no source frame (outside every
    source frustum or occluded there, by a depth test). Sky pixels count as seen."""
    frames, size = depth.shape[0], depth.shape[1]
    rows, cols = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    rays = np.stack([cols, rows, np.ones_like(rows)], axis=-1).reshape(-1, 3) @ np.linalg.inv(intrinsics).T
    mask = np.zeros(depth.shape, dtype=bool)
    for frame in range(frames):
        z = depth[frame].reshape(-1)
        finite = np.isfinite(z)
        points = (rays * np.where(finite, z, 0.0)[:, None]) @ cameras[frame, :3, :3].T + cameras[frame, :3, 3]
        seen = ~finite
        for source_camera, source_z in zip(source_cameras, source_depth):
            pixels, point_z = project_points(points, source_camera, intrinsics)
            pixels = np.nan_to_num(pixels, nan=-1.0, posinf=-1.0, neginf=-1.0)
            inside = (point_z > 1e-3) & (pixels >= 0).all(1) & (pixels < size).all(1)
            u, v = np.clip(pixels.astype(int), 0, size - 1).T
            seen |= inside & (point_z <= source_z[v, u] * 1.05 + 0.05)
        mask[frame] = ~seen.reshape(size, size)
    return mask


def warp_video(
    video: np.ndarray,
    depth: np.ndarray,
    cameras: np.ndarray,
    target_cameras: np.ndarray,
    intrinsics: np.ndarray,
    target_intrinsics: np.ndarray | None = None,
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Forward-warp ``video`` ``(F, H, W, 3)`` with its camera depth ``depth`` ``(F, H, W)`` (``inf`` = sky,
    at infinity) from ``cameras`` into ``target_cameras`` (both ``(F, 4, 4)``; frame ``f`` to frame ``f``,
    the same scene time): every source pixel (``supersample``\ :sup:`2` points per pixel) is lifted to 3-D,
    projected into the target frame and splatted to its nearest pixel, the nearest point winning (a z-buffer).
    Returns the warped video and the ``(F, H, W)`` mask of the target pixels some source point landed on
    (disocclusions and pixels outside the source's view stay 0, mask False)."""
    frames, size = video.shape[0], video.shape[1]
    target_intrinsics = intrinsics if target_intrinsics is None else target_intrinsics
    offsets = (np.arange(size * supersample) + 0.5) / supersample
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    source_index = (rows.astype(int) * size + cols.astype(int)).reshape(-1)
    rays = np.stack([cols, rows, np.ones_like(rows)], axis=-1).reshape(-1, 3) @ np.linalg.inv(intrinsics).T
    warped, valid = np.zeros_like(video), np.zeros((frames, size, size), dtype=bool)
    for frame in range(frames):
        z = depth[frame].reshape(-1)[source_index]
        finite = np.isfinite(z)
        camera, target = cameras[frame], target_cameras[frame]
        world = (rays * np.where(finite, z, 1.0)[:, None]) @ camera[:3, :3].T  # sky: a direction, no translation
        world = world + np.where(finite[:, None], camera[:3, 3], 0.0)
        local = (world - np.where(finite[:, None], target[:3, 3], 0.0)) @ target[:3, :3]
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels = (local @ np.asarray(target_intrinsics, float).T)[:, :2] / local[:, 2:3]
        inside = (local[:, 2] > 1e-3) & (pixels >= 0).all(1) & (pixels < size).all(1)
        distance = np.where(finite, local[:, 2], FAR)[inside]
        u, v = pixels[inside].astype(int).T
        order = np.argsort(-distance, kind="stable")  # far first: the nearest point is written last and wins
        colors = video[frame].reshape(-1, 3)[source_index[inside]]
        warped[frame, v[order], u[order]] = colors[order]
        valid[frame, v[order], u[order]] = True
    return warped, valid


def check_cameras(cameras: Any, name: str, num_frames: int | None = None, atol: float = 1e-3) -> np.ndarray:
    """``cameras`` as a float64 ``(F, 4, 4)`` array of rigid camera-to-world matrices, else ``ValueError``
    naming ``name``: finite, last row ``[0, 0, 0, 1]``, rotation block orthonormal with determinant +1, and
    ``F == num_frames`` when given."""
    array = np.asarray(cameras, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (num_frames, 4, 4) camera-to-world matrices, got shape {array.shape}")
    if num_frames is not None and len(array) != num_frames:
        raise ValueError(f"{name} has {len(array)} camera matrices but the video has {num_frames} frames (expected one per frame)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not np.allclose(array[:, 3], [0.0, 0.0, 0.0, 1.0], atol=atol):
        raise ValueError(f"{name}: the last row of every camera matrix must be [0, 0, 0, 1]")
    rotations = array[:, :3, :3]
    orthogonality = np.abs(rotations.transpose(0, 2, 1) @ rotations - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((orthogonality > atol) | (np.linalg.det(rotations) < 0))
    if len(bad):
        raise ValueError(
            f"{name}: camera matrix {int(bad[0])} is not rigid (its 3x3 rotation must be orthonormal with "
            "determinant +1; scale or shear is not allowed)"
        )
    return array


CAMERA_CONVENTIONS = ("opencv", "opengl")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flip the camera's y (up -> down) and z (backward -> forward)
SYNTHETIC_CAMERA_DISTANCE = 4.8  # mean distance of the synthetic scenes' cameras from the point they look at


def to_opencv(cameras: np.ndarray, convention: str) -> np.ndarray:
    """Camera-to-world ``(..., 4, 4)`` in ``convention`` (``"opencv"``: x right, y down, z forward;
    ``"opengl"``: x right, y up, z backward, as Blender / NeRF exports) -> OpenCV, ``C_cv = C_gl diag(1, -1, -1, 1)``."""
    if convention not in CAMERA_CONVENTIONS:
        raise ValueError(f"camera_convention must be one of {CAMERA_CONVENTIONS}, got {convention!r}")
    return cameras @ OPENGL_TO_OPENCV if convention == "opengl" else cameras


def focus_point(cameras: np.ndarray) -> np.ndarray | None:
    """The least-squares point nearest to every camera's optical axis (``(N, 4, 4)`` OpenCV cameras):
    ``p = argmin sum_i ||(I - z_i z_i^T)(p - o_i)||^2``; ``None`` when the axes are (nearly) parallel."""
    axes, centres = cameras[:, :3, 2], cameras[:, :3, 3]
    projectors = np.eye(3) - axes[:, :, None] * axes[:, None, :]
    system = projectors.sum(axis=0)
    if np.linalg.cond(system) > 1e4:
        return None
    return np.linalg.solve(system, np.einsum("nij,nj->i", projectors, centres))


def normalize_pose_scale(cameras: np.ndarray, distance: float, name: str = "cameras") -> tuple[np.ndarray, float]:
    """Rescale the camera positions of one scene ``(V, F, 4, 4)`` (OpenCV) so that their mean distance to the
    scene's :func:`focus_point` is ``distance`` (rotations unchanged, ``t' = s t``); returns the cameras and
    ``s``. If the axes are nearly parallel (no focus point), the mean distance of the centres from their
    centroid becomes ``distance / 4`` instead; a scene whose cameras all sit at one point is left as it is.
    A focus point *behind* most cameras means their z axes point away from the scene, the mark of OpenGL
    poses read as OpenCV: ``ValueError`` naming ``name`` and ``camera_convention``."""
    flat = cameras.reshape(-1, 4, 4)
    centres = flat[:, :3, 3]
    focus = focus_point(flat)
    if focus is not None:
        in_front = np.einsum("ni,ni->n", focus - centres, flat[:, :3, 2]) > 0
        if in_front.mean() < 0.5:
            raise ValueError(
                f"{name}: the cameras' viewing axes (+z) point away from the point they converge on; OpenGL-style "
                "poses (camera looks along -z)? set camera_convention: opengl"
            )
        spread = float(np.linalg.norm(centres - focus, axis=1).mean())
    else:
        spread = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).mean()) * 4
    if spread < 1e-9:
        return cameras, 1.0
    scale = distance / spread
    scaled = cameras.copy()
    scaled[..., :3, 3] *= scale
    return scaled, scale


def check_intrinsics(intrinsics: Any, name: str = "intrinsics") -> np.ndarray:
    """``intrinsics`` as a float64 ``(3, 3)`` pinhole matrix with positive focal lengths, else ``ValueError``."""
    array = np.asarray(intrinsics, dtype=np.float64)
    if array.shape != (3, 3) or not np.isfinite(array).all():
        raise ValueError(f"{name} must be a finite 3x3 matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got shape {array.shape}")
    if array[0, 0] <= 0 or array[1, 1] <= 0 or not np.allclose(array[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{name} must look like [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return array


class MultiViewSceneDataset(Dataset):
    """``num_scenes`` synthetic scenes, ``num_views`` camera paths of ``num_frames`` frames each.

    Item ``i`` is rendered from ``numpy.random.default_rng([seed, split, i])``, so it is deterministic
    and the ``"test"`` split never repeats a ``"train"`` scene. View 0 (the source) starts at a random
    azimuth; the other views start within ``max_view_offset`` radians of it, on either side, so they
    overlap the source but also see what it never saw. ``cache=True`` keeps rendered items (uint8).
    Items also hold ``"scene"`` (the :class:`Scene`) unless ``include_scene=False``.

    ``neighbour_prob`` (default 0: independent paths only) makes each non-source view, with that
    probability, a *neighbour* of a random earlier view: that view's whole path turned about the
    vertical axis by at most ``neighbour_angle`` radians. Multi-camera datasets (the paper's Basic and
    Agibot) hold such overlapping trajectories; without them a scene never offers a conditioning video
    near the target camera, and a model cannot learn to carry content over from one, which is what a
    revisited camera needs. Neighbours are drawn from their own random stream, so every other view is
    the same as with ``neighbour_prob=0``. ``static=True`` freezes every object (see :func:`sample_scene`).
    ``return_depth=True`` adds ``"depths"``: ``(V, F, H, W)`` float32 camera depth ``z`` (``inf`` for sky).
    """

    def __init__(
        self,
        num_scenes: int,
        num_views: int = 4,
        num_frames: int = 8,
        size: int = 32,
        seed: int = 0,
        split: str = "train",
        max_view_offset: float = 1.8,
        cache: bool = False,
        include_scene: bool = True,
        neighbour_prob: float = 0.0,
        neighbour_angle: float = 0.15,
        static: bool = False,
        return_depth: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if num_scenes < 1 or num_views < 1 or num_frames < 1 or size < 1:
            raise ValueError("num_scenes, num_views, num_frames and size must all be >= 1")
        if not 0.0 <= neighbour_prob <= 1.0:
            raise ValueError(f"neighbour_prob must be in [0, 1], got {neighbour_prob}")
        self.num_scenes, self.num_views, self.num_frames, self.size = num_scenes, num_views, num_frames, size
        self.seed, self.split, self.max_view_offset = seed, split, max_view_offset
        self.neighbour_prob, self.neighbour_angle = neighbour_prob, neighbour_angle
        self.include_scene, self.static, self.return_depth = include_scene, static, return_depth
        self.intrinsics = default_intrinsics(size)
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_scenes

    def scene_and_cameras(self, index: int) -> tuple[Scene, np.ndarray]:
        """The scene of item ``index`` and its ``(V, F, 4, 4)`` camera paths."""
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        scene = sample_scene(rng, self.static)
        azimuth = rng.uniform(0, 2 * np.pi)
        offsets = np.concatenate([[0.0], rng.uniform(-self.max_view_offset, self.max_view_offset, self.num_views - 1)])
        kinds = rng.choice(CAMERA_PATHS, size=self.num_views)
        cameras = np.stack([camera_path(kind, azimuth + offset, self.num_frames, rng) for kind, offset in zip(kinds, offsets)])
        if self.neighbour_prob > 0:
            neighbour_rng = np.random.default_rng([self.seed, SPLITS[self.split], index, 1])
            for view in range(1, self.num_views):
                if neighbour_rng.random() < self.neighbour_prob:
                    anchor = int(neighbour_rng.integers(view))
                    angle = neighbour_rng.uniform(-self.neighbour_angle, self.neighbour_angle)
                    cameras[view] = rotate_about_vertical(cameras[anchor], angle)
        return scene, cameras

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene index {index} out of range for {self.num_scenes} scenes")
        if self._cache is not None and index in self._cache:
            cached = self._cache[index]
            return {**cached, "videos": cached["videos"].float() / 255}
        scene, cameras = self.scene_and_cameras(index)
        renders = [render(scene, path, self.intrinsics, self.size, return_depth=True) for path in cameras]
        videos = np.stack([video for video, _ in renders])
        item: dict[str, Any] = {
            "videos": torch.from_numpy(videos),
            "cameras": torch.from_numpy(cameras).float(),
            "intrinsics": torch.from_numpy(self.intrinsics).float(),
        }
        if self.include_scene:
            item["scene"] = scene
        if self.return_depth:
            item["depths"] = torch.from_numpy(np.stack([depth for _, depth in renders]))
        if self._cache is not None:
            self._cache[index] = {**item, "videos": (item["videos"] * 255).round().to(torch.uint8)}
        return item


def load_camera_file(path: str | Path, num_frames: int | None = None, convention: str = "opencv") -> tuple[np.ndarray, np.ndarray]:
    """Read ``{"cameras": [4x4 camera-to-world per frame], "intrinsics": 3x3}`` (pixel units of the video
    as stored) and return OpenCV cameras (``convention="opengl"`` converts them, :func:`to_opencv`) and the
    intrinsics. Missing file -> ``FileNotFoundError``; a missing field, wrong shapes, non-rigid matrices or a
    frame count different from ``num_frames`` -> ``ValueError`` naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera file {path} not found (expected JSON with 'cameras' and 'intrinsics')")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"camera file {path} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or "cameras" not in record or "intrinsics" not in record:
        raise ValueError(f"camera file {path} must be a JSON object with keys 'cameras' and 'intrinsics'")
    cameras = check_cameras(_as_array(record["cameras"], path, "cameras"), f"{path}: field 'cameras'", num_frames)
    intrinsics = check_intrinsics(_as_array(record["intrinsics"], path, "intrinsics"), f"{path}: field 'intrinsics'")
    return to_opencv(cameras, convention), intrinsics


def _as_array(value: Any, path: Path, field: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"camera file {path}: field {field!r} must be a nested list of numbers") from None


def read_video(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """All frames (or the first ``num_frames``) of a video file as uint8 ``(F, H, W, 3)`` with
    decord (PyAV fallback)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} not found")
    errors = []
    for backend in video_backends("auto"):
        try:
            count, _, _ = backend.probe(path)
            wanted = count if num_frames is None else num_frames
            if count < wanted:
                raise ValueError(f"has {count} frames, need {wanted}")
            return backend.read(path, list(range(wanted)))
        except Exception as error:  # decord and PyAV raise their own error types
            errors.append(f"{backend.name}: {error}")
    raise ValueError(f"could not read video {path} ({'; '.join(errors)})")


def resize_video(frames: np.ndarray, intrinsics: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(F, H, W, 3)`` -> float ``(F, size, size, 3)`` in ``[0, 1]`` (cover + centre crop), with the
    intrinsics moved to the new pixel grid: ``f' = s f``, ``c' = s c - crop offset``."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    pixels, (scale_y, scale_x, top, left) = resize_and_crop(pixels, (size, size))
    adjusted = np.array(intrinsics, dtype=np.float64)
    adjusted[0] = adjusted[0] * scale_x - np.array([0.0, 0.0, left])
    adjusted[1] = adjusted[1] * scale_y - np.array([0.0, 0.0, top])
    return pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy(), adjusted


def load_depth_file(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A video's camera depth ``z`` per pixel from a ``.npy`` file (read without unpickling) as float64, checked
    to be ``shape`` = the video's ``(F, H, W)``, positive, ``inf`` for sky; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file {path} not found (expected a .npy array (frames, height, width) of camera depths)")
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"depth file {path} is not a plain .npy array ({error})") from None
    if not isinstance(depth, np.ndarray) or depth.shape != tuple(shape):
        found = depth.shape if isinstance(depth, np.ndarray) else "an archive"
        raise ValueError(f"depth file {path} holds {found}; expected one array of shape {tuple(shape)} (frames, height, width of the video)")
    depth = depth.astype(np.float64)
    if np.isnan(depth).any() or (depth <= 0).any():
        raise ValueError(f"depth file {path}: depths must be positive camera z (inf for sky), without NaN")
    return depth


def resize_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """``(F, H, W)`` depth moved to the pixel grid :func:`resize_video` gives the frames (cover + centre crop),
    by nearest neighbour, so depths are never blended across object edges."""
    resized, _ = resize_and_crop(torch.from_numpy(depth)[:, None], (size, size), mode="nearest-exact")
    return resized[:, 0].numpy()


class MultiViewVideoFolder(Dataset):
    """The user's multi-camera videos: ``root/<scene>/<view>.mp4`` with ``root/<scene>/<view>.json`` beside
    each (see :func:`load_camera_file`). Views of a scene are sorted by name; the first is the source.

    * **Views**: each item holds the first ``min(num_views, V_min)`` views of its scene, where ``V_min`` is
      the smallest view count of any scene (at least 2), so folders of 4-view scenes work without setting
      ``num_views``.
    * **Frames**: every frame is used: a scene of ``T`` synchronised frames (the shortest of its views)
      gives one item per ``num_frames``-frame chunk, at starts ``0, num_frames, ...`` and a last chunk
      ending at frame ``T``.
    * **Cameras**: ``camera_convention`` ``"opencv"`` or ``"opengl"`` (converted to OpenCV), each view's own
      intrinsics moved to the resized grid (``"intrinsics"`` is ``(V, 3, 3)``), and with
      ``camera_distance`` (default: the synthetic scenes' 4.8) the scene's camera positions are rescaled by
      :func:`normalize_pose_scale`, so recordings in millimetres or in metres reach the model at the scale
      it was trained on (``None`` keeps them as they are).

    Every video and camera file is checked when the dataset is built: a missing camera file, a frame count
    that differs between a video and its cameras, non-rigid matrices, a scene with fewer than 2 views or
    fewer frames than ``num_frames`` raise an error naming the file or folder.
    """

    def __init__(
        self,
        root: str | Path,
        num_views: int | None = None,
        num_frames: int = 8,
        size: int = 32,
        camera_convention: str = "opencv",
        camera_distance: float | None = SYNTHETIC_CAMERA_DISTANCE,
    ) -> None:
        if camera_convention not in CAMERA_CONVENTIONS:
            raise ValueError(f"camera_convention must be one of {CAMERA_CONVENTIONS}, got {camera_convention!r}")
        self.root, files = find_files(root, VIDEO_EXTENSIONS, "video")
        self.num_frames, self.size, self.camera_convention = num_frames, size, camera_convention
        by_scene: dict[Path, list[Path]] = {}
        for path in files:
            by_scene.setdefault(path.parent, []).append(path)
        for folder, videos in sorted(by_scene.items()):
            if len(videos) < 2:
                raise ValueError(f"scene folder {folder} has {len(videos)} video; a scene needs a source and at least one more view")
        fewest = min(len(videos) for videos in by_scene.values())
        self.num_views = fewest if num_views is None else min(num_views, fewest)
        self.scenes, self.chunks = [], []
        for folder, videos in sorted(by_scene.items()):
            views = [self._check_view(path) for path in sorted(videos)[: self.num_views]]
            length = min(len(cameras) for _, cameras, _ in views)
            if length < num_frames:
                raise ValueError(f"scene folder {folder} has {length} synchronised frames, num_frames={num_frames} needs more")
            cameras = np.stack([view_cameras[:length] for _, view_cameras, _ in views])
            scale = 1.0
            if camera_distance is not None:
                cameras, scale = normalize_pose_scale(cameras, camera_distance, f"scene folder {folder}")
            self.scenes.append({"paths": [path for path, _, _ in views], "cameras": cameras,
                                "intrinsics": [intrinsics for _, _, intrinsics in views], "scale": scale})
            last = length - num_frames
            starts = sorted(set(range(0, last + 1, num_frames)) | {last})
            self.chunks += [(len(self.scenes) - 1, start) for start in starts]

    def _check_view(self, path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
        frames = len(read_video(path))
        cameras, intrinsics = load_camera_file(path.with_suffix(".json"), frames, self.camera_convention)
        return path, cameras, intrinsics

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene_index, start = self.chunks[index]
        scene = self.scenes[scene_index]
        window = slice(start, start + self.num_frames)
        videos, intrinsics = [], []
        for path, view_intrinsics in zip(scene["paths"], scene["intrinsics"]):
            video, resized = resize_video(read_video(path, start + self.num_frames)[window], view_intrinsics, self.size)
            videos.append(video)
            intrinsics.append(resized)
        return {
            "videos": torch.from_numpy(np.stack(videos)).float(),
            "cameras": torch.from_numpy(scene["cameras"][:, window]).float(),
            "intrinsics": torch.from_numpy(np.stack(intrinsics)).float(),
        }


class WalkAwayScenes(Dataset):
    """Held-out "walk-away" chains: static scenes (:func:`sample_scene` with ``static=True``) whose view ``k``
    is the source's camera path turned about the vertical axis by ``k * step_degrees``, ``k = 0..num_views-1``.

    With steps of about 30 degrees each target sees a little less of what the source saw, so after a few
    views 3D-FOV retrieval no longer picks the source and the chain must carry its own generations (this is
    where errors can compound); ``num_views - 1 = 11`` steps of 30 degrees go most of the way around, and a
    revisit of view 1 closes the loop. Items follow the :class:`MultiViewSceneDataset` contract, with
    ``"scene"``; the scenes are those of the ``split="test"`` stream (never trained on), frozen.
    """

    def __init__(self, num_scenes: int, num_views: int = 12, num_frames: int = 4, size: int = 32, step_degrees: float = 30.0, seed: int = 0) -> None:
        if num_views < 2:
            raise ValueError(f"num_views must be >= 2 (a source and a target), got {num_views}")
        self.scenes = MultiViewSceneDataset(num_scenes, 1, num_frames, size, seed, split="test", static=True)
        self.num_views, self.step = num_views, np.deg2rad(step_degrees)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, cameras = self.scenes.scene_and_cameras(index)
        paths = np.stack([rotate_about_vertical(cameras[0], view * self.step) for view in range(self.num_views)])
        intrinsics, size = self.scenes.intrinsics, self.scenes.size
        videos = np.stack([render(scene, path, intrinsics, size) for path in paths])
        return {
            "videos": torch.from_numpy(videos),
            "cameras": torch.from_numpy(paths).float(),
            "intrinsics": torch.from_numpy(intrinsics).float(),
            "scene": scene,
        }
