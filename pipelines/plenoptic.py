"""PlenopticDreamer pipeline: re-render one source video along several camera paths, autoregressively,
each new view conditioned on the most relevant earlier videos (Fu et al. 2026).

For target ``k``: the memory bank holds the source and the ``k - 1`` views generated so far, each with
its cameras. **Camera-guided retrieval** (the paper's 3D-FOV criterion) scores every memory video by how
much of the target's viewing frustum it saw: points ``X`` are sampled on a pixel grid of every target
frame at depths in ``[near, far]``, and

    score(n) = |{X : some frame of memory video n sees X}| / |{X}|,

where a frame sees ``X`` if ``X`` projects inside its image at a depth in ``(0, far]`` and its ray to ``X``
makes an angle below ``max_ray_angle`` (90 degrees) with the target's ray to ``X``. The angle test is our
addition: without it a camera facing the target from the opposite side of the scene covers the same
frustum while seeing the other side of every surface.

The ``retrieval_k`` best-scoring videos (ties: the more recent) condition the multi-in-single-out DiT,
which denoises the target from noise with rectified flow (``FlowMatchEulerDiscreteScheduler``). The new
view joins the memory bank. ``retrieval="recent"`` takes the last ``retrieval_k`` videos instead (the
paper's retrieval-off ablation) and ``retrieval="source"`` conditions on the source alone (single-in,
ReCamMaster-like).

**Long-video conditioning**: a video longer than the model's clip length ``L`` is generated in chunks of
``L`` frames; each chunk after the first starts with ``chunk_overlap`` frames of the previous chunk,
kept clean (timestep 0, never updated), and its conditions are the memory videos' frames of the same
time window. All cameras are expressed relative to the source's first camera before they reach the model.

**Warp conditioning** (our departure, for models trained with ``warp_conditioning``): given the source's
depth (``source_depth``), every target also sees the source forward-warped into its cameras
(:func:`warp_condition`), pixel-aligned with its own tokens. Without a depth the warp input is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput

from ..data.multiview import check_cameras, check_intrinsics, warp_video
from ..data.validation import video_to_array
from ..models.embeddings import relative_cameras
from ..models.plenoptic import PlenopticTransformer
from .pipeline_utils import SelfgenPipeline, postprocess_images

RETRIEVAL_MODES = ("fov", "recent", "source")


@dataclass
class PlenopticPipelineOutput(BaseOutput):
    """``videos``: one generated video per target camera path, in order (``(F, H, W, 3)`` arrays for
    ``"np"``, ``(F, 3, H, W)`` tensors in ``[0, 1]`` for ``"pt"``, lists of PIL images for ``"pil"``);
    ``conditions``: for each target, the memory indices it was conditioned on (0 = source, then the ``M``
    known videos, then ``M + k`` = target ``k - 1``)."""

    videos: list
    conditions: list[list[int]]


def frustum_points(cameras: np.ndarray, intrinsics: np.ndarray, size: int, near: float, far: float, grid: int = 6, depths: int = 6) -> np.ndarray:
    """World points filling the viewing frustums of ``cameras`` ``(F, 4, 4)``: a ``grid x grid`` pixel
    lattice of each frame, each at ``depths`` camera depths evenly spaced in ``[near, far]``."""
    pixels = (np.arange(grid) + 0.5) * size / grid
    u, v = np.meshgrid(pixels, pixels, indexing="xy")
    rays = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=-1) @ np.linalg.inv(intrinsics).T
    local = (rays[None] * np.linspace(near, far, depths)[:, None, None]).reshape(-1, 3)
    return np.concatenate([local @ camera[:3, :3].T + camera[:3, 3] for camera in cameras])


def _unit_rays(points: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Unit vectors from the centre of the camera that sampled each point (in frame order) to it."""
    centers = np.repeat(cameras[:, :3, 3], len(points) // len(cameras), axis=0)
    rays = points - centers
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def frustum_overlap(
    target_cameras: np.ndarray,
    memory_cameras: list[np.ndarray],
    intrinsics: np.ndarray,
    size: int,
    near: float = 0.5,
    far: float = 10.0,
    max_ray_angle: float = 90.0,
    memory_intrinsics: list[np.ndarray] | None = None,
) -> np.ndarray:
    """``(M,)`` share of the target path's frustum points (:func:`frustum_points`) that each memory camera
    path sees: inside the image of at least one of its frames at a depth in ``(0, far]``, looked at from
    within ``max_ray_angle`` degrees of the target's own ray to the point. ``intrinsics`` are the target's;
    ``memory_intrinsics`` (one ``(3, 3)`` per memory video) default to the same."""
    points = frustum_points(target_cameras, intrinsics, size, near, far)
    target_rays = _unit_rays(points, target_cameras)
    min_cosine = np.cos(np.deg2rad(max_ray_angle))
    scores = []
    for cameras, view_intrinsics in zip(memory_cameras, memory_intrinsics or [intrinsics] * len(memory_cameras)):
        seen = np.zeros(len(points), dtype=bool)
        for camera in cameras:
            offsets = points - camera[:3, 3]
            local = offsets @ camera[:3, :3]
            pixels = local @ view_intrinsics.T
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = pixels[:, :2] / pixels[:, 2:3]
            same_side = np.einsum("ij,ij->i", offsets / np.linalg.norm(offsets, axis=1, keepdims=True), target_rays) > min_cosine
            seen |= (local[:, 2] > 1e-6) & (local[:, 2] <= far) & (uv >= 0).all(1) & (uv <= size).all(1) & same_side
        scores.append(seen.mean())
    return np.asarray(scores)


def select_conditions(
    target_cameras: np.ndarray,
    memory_cameras: list[np.ndarray],
    retrieval_k: int,
    retrieval: str,
    intrinsics: np.ndarray,
    size: int,
    near: float = 0.5,
    far: float = 10.0,
    memory_intrinsics: list[np.ndarray] | None = None,
) -> list[int]:
    """Indices of the memory videos that condition the next view, in memory order.

    ``"fov"``: the ``retrieval_k`` highest :func:`frustum_overlap` scores (ties go to the more recent);
    ``"recent"``: the last ``retrieval_k``; ``"source"``: ``[0]``."""
    if retrieval not in RETRIEVAL_MODES:
        raise ValueError(f"retrieval must be one of {RETRIEVAL_MODES}, got {retrieval!r}")
    if retrieval == "source":
        return [0]
    count = len(memory_cameras)
    if retrieval == "recent":
        return list(range(max(0, count - retrieval_k), count))
    scores = frustum_overlap(target_cameras, memory_cameras, intrinsics, size, near, far, memory_intrinsics=memory_intrinsics)
    order = sorted(range(count), key=lambda index: (-scores[index], -index))
    return sorted(order[:retrieval_k])


def warp_condition(
    video: np.ndarray, depth: np.ndarray, cameras: np.ndarray, target_cameras: np.ndarray, intrinsics: np.ndarray,
    target_intrinsics: np.ndarray | None = None,
) -> np.ndarray:
    """The model's warp input for one target: ``video`` ``(F, H, W, 3)`` in ``[0, 1]`` with depth ``(F, H, W)``
    forward-warped into ``target_cameras`` (:func:`~selfgen.data.multiview.warp_video`), as ``(F, 4, H, W)``
    float32: RGB in ``[-1, 1]`` where a source point landed and 0 elsewhere, then the landed mask (0 / 1)."""
    warped, valid = warp_video(video, depth, cameras, target_cameras, intrinsics, target_intrinsics)
    rgb = np.where(valid[..., None], warped * 2 - 1, 0.0)
    return np.concatenate([rgb, valid[..., None]], axis=-1).transpose(0, 3, 1, 2).astype(np.float32)


def chunk_starts(num_frames: int, clip_length: int, overlap: int) -> list[int]:
    """First frame of every chunk: stride ``clip_length - overlap``, the last chunk ending at ``num_frames``."""
    if num_frames <= clip_length:
        return [0]
    stride = clip_length - overlap
    starts = list(range(0, num_frames - clip_length, stride))
    return starts + [num_frames - clip_length]


class PlenopticDreamerPipeline(SelfgenPipeline):
    """Autoregressive, retrieval-conditioned multi-view video re-rendering.

    Example::

        pipe = PlenopticDreamerPipeline.from_pretrained("assets/plenoptic-scenes")
        out = pipe(source_video=video, source_cameras=cams, target_cameras=[cams_1, cams_2, cams_3],
                   intrinsics=K, retrieval_k=2, num_inference_steps=30, generator=g, output_type="np")
        out.videos  # [(F, H, W, 3)] * 3 in [0, 1]

    ``source_video`` is ``(F, H, W, 3)`` in ``[0, 1]`` (numpy or torch) at the model's resolution; cameras
    are ``(F, 4, 4)`` camera-to-world (OpenCV axes) for every frame, ``intrinsics`` ``(3, 3)`` in pixels.
    """

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer: PlenopticTransformer, scheduler: FlowMatchEulerDiscreteScheduler) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    def check_video(self, video, name: str) -> torch.Tensor:
        """``(F, H, W, 3)`` in ``[0, 1]`` -> ``(F, 3, H, W)`` float tensor in ``[-1, 1]``, or ``ValueError``."""
        size = self.transformer.config.sample_size
        array = video_to_array(video, name)
        if array.ndim != 4 or array.shape[1:] != (size, size, 3):
            raise ValueError(f"{name} must be (num_frames, {size}, {size}, 3) in [0, 1], got shape {array.shape}")
        return torch.from_numpy(array).permute(0, 3, 1, 2) * 2 - 1

    def generate_view(
        self,
        condition_videos: torch.Tensor,
        condition_cameras: torch.Tensor,
        target_cameras: torch.Tensor,
        intrinsics: torch.Tensor,
        num_inference_steps: int,
        generator: torch.Generator | None,
        chunk_overlap: int,
        condition_intrinsics: torch.Tensor | None = None,
        warp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One target video ``(F, C, H, W)`` in ``[-1, 1]`` given conditions ``(N, F, C, H, W)`` and cameras
        (relative, ``(N, F, 4, 4)`` and ``(F, 4, 4)``) and intrinsics (the target's ``(3, 3)``, the conditions'
        ``(N, 3, 3)``, default the target's), chunk by chunk (long-video conditioning); ``warp`` ``(F, C + 1, H, W)``:
        the source warped into the target (:func:`warp_condition`), for warp-conditioned models."""
        num_frames, clip = target_cameras.shape[0], self.transformer.config.num_frames
        clip = min(clip, num_frames)
        size, channels = self.transformer.config.sample_size, self.transformer.config.in_channels
        device, dtype = self._execution_device, self.transformer.dtype
        video = torch.zeros(num_frames, channels, size, size, device=device, dtype=dtype)
        done = 0
        for start in chunk_starts(num_frames, clip, chunk_overlap):
            window = slice(start, start + clip)
            num_clean = max(0, done - start)
            latents = self.prepare_latents((1, clip, channels, size, size), dtype, generator)
            latents[:, :num_clean] = video[None, start:done]
            is_clean = (torch.arange(clip, device=device) < num_clean)[None]
            conditions = condition_videos[None, :, window].to(device, dtype)
            condition_cams = condition_cameras[None, :, window].to(device)
            cameras = target_cameras[None, window].to(device)
            condition_k = None if condition_intrinsics is None else condition_intrinsics[None].to(device)
            warp_window = None if warp is None else warp[None, window].to(device, dtype)

            def predict_velocity(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
                frame_timesteps = torch.where(is_clean, 0.0, timestep.float())
                velocity = self.transformer(
                    model_input, frame_timesteps, cameras, intrinsics[None].to(device), conditions, condition_cams, condition_k,
                    warp=warp_window,
                ).sample
                return velocity.masked_fill(is_clean[..., None, None, None], 0.0)

            latents = self.denoise(latents, num_inference_steps, predict_velocity, generator=generator)
            video[window] = latents[0].clamp(-1, 1)
            done = start + clip
        return video

    def check_depth(self, depth, num_frames: int) -> np.ndarray | None:
        """``source_depth`` as float64 ``(F, H, W)`` (positive, ``inf`` allowed for sky), or ``None``; a depth for a
        model without ``warp_conditioning`` is a ``ValueError``."""
        if depth is None:
            return None
        if not self.transformer.config.warp_conditioning:
            raise ValueError("source_depth was given but this model has no warp input (trained without warp_conditioning)")
        size = self.transformer.config.sample_size
        array = np.asarray(depth.cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float64)
        if array.shape != (num_frames, size, size):
            raise ValueError(f"source_depth must be (num_frames, {size}, {size}) = ({num_frames}, {size}, {size}), got {array.shape}")
        if np.isnan(array).any() or (array <= 0).any():
            raise ValueError("source_depth must be positive camera depths z (inf for sky), without NaN")
        return array

    def _paths(self, paths, name: str, num_frames: int) -> list[np.ndarray]:
        if not isinstance(paths, (list, tuple)):
            raise ValueError(f"{name} must be a list of (num_frames, 4, 4) camera paths")
        return [check_cameras(path, f"{name}[{index}]", num_frames) for index, path in enumerate(paths)]

    def _intrinsics(self, values, count: int, default: np.ndarray, name: str) -> list[np.ndarray]:
        if values is None:
            return [default] * count
        if len(values) != count:
            raise ValueError(f"{name} must hold one (3, 3) matrix per camera path ({count}), got {len(values)}")
        return [check_intrinsics(value, f"{name}[{index}]") for index, value in enumerate(values)]

    @torch.no_grad()
    def __call__(
        self,
        source_video,
        source_cameras,
        target_cameras: list,
        intrinsics,
        retrieval_k: int = 2,
        retrieval: str = "fov",
        num_inference_steps: int = 30,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        chunk_overlap: int = 1,
        near: float = 0.5,
        far: float = 10.0,
        target_intrinsics: list | None = None,
        known_videos: list | None = None,
        known_cameras: list | None = None,
        known_intrinsics: list | None = None,
        source_depth=None,
        return_dict: bool = True,
    ) -> PlenopticPipelineOutput | tuple:
        """Generate one video per camera path in ``target_cameras``, in order, each conditioned on up to
        ``retrieval_k`` earlier videos chosen by ``retrieval`` (``"fov"``, ``"recent"`` or ``"source"``).

        ``intrinsics`` are the source's; ``target_intrinsics`` (one per target) default to them.
        ``known_videos`` / ``known_cameras`` (/ ``known_intrinsics``): other recorded views of the scene,
        ``(F, H, W, 3)`` in ``[0, 1]`` each, that join the memory bank after the source (memory indices
        ``1..M``; the generated views follow), e.g. the other cameras of a rig, or the ground truth of the
        earlier views when measuring a chain's exposure gap. ``source_depth``: the source's camera depth ``z``
        per pixel, ``(F, H, W)``, positive, ``inf`` for sky; for a model trained with ``warp_conditioning``
        every target is also conditioned on the source warped into its cameras (without it, on no warp)."""
        self.check_sampling_inputs(1, output_type, ("latents",))
        source = self.check_video(source_video, "source_video")
        num_frames = source.shape[0]
        intrinsics = check_intrinsics(intrinsics)
        source_cameras = check_cameras(source_cameras, "source_cameras", num_frames)
        if not isinstance(target_cameras, (list, tuple)) or not target_cameras:
            raise ValueError("target_cameras must be a non-empty list of (num_frames, 4, 4) camera paths")
        targets = self._paths(target_cameras, "target_cameras", num_frames)
        targets_k = self._intrinsics(target_intrinsics, len(targets), intrinsics, "target_intrinsics")
        known = [self.check_video(video, f"known_videos[{index}]") for index, video in enumerate(known_videos or [])]
        known_paths = self._paths(known_cameras or [], "known_cameras", num_frames)
        if len(known_paths) != len(known):
            raise ValueError(f"known_cameras must hold one camera path per known video ({len(known)}), got {len(known_paths)}")
        known_k = self._intrinsics(known_intrinsics, len(known), intrinsics, "known_intrinsics")
        if retrieval_k < 1:
            raise ValueError(f"retrieval_k must be >= 1, got {retrieval_k}")
        if not 0 <= chunk_overlap < self.transformer.config.num_frames:
            raise ValueError(f"chunk_overlap must be in [0, {self.transformer.config.num_frames}), got {chunk_overlap}")
        depth = self.check_depth(source_depth, num_frames)
        reference = torch.from_numpy(source_cameras[0]).float()
        to_relative = lambda cameras: relative_cameras(torch.from_numpy(cameras).float(), reference)  # noqa: E731
        memory_videos, memory_cameras, memory_k = [source, *known], [source_cameras, *known_paths], [intrinsics, *known_k]
        size = self.transformer.config.sample_size
        videos, conditions = [], []
        for cameras, target_k in zip(targets, targets_k):
            chosen = select_conditions(cameras, memory_cameras, retrieval_k, retrieval, target_k, size, near, far, memory_k)
            warp = None
            if depth is not None:
                source_rgb = (source.permute(0, 2, 3, 1).numpy() + 1) / 2
                warp = torch.from_numpy(warp_condition(source_rgb, depth, source_cameras, cameras, intrinsics, target_k))
            video = self.generate_view(
                torch.stack([memory_videos[index] for index in chosen]),
                torch.stack([to_relative(memory_cameras[index]) for index in chosen]),
                to_relative(cameras), torch.from_numpy(target_k).float(), num_inference_steps, generator, chunk_overlap,
                torch.from_numpy(np.stack([memory_k[index] for index in chosen])).float(), warp,
            ).float().cpu()
            memory_videos.append(video)
            memory_cameras.append(cameras)
            memory_k.append(target_k)
            videos.append(video)
            conditions.append(chosen)
        outputs = [postprocess_images(video, output_type) for video in videos]
        if not return_dict:
            return outputs, conditions
        return PlenopticPipelineOutput(videos=outputs, conditions=conditions)
