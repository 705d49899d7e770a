"""Train the tiny scene autoencoder whose frozen latents the unified model's latent generation path uses.

``selfgen train scene_autoencoder --config configs/scene_autoencoder.yaml`` trains
:func:`~selfgen.models.scene_autoencoder.scene_autoencoder` on renders of TRAINING-split prompts only (held-out
prompts appear nowhere), minimising ``||D(z) - x||^2 + kl_weight * KL(q(z|x) || N(0, I))`` with ``z`` sampled from
the posterior (the VAE objective of Kingma & Welling, 2014, with FLUX's perceptual and adversarial terms left out:
see the model's module docstring). The export is the ``AutoencoderKL`` folder with ``shift_factor`` and
``scaling_factor`` measured on fresh training renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn
from torch.utils.data import Dataset

from ..data.scenes import CATEGORIES, ScenesDataset, render_scene, to_pixels
from ..models.scene_autoencoder import scene_autoencoder, set_latent_normalisation
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


class SceneRenders(Dataset):
    """Renders of seeded scenes (``ScenesDataset``'s prompts and layouts): ``{"pixel_values": (3, 32, 32)}``."""

    def __init__(self, num_examples: int, split: str = "train", seed: int = 0,
                 categories: tuple[str, ...] = CATEGORIES) -> None:
        self.scenes = ScenesDataset(num_examples, split=split, seed=seed, categories=categories)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        _, objects, _ = self.scenes.example(index)
        return {"pixel_values": to_pixels(render_scene(objects))}


@dataclass
class SceneAutoencoderConfig(TrainingConfig):
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # downsample 2 ** (levels - 1)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    kl_weight: float = 1e-4  # weight of the mean per-element KL against the mean per-pixel squared error
    num_train_scenes: int = 200000
    normalisation_scenes: int = 1024  # fresh training renders (data seed + 1) that set shift/scaling_factor

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.normalisation_scenes < 2:
            raise ValueError(f"normalisation_scenes must be >= 2, got {self.normalisation_scenes}")


class AutoencoderObjective(Objective):
    """``mean (D(z) - x)^2 + kl_weight * mean KL(N(mu, sigma^2) || N(0, 1))``, ``z ~ q(z|x)`` (reparameterised)."""

    def __init__(self, kl_weight: float) -> None:
        self.kl_weight = kl_weight

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        pixels = batch["pixel_values"]
        posterior = model.encode(pixels).latent_dist
        reconstruction = model.decode(posterior.sample()).sample
        mse = F.mse_loss(reconstruction.float(), pixels.float())
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return mse + self.kl_weight * kl, {"mse": mse.item(), "kl": kl.item()}


def train(config: SceneAutoencoderConfig) -> TrainResult:
    if config.pretrained:
        raise ValueError("the scene autoencoder trains from scratch; pretrained is not supported")
    model = scene_autoencoder(
        tuple(config.block_out_channels), config.latent_channels, config.layers_per_block, config.norm_num_groups
    )
    normalisation = SceneRenders(config.normalisation_scenes, seed=config.seed + 1)

    def export(module: AutoencoderKL, directory: Path) -> None:
        pixels = torch.stack([normalisation[i]["pixel_values"] for i in range(len(normalisation))])
        module.eval()
        set_latent_normalisation(module, pixels)
        module.save_pretrained(directory)

    dataset = SceneRenders(config.num_train_scenes, seed=config.seed)
    return Trainer(model, AutoencoderObjective(config.kl_weight), dataset, config, export_fn=export).train()


METHOD = Method(
    name="scene_autoencoder",
    summary="the tiny KL autoencoder (32x32x3 -> 8x8x4) of the unified model's latent generation path",
    config_class=SceneAutoencoderConfig,
    train=train,
)
