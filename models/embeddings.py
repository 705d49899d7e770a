"""Shared conditioning primitives: camera embeddings for camera-controlled generators.

Camera convention (OpenCV, used across selfgen): a camera is a ``4 x 4`` camera-to-world matrix
``[R | t]`` whose columns of ``R`` are the camera's right (``x``), down (``y``) and viewing (``z``) axes
in world coordinates and ``t`` is its centre; intrinsics ``K`` map camera coordinates to pixels,
``(u, v, 1)^T ~ K x_cam`` with ``(0, 0)`` the top-left corner of the top-left pixel.

* :func:`relative_cameras` re-expresses cameras in the frame of a reference camera, ``C' = C_ref^{-1} C``
  (ReCamMaster and PlenopticDreamer condition on cameras relative to the source video's first frame).
* :func:`plucker_ray_map` is the per-pixel Plücker ray ``(d, o x d)`` of every camera (6 channels).
* :class:`PluckerPatchEmbedding` patchifies a ray map like the video and projects it to the token width,
  so each video token carries the rays of the pixels it covers; :func:`patchify` / :func:`unpatchify`
  cut images into (and back from) those row-major patch tokens.
"""

from __future__ import annotations

import torch
from torch import nn


def relative_cameras(cameras: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``reference^{-1} @ cameras``: camera-to-world matrices ``(..., 4, 4)`` expressed in the frame of
    ``reference`` (``(..., 4, 4)``, broadcastable), so the reference camera becomes the identity."""
    return torch.linalg.inv(reference) @ cameras


def pixel_rays(cameras: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions through every pixel centre.

    ``d = normalize(R K^{-1} (u + 1/2, v + 1/2, 1)^T)``, ``o = t``. ``cameras`` ``(..., 4, 4)``,
    ``intrinsics`` ``(..., 3, 3)`` broadcastable to the same leading shape. Returns ``(origins,
    directions)``, each ``(..., height, width, 3)``.
    """
    rows = torch.arange(height, dtype=cameras.dtype, device=cameras.device) + 0.5
    cols = torch.arange(width, dtype=cameras.dtype, device=cameras.device) + 0.5
    grid_v, grid_u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([grid_u, grid_v, torch.ones_like(grid_u)], dim=-1)  # (H, W, 3)
    inverse_k = torch.linalg.inv(intrinsics.to(cameras.dtype))
    camera_dirs = torch.einsum("...ij,hwj->...hwi", inverse_k, pixels)
    world_dirs = torch.einsum("...ij,...hwj->...hwi", cameras[..., :3, :3], camera_dirs)
    directions = world_dirs / world_dirs.norm(dim=-1, keepdim=True)
    origins = cameras[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def plucker_ray_map(cameras: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Plücker coordinates ``(d, o x d)`` of every pixel's ray: ``(..., 6, height, width)``.

    The moment ``o x d`` makes the embedding depend on the camera position, not only on its rotation.
    """
    with torch.autocast(cameras.device.type, enabled=False):  # geometry stays in float32 under autocast
        origins, directions = pixel_rays(cameras.float(), intrinsics.float(), height, width)
        rays = torch.cat([directions, torch.cross(origins, directions, dim=-1)], dim=-1)
    return rays.movedim(-1, -3)


class PluckerPatchEmbedding(nn.Module):
    """Camera tokens: the Plücker ray map cut into ``patch_size x patch_size`` patches, each projected
    linearly to ``hidden_size``. ``forward(cameras (..., 4, 4), intrinsics (..., 3, 3), height, width)``
    returns ``(..., num_patches, hidden_size)`` in the same row-major patch order as the video tokens."""

    def __init__(self, patch_size: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(6 * patch_size * patch_size, hidden_size)

    def forward(self, cameras: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
        rays = plucker_ray_map(cameras, intrinsics, height, width)
        return self.proj(patchify(rays, self.patch_size).to(self.proj.weight.dtype))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(..., C, H, W)`` -> ``(..., (H/p) (W/p), C p p)``: non-overlapping patches in row-major order."""
    *leading, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(-1, channels, rows, patch_size, cols, patch_size).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(*leading, rows * cols, channels * patch_size * patch_size)


def unpatchify(tokens: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(..., (H/p) (W/p), C p p)`` -> ``(..., C, H, W)``."""
    *leading, _, _ = tokens.shape
    rows, cols = height // patch_size, width // patch_size
    patches = tokens.reshape(-1, rows, cols, channels, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(*leading, channels, height, width)
