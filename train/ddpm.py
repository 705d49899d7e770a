"""DDPM on images (Ho et al., 2020): the foundation's end-to-end example and the digits baseline.

``selfgen train ddpm --config configs/ddpm_digits.yaml`` trains a diffusers ``UNet2DModel`` with the
simple noise-prediction objective on ``load_digits`` (16x16, 1 channel), or on ``--data FOLDER`` of
the user's images, and exports an :class:`~selfgen.pipelines.unconditional.UnconditionalDiffusionPipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from ..data.digits import DigitsDataset
from ..eval.digits import DigitsJudge
from ..eval.plots import save_image_grid
from ..pipelines.pipeline_utils import use_scheduler
from ..pipelines.unconditional import UnconditionalDiffusionPipeline
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


@dataclass
class DDPMConfig(TrainingConfig):
    resolution: int = 16
    in_channels: int = 1
    block_out_channels: list[int] | None = None  # default [32, 64]
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    random_flip: bool = False
    on_error: str = "raise"  # a corrupt file under --data: "raise" stops, "skip" leaves it out (logged, counted)


class NoisePredictionObjective(Objective):
    """The simple DDPM loss ``E_{x0, eps, t} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2``
    (Ho et al. 2020, eq. 14), or its v-prediction form ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``."""

    def __init__(self, noise_scheduler: DDPMScheduler) -> None:
        self.noise_scheduler = noise_scheduler

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        clean = batch["pixel_values"]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device
        )
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        prediction = model(noisy, timesteps).sample
        return F.mse_loss(prediction.float(), target.float()), {}


def build_unet(config: DDPMConfig) -> UNet2DModel:
    channels = list(config.block_out_channels or [32, 64])
    return UNet2DModel(
        sample_size=config.resolution,
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        block_out_channels=channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        down_block_types=["DownBlock2D"] * len(channels),
        up_block_types=["UpBlock2D"] * len(channels),
    )


def build_dataset(config: DDPMConfig):
    if config.data is None:
        if config.in_channels != 1:
            raise ValueError("the bundled digits are 1-channel: set in_channels: 1 or pass --data FOLDER")
        return DigitsDataset("train", resolution=config.resolution)
    from ..data.images import ImageFolderDataset

    return ImageFolderDataset(
        config.data, resolution=config.resolution, channels=config.in_channels, random_flip=config.random_flip,
        on_error=config.on_error,
    )


def train(config: DDPMConfig) -> TrainResult:
    set_seed(config.seed)
    if config.pretrained:
        pretrained = UnconditionalDiffusionPipeline.from_pretrained(config.pretrained)
        unet, noise_scheduler = pretrained.unet, DDPMScheduler.from_config(pretrained.scheduler.config)
    else:
        unet = build_unet(config)
        noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type=config.prediction_type,
        )

    def export(model: UNet2DModel, directory: Path) -> None:
        UnconditionalDiffusionPipeline(unet=model, scheduler=noise_scheduler).save_pretrained(directory)

    trainer = Trainer(unet, NoisePredictionObjective(noise_scheduler), build_dataset(config), config, export_fn=export)
    return trainer.train()


def generate(
    model_path: str,
    output_dir: Path,
    num_samples: int = 64,
    num_inference_steps: int = 50,
    scheduler: str = "ddim",
    seed: int = 0,
) -> dict:
    """Sample ``num_samples`` images into ``output_dir/samples.png`` (a grid) and ``samples.npy``."""
    pipe = UnconditionalDiffusionPipeline.from_pretrained(model_path)
    use_scheduler(pipe, scheduler)
    generator = torch.Generator().manual_seed(seed)
    images = pipe(
        batch_size=num_samples, num_inference_steps=num_inference_steps, generator=generator, output_type="np"
    ).images
    output_dir.mkdir(parents=True, exist_ok=True)
    title = f"DDPM samples: {num_samples} images, {scheduler} {num_inference_steps} steps, seed {seed}"
    save_image_grid(images, output_dir / "samples.png", title=title)
    np.save(output_dir / "samples.npy", images)
    return {"num_samples": num_samples, "grid": str(output_dir / "samples.png"), "images": images}


def evaluate(
    model_path: str,
    output_dir: Path,
    num_samples: int = 256,
    num_inference_steps: int = 50,
    scheduler: str = "ddim",
    seed: int = 0,
) -> dict:
    """Judge ``num_samples`` samples with :class:`DigitsJudge`, next to uniform noise as a floor;
    writes the sample grid and returns the metrics."""
    result = generate(model_path, output_dir, num_samples, num_inference_steps, scheduler, seed)
    judge = DigitsJudge(resolution=result["images"].shape[1])
    noise = torch.rand(result["images"].shape, generator=torch.Generator().manual_seed(seed)).numpy()
    metrics = {
        "samples": judge.evaluate(result["images"]),
        "uniform_noise_baseline": judge.evaluate(noise),
        "num_samples": num_samples,
        "grid": result["grid"],
    }
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """64 DDIM samples from the bundled digits model, judged against noise."""
    return evaluate(str(asset_dir), output_dir, num_samples=64)


METHOD = Method(
    name="ddpm",
    summary="DDPM baseline: diffusers UNet2DModel on digits or an image folder (the foundation example)",
    config_class=DDPMConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="ddpm-digits",
)
