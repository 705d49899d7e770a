"""A folder of the user's videos, with optional captions and point trajectories.

Videos (mp4, avi, mov, mkv, webm) are found recursively under ``root`` and decoded with decord
(``decord.VideoReader``) or with PyAV: ``backend="auto"`` uses decord and falls back to PyAV for
a file decord cannot decode (or for every file when decord is not importable). An
optional ``metadata.jsonl`` holds one JSON object per video: ``{"file_name": "clip.mp4", "caption":
"...", "trajectories": [[[x, y], ...], ...], "reference_images": ["ref_a.png", ...]}``: each trajectory
entity is a list of ``[x, y]`` pixel coordinates in the source video, one point per source frame, and
``reference_images`` (optional, used by Tora2) names one image of each entity alone, relative to ``root``.
Every video is decoded in full (a truncated file fails here, not at training step 1), its frame count
checked and its reference images found when the dataset is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .common import MetadataRecord, ReportsSkips, SkipLog, expect_type, find_files, load_metadata

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
BACKENDS = ("auto", "decord", "pyav")
CLIP_STARTS = ("first", "random")


def parse_trajectories(value: Any) -> np.ndarray:
    """``[[[x, y], ...], ...]`` (entities x frames x 2) as a float32 array; ``ValueError`` otherwise."""
    expected = "expected a non-empty list of entities, each a list of [x, y] points of equal length"
    try:
        points = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if points.ndim != 3 or points.shape[0] == 0 or points.shape[2] != 2:
        raise ValueError(f"{expected}, got an array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("trajectories contain NaN or infinite coordinates")
    return points


def parse_reference_images(value: Any) -> list[str]:
    """A non-empty list of image paths (strings); ``ValueError`` otherwise."""
    if not isinstance(value, list) or not value or not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"expected a non-empty list of image paths (one per entity), got {value!r}")
    return value


METADATA_FIELDS = {
    "caption": expect_type(str, "a string"),
    "trajectories": parse_trajectories,
    "reference_images": parse_reference_images,
}


@dataclass(frozen=True)
class VideoBackend:
    """How to probe a video (``-> (frame_count, height, width)``) and read frames (``-> (T, H, W, 3) uint8``)."""

    name: str
    probe: Callable[[Path], tuple[int, int, int]]
    read: Callable[[Path, list[int]], np.ndarray]


PROBE_CHUNK = 32  # frames decoded at a time when a video is checked


def _decord_probe(path: Path) -> tuple[int, int, int]:
    """Decode every frame (a truncated file can have a valid header and frame count), chunk by chunk."""
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    first = reader.get_batch([0]).asnumpy()
    if first.ndim != 4 or first.shape[-1] != 3:  # decord mis-strides some frame widths
        raise ValueError(f"decord decoded a frame of shape {first.shape[1:]}, expected (height, width, 3)")
    for start in range(0, len(reader), PROBE_CHUNK):
        reader.get_batch(list(range(start, min(start + PROBE_CHUNK, len(reader)))))
    return len(reader), first.shape[1], first.shape[2]


def _decord_read(path: Path, indices: list[int]) -> np.ndarray:
    import decord

    return decord.VideoReader(str(path), num_threads=1).get_batch(indices).asnumpy()


def _pyav_probe(path: Path) -> tuple[int, int, int]:
    """Decode every frame and count them (the header's frame count is not trusted)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = container.decode(stream)
        first = next(frames)
        count = 1 + sum(1 for _ in frames)
    if stream.frames and count < stream.frames:
        raise ValueError(f"only {count} of the {stream.frames} frames in its header decode (truncated file?)")
    return count, first.height, first.width


def _pyav_read(path: Path, indices: list[int]) -> np.ndarray:
    import av

    wanted, last, picked = set(indices), max(indices), {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in wanted:
                picked[index] = frame.to_ndarray(format="rgb24")
            if index == last:
                break
    if len(picked) != len(wanted):
        raise ValueError(f"the stream ended before frames {sorted(wanted - set(picked))}")
    return np.stack([picked[index] for index in indices])


def video_backends(name: str = "auto") -> list[VideoBackend]:
    """The backends to try, in order: ``"auto"`` is decord (when importable) and then PyAV."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    pyav = VideoBackend("pyav", _pyav_probe, _pyav_read)
    if name == "pyav":
        return [pyav]
    try:
        import decord  # noqa: F401
    except ImportError:
        if name == "decord":
            raise ImportError("backend='decord' needs the decord package; install it or use backend='pyav'") from None
        return [pyav]
    decord_backend = VideoBackend("decord", _decord_probe, _decord_read)
    return [decord_backend] if name == "decord" else [decord_backend, pyav]


@dataclass
class VideoInfo:
    """A validated video: its path, the backend that decodes it, frame count, source size and metadata."""

    path: Path
    backend: VideoBackend
    num_frames: int
    height: int
    width: int
    metadata: MetadataRecord


def resize_and_crop(
    frames: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
) -> tuple[torch.Tensor, tuple[float, float, int, int]]:
    """Resize ``(T, C, h, w)`` frames to cover ``size`` and center-crop them to it: ``mode`` ``"bilinear"``
    (antialiased) for pixels, ``"nearest-exact"`` for values that must not be blended (depth).

    Returns the frames and ``(scale_y, scale_x, top, left)``, the map from source pixel coordinates
    to output ones: ``y' = y * scale_y - top``, ``x' = x * scale_x - left``.
    """
    (height, width), (source_h, source_w) = size, frames.shape[-2:]
    scale = max(height / source_h, width / source_w)
    resized_h, resized_w = max(height, round(source_h * scale)), max(width, round(source_w * scale))
    if (resized_h, resized_w) != (source_h, source_w):
        smooth = mode == "bilinear"
        frames = F.interpolate(
            frames, size=(resized_h, resized_w), mode=mode, antialias=smooth, align_corners=False if smooth else None
        )
    top, left = round((resized_h - height) / 2), round((resized_w - width) / 2)
    frames = frames[..., top : top + height, left : left + width]
    return frames, (resized_h / source_h, resized_w / source_w, top, left)


def load_rgb(path: Path) -> np.ndarray:
    """An image file as ``(h, w, 3)`` float32 in ``[0, 1]``; ``ValueError`` naming it if unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read reference image {path}: {error}") from None


class VideoFolderDataset(ReportsSkips, Dataset):
    """Clips of ``num_frames`` frames, ``frame_stride`` apart, from the videos under ``root``.

    Items: ``"pixel_values"`` float32 ``(num_frames, 3, H, W)`` in ``[-1, 1]`` (shorter side resized,
    center crop), ``"caption"`` when the metadata has captions, ``"trajectories"`` float32
    ``(num_entities, num_frames, 2)`` as ``(x, y)`` in output pixels, sampled at the clip's frames, and
    ``"reference_images"`` (a list of ``(h, w, 3)`` float32 arrays in ``[0, 1]``) when the metadata names them.
    Undecodable or too-short videos raise ``ValueError`` naming the file, or with
    ``on_error="skip"`` are left out and counted in ``num_skipped``.
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int,
        frame_stride: int = 1,
        resolution: int | tuple[int, int] = 256,
        metadata_file: str = "metadata.jsonl",
        backend: str = "auto",
        clip_start: str = "first",
        on_error: str = "raise",
    ):
        if num_frames < 1 or frame_stride < 1:
            raise ValueError(f"num_frames and frame_stride must be >= 1, got {num_frames} and {frame_stride}")
        if clip_start not in CLIP_STARTS:
            raise ValueError(f"clip_start must be one of {CLIP_STARTS}, got {clip_start!r}")
        self.size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"resolution must be a positive int or (height, width), got {resolution!r}")
        self.num_frames, self.frame_stride, self.clip_start = num_frames, frame_stride, clip_start
        self.backends = video_backends(backend)
        self.skip_log = SkipLog(on_error)
        self.root, files = find_files(root, VIDEO_EXTENSIONS, "video")
        metadata_path = self.root / metadata_file
        records = load_metadata(metadata_path, self.root, files, METADATA_FIELDS) if metadata_path.is_file() else None
        probed = dict(self.skip_log.probe_all(files, self._probe))
        if not probed:
            raise ValueError(f"none of the {len(files)} video files under {self.root} could be used")
        records = records or [MetadataRecord(line=0)] * len(files)  # no metadata file: no fields
        self.videos = [
            VideoInfo(path, *probed[path], record)
            for path, record in zip(files, records, strict=True)
            if path in probed
        ]
        self._check_trajectory_lengths(metadata_path)
        self._check_reference_images(metadata_path)

    @property
    def clip_span(self) -> int:
        """Number of source frames one clip covers."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def _probe(self, path: Path) -> tuple[VideoBackend, int, int, int]:
        """The first backend that decodes ``path``, with the frame count and frame size it reports."""
        errors = []
        for backend in self.backends:
            try:
                count, height, width = backend.probe(path)
                break
            except Exception as error:  # decord and PyAV raise their own (and varied) error types
                errors.append(f"{backend.name}: {error}")
        else:
            raise ValueError(f"undecodable video {path} ({'; '.join(errors)})")
        if count < self.clip_span:
            raise ValueError(
                f"video {path} has {count} frames but num_frames={self.num_frames} with "
                f"frame_stride={self.frame_stride} needs at least {self.clip_span}"
            )
        return backend, count, height, width

    def _check_trajectory_lengths(self, metadata_path: Path) -> None:
        for video in self.videos:
            trajectories = video.metadata.fields.get("trajectories")
            if trajectories is not None and trajectories.shape[1] != video.num_frames:
                raise ValueError(
                    f"{metadata_path}:{video.metadata.line}: trajectories of {video.path} have {trajectories.shape[1]} "
                    f"points per entity but the video has {video.num_frames} frames (expected one point per frame)"
                )

    def _check_reference_images(self, metadata_path: Path) -> None:
        for video in self.videos:
            names = video.metadata.fields.get("reference_images", [])
            trajectories = video.metadata.fields.get("trajectories")
            if names and trajectories is not None and len(names) != len(trajectories):
                raise ValueError(
                    f"{metadata_path}:{video.metadata.line}: {len(names)} reference_images but "
                    f"{len(trajectories)} trajectories for {video.path} (expected one image per entity)"
                )
            for name in names:
                if not (self.root / name).is_file():
                    raise FileNotFoundError(
                        f"{metadata_path}:{video.metadata.line}: reference image {name!r} not found under {self.root}"
                    )

    def __len__(self) -> int:
        return len(self.videos)

    def frame_indices(self, video: VideoInfo) -> list[int]:
        """The source frames of the clip drawn from ``video`` (first clip, or a random start)."""
        start = 0
        if self.clip_start == "random":
            start = int(torch.randint(0, video.num_frames - self.clip_span + 1, ()).item())
        return list(range(start, start + self.clip_span, self.frame_stride))

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        indices = self.frame_indices(video)
        try:
            frames = video.backend.read(video.path, indices)
        except Exception as error:  # see _probe
            raise ValueError(f"could not decode frames of video {video.path}: {error}") from None
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        pixels, (scale_y, scale_x, top, left) = resize_and_crop(pixels, self.size)
        item: dict[str, Any] = {"pixel_values": pixels.clamp(-1, 1).contiguous()}
        fields = video.metadata.fields
        if "caption" in fields:
            item["caption"] = fields["caption"]
        if "trajectories" in fields:
            points = fields["trajectories"][:, indices] * np.float32([scale_x, scale_y])
            item["trajectories"] = torch.from_numpy(points - np.float32([left, top]))
        if "reference_images" in fields:
            item["reference_images"] = [load_rgb(self.root / name) for name in fields["reference_images"]]
        return item
