"""Losses and augmentations that several methods share (DDAE++, ZoomLDM, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """One random translation of the batch by up to ``max_shift`` pixels (reflect padding): a second view."""
    padded = F.pad(images, [max_shift] * 4, mode="reflect")
    top, left = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    return padded[..., top : top + images.shape[-2], left : left + images.shape[-1]]


def info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-mean_i log softmax_j(<s_i, t_j> / tau)[i]`` with l2-normalised rows: sample ``i``'s positive is
    the teacher embedding of its own other view, the other samples of the batch are the negatives."""
    logits = F.normalize(student.float(), dim=-1) @ F.normalize(teacher.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def noisy_pair(
    images: torch.Tensor, sigmas: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_sigma, sigma, eps - x0)`` for clean ``images``: one rectified-flow training point per image."""
    noise = torch.randn_like(images)
    sigmas = torch.rand(images.shape[0], device=images.device) if sigmas is None else sigmas
    expanded = sigmas.view(-1, 1, 1, 1)
    return (1 - expanded) * images + expanded * noise, sigmas, noise - images
