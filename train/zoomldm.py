"""ZoomLDM training: four stages, one :class:`Trainer` each, on multi-scale patches of large images.

1. **autoencoder** -- ``L = ||x - D(z)||^2 + beta KL(q(z|x) || N(0, I))`` on patches of every level; a small
   ``diffusers.AutoencoderKL`` (``autoencoder: kl``, the bundled checkpoints) or
   :class:`~selfgen.models.zoomldm.ZoomAutoencoder` (``autoencoder: patch``, ``configs/zoomldm_*_patchae.yaml``:
   PCA-initialised, norm-free, 8 channels at f4, channels standardised); afterwards ``scaling_factor = 1 / std(z)``.
2. **SSL encoder** -- SimCLR on level-0 patches: two random views (flip, rotation, shift, colour jitter),
   ``L = InfoNCE(g(e(v1)), g(e(v2)))``. Its embeddings of every image's level-0 grid are then computed
   once and attached to the data: a level-``k`` patch is conditioned on its ``2^k x 2^k`` sub-patch
   embeddings pooled to ``min(2^k, G)`` per side.
3. **latent diffusion** -- ``L = E ||eps - eps_theta(sqrt(a_t) z_0 + sqrt(1 - a_t) eps, t, c(s, k))||^2`` with
   the summarizer trained jointly and the context replaced by the null context with probability
   ``condition_dropout`` (classifier-free guidance).
4. **conditioning diffusion** (CDM) -- ``L = E ||eps - eps_phi(s_t, t, k)||^2`` on the embedding grids.

Stages 3 and 4 draw a magnification uniformly and then a patch of it (``uniform_magnification``, the official
loader; :class:`~selfgen.data.zoom.UniformMagnificationDataset`).

``selfgen train zoomldm --config configs/zoomldm_retina_patchae_vunet.yaml --export_dir assets/zoomldm-retina``
rebuilds the bundled retina model (patch autoencoder, UNet denoiser, v-prediction) and
``configs/zoomldm_ihc_patchae_vunet.yaml --export_dir assets/zoomldm-ihc`` the bundled IHC one (3 levels);
``configs/zoomldm_retina.yaml`` and ``configs/zoomldm_ihc.yaml`` train the previous ones (DiT on an
``AutoencoderKL``); ``configs/zoomldm_retina_single.yaml`` (``levels: [0]``) trains the single-scale baseline
(highest magnification only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import BaseOutput
from torch import nn

from ..data.zoom import UniformMagnificationDataset, ZoomPatchDataset
from ..eval.plots import save_image_grid
from ..models.zoomldm import (
    ZoomAutoencoder,
    ZoomConditioner,
    ZoomEmbeddingDiffusion,
    ZoomLDMDenoiser,
    ZoomSSLEncoder,
    tokens_to_full_grid,
)
from ..pipelines.zoomldm import COUPLINGS, ZoomLDMPipeline, assemble_tiles, diffusion_target, match_low_frequencies
from .config import TrainingConfig
from .losses import info_nce, random_shift
from .registry import Method
from .trainer import Objective, TrainResult, Trainer


@dataclass
class ZoomLDMConfig(TrainingConfig):
    images: list[str] = field(default_factory=lambda: ["retina"])  # bundled names; --data FOLDER uses yours
    patch_size: int = 32
    num_levels: int = 4
    levels: list[int] | None = None  # levels to train on (default all); [0] = single-scale baseline
    max_grid: int = 4
    uniform_magnification: bool = True  # stages 3-4: level ~ U{levels}, then a patch (official); False: shuffle patches
    # stage 1: autoencoder; "kl" = diffusers AutoencoderKL with blocks vae_channels, "patch" = ZoomAutoencoder
    # (PCA-initialised, norm-free) with hidden width vae_channels[-1]; either way f = 2^(len(vae_channels) - 1)
    autoencoder: str = "patch"
    vae_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    latent_channels: int = 4
    kl_weight: float = 1e-6
    latent_noise: float = 0.0  # "patch" only: posterior std floor (fraction of each channel's std)
    vae_steps: int = 600
    vae_learning_rate: float = 1e-3
    # stage 2: SSL encoder
    ssl_dim: int = 32
    ssl_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    ssl_steps: int = 300
    ssl_learning_rate: float = 1e-3
    ssl_temperature: float = 0.2
    # stage 3: latent denoiser (uses max_train_steps / learning_rate); "dit" = ZoomLDMDenoiser, "unet" = a diffusers
    # UNet2DConditionModel (blocks unet_channels, cross-attention on the ZoomConditioner's tokens; the paper's kind)
    denoiser: str = "dit"
    unet_channels: list[int] = field(default_factory=lambda: [64, 64])
    latent_patch_size: int = 2
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    summarizer_hidden: int = 64
    summarizer_depth: int = 2
    context_dim: int = 64
    condition_dropout: float = 0.1
    num_train_timesteps: int = 1000
    # denoiser and CDM target: "epsilon" (the paper) or "v_prediction"; rescale_betas_zero_snr (needs v_prediction)
    # rescales the schedule to a zero terminal SNR (Lin et al. 2024) and samples with "trailing" timesteps
    prediction_type: str = "epsilon"
    rescale_betas_zero_snr: bool = False
    # stage 4: conditioning diffusion model
    cdm_hidden: int = 96
    cdm_depth: int = 3
    cdm_steps: int = 600
    cdm_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size % 2 ** (len(self.vae_channels) - 1):
            factor = 2 ** (len(self.vae_channels) - 1)
            raise ValueError(f"patch_size ({self.patch_size}) must be divisible by the VAE downsampling {factor}")
        if self.autoencoder not in ("kl", "patch"):
            raise ValueError(f"autoencoder must be 'kl' or 'patch', got {self.autoencoder!r}")
        if self.denoiser not in ("dit", "unet"):
            raise ValueError(f"denoiser must be 'dit' or 'unet', got {self.denoiser!r}")
        if not 0 <= self.condition_dropout < 1:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise ValueError("rescale_betas_zero_snr needs prediction_type: v_prediction (at a_T = 0, eps gives no x0)")
        if not (math.isfinite(self.latent_noise) and self.latent_noise >= 0):
            raise ValueError(f"latent_noise must be finite and >= 0, got {self.latent_noise}")


# ---------------------------------------------------------------------- objectives


class AutoencoderObjective(Objective):
    """``||x - D(z)||^2 + beta KL``, ``z ~ q(z | x)``."""

    def __init__(self, kl_weight: float) -> None:
        self.kl_weight = kl_weight

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        vae = getattr(model, "module", model)
        pixels = batch["pixel_values"]
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(reconstruction.float(), pixels.float())
        kl = posterior.kl().mean()
        return mse + self.kl_weight * kl, {"mse": mse.item(), "kl": kl.item()}


def augment(pixels: torch.Tensor) -> torch.Tensor:
    """A SimCLR view: per-sample horizontal flip and colour jitter ``a x + b``, one rot90 and one shift per batch."""
    count = len(pixels)
    flip = torch.rand(count, 1, 1, 1, device=pixels.device) < 0.5
    view = torch.where(flip, pixels.flip(-1), pixels)
    view = torch.rot90(view, int(torch.randint(0, 4, ())), dims=(-2, -1))
    gain = 1 + 0.2 * (torch.rand(count, 1, 1, 1, device=pixels.device) - 0.5)
    bias = 0.2 * (torch.rand(count, 3, 1, 1, device=pixels.device) - 0.5)
    return random_shift((view * gain + bias).clamp(-1, 1), max_shift=4)


class SSLObjective(Objective):
    """SimCLR: ``InfoNCE(g(e(v1)), g(e(v2)))`` between two augmented views of each level-0 patch."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        encoder = getattr(model, "module", model)
        pixels = batch["pixel_values"]
        first, second = encoder.project(encoder(augment(pixels))), encoder.project(encoder(augment(pixels)))
        loss = (info_nce(first, second, self.temperature) + info_nce(second, first, self.temperature)) / 2
        return loss, {}


class LatentDiffusionObjective(Objective):
    """``||eps - eps_theta(z_t, t, summarizer(s, k))||^2`` on frozen-VAE latents, with condition dropout (or the
    velocity ``v`` under ``prediction_type: v_prediction``, :func:`diffusion_target`)."""

    def __init__(self, vae: AutoencoderKL, noise_scheduler: DDPMScheduler, condition_dropout: float) -> None:
        self.vae, self.noise_scheduler, self.condition_dropout = vae, noise_scheduler, condition_dropout

    def setup(self, accelerator) -> None:
        self.vae.to(accelerator.device).requires_grad_(False).eval()

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            latents = self.vae.encode(batch["pixel_values"]).latent_dist.sample() * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(latents),), device=latents.device)
        drop = torch.rand(len(latents), device=latents.device) < self.condition_dropout
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = model(noisy, timesteps, batch["ssl_tokens"], batch["ssl_mask"], batch["magnification"], drop).sample
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        return F.mse_loss(prediction.float(), target), {}


def full_grids(tokens: torch.Tensor, levels: torch.Tensor, max_grid: int) -> torch.Tensor:
    """Each sample's pooled tokens as its ``G x G`` grid (nearest-upsampled), the CDM's fixed-size target."""
    grids = torch.empty_like(tokens)
    for level in levels.unique().tolist():
        chosen = levels == level
        grids[chosen] = tokens_to_full_grid(tokens[chosen], level, max_grid)
    return grids


class EmbeddingDiffusionObjective(Objective):
    """``||eps - eps_phi(s_t, t, k)||^2`` on the SSL-embedding grids (or ``v``, :func:`diffusion_target`)."""

    def __init__(self, noise_scheduler: DDPMScheduler, max_grid: int) -> None:
        self.noise_scheduler, self.max_grid = noise_scheduler, max_grid

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        grids = full_grids(batch["ssl_tokens"], batch["magnification"], self.max_grid)
        noise = torch.randn_like(grids)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(grids),), device=grids.device)
        prediction = model(self.noise_scheduler.add_noise(grids, noise, timesteps), timesteps, batch["magnification"]).sample
        return F.mse_loss(prediction.float(), diffusion_target(self.noise_scheduler, grids, noise, timesteps)), {}


# ---------------------------------------------------------------------- stages


def build_dataset(config: ZoomLDMConfig, split: str = "train", levels: list[int] | None = None) -> ZoomPatchDataset:
    source: Any = config.data if config.data is not None else config.images
    return ZoomPatchDataset(
        source, split, config.patch_size, config.num_levels, levels if levels is not None else config.levels, config.max_grid
    )


def stage_config(config: ZoomLDMConfig, name: str, steps: int, learning_rate: float, **changes) -> ZoomLDMConfig:
    return dataclasses.replace(
        config,
        output_dir=str(Path(config.output_dir) / name),
        export_dir=None,
        max_train_steps=steps,
        learning_rate=learning_rate,
        **changes,
    )


def run_stage(model: nn.Module, objective: Objective, dataset, config: ZoomLDMConfig) -> nn.Module:
    """Train one stage and reload its exported weights (EMA-applied when ``use_ema``)."""
    result = Trainer(model, objective, dataset, config).train()
    return type(model).from_pretrained(result.pipeline_dir)


def build_vae(config: ZoomLDMConfig, dataset: ZoomPatchDataset) -> AutoencoderKL | ZoomAutoencoder:
    """The stage-1 autoencoder; a ``patch`` one starts from the PCA code of the training patches' blocks."""
    count = len(config.vae_channels)
    if config.autoencoder == "patch":
        vae = ZoomAutoencoder(
            latent_channels=config.latent_channels,
            factor=2 ** (count - 1),
            hidden=config.vae_channels[-1],
            latent_noise=config.latent_noise,
        )
        vae.init_from_pca(training_patches(dataset))
        return vae
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * count,
        up_block_types=("UpDecoderBlock2D",) * count,
        block_out_channels=tuple(config.vae_channels),
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=16,
        sample_size=config.patch_size,
    )


def training_patches(dataset: ZoomPatchDataset, count: int = 2048) -> torch.Tensor:
    """Up to ``count`` evenly spaced training patches ``(N, 3, P, P)`` in ``[-1, 1]``."""
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    return torch.stack([dataset[int(index)]["pixel_values"] for index in picks])


@torch.no_grad()
def set_latent_scale(vae: AutoencoderKL | ZoomAutoencoder, dataset: ZoomPatchDataset, count: int = 512) -> None:
    """``scaling_factor = 1 / std(z)`` over up to ``count`` evenly spaced training patches (LDM convention); a
    :class:`ZoomAutoencoder` first standardises each latent channel (``channel_scale``)."""
    pixels = training_patches(dataset, count)
    if isinstance(vae, ZoomAutoencoder):
        vae.set_channel_scale(pixels)
    latents = vae.eval().encode(pixels).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


@torch.no_grad()
def embed_level0_grids(encoder: ZoomSSLEncoder, dataset: ZoomPatchDataset, batch_size: int = 512) -> list[torch.Tensor]:
    """SSL embeddings ``(rows, cols, D)`` of every image's level-0 grid."""
    encoder.eval()
    grids = []
    for image_id in range(len(dataset.images)):
        patches = dataset.level0_grid(image_id)
        rows, cols = patches.shape[:2]
        flat = patches.reshape(rows * cols, *patches.shape[2:]) * 2 - 1
        embeddings = torch.cat([encoder(flat[start : start + batch_size]) for start in range(0, len(flat), batch_size)])
        grids.append(embeddings.reshape(rows, cols, -1))
    return grids


def build_noise_scheduler(config: ZoomLDMConfig) -> DDPMScheduler:
    """The LDM's scaled-linear schedule (``beta`` 0.0015 ... 0.0195, terminal ``a_T = 1.4e-4``) with the config's
    ``prediction_type``; ``rescale_betas_zero_snr`` rescales it to ``a_T = 0`` and samples ``trailing`` timesteps, so
    the first DDIM step starts at ``T`` (Lin et al. 2024)."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule="scaled_linear",
        beta_start=0.0015,
        beta_end=0.0195,
        clip_sample=False,  # x0 estimates are unit-variance latents, not [-1, 1] pixels
        prediction_type=config.prediction_type,
        rescale_betas_zero_snr=config.rescale_betas_zero_snr,
        timestep_spacing="trailing" if config.rescale_betas_zero_snr else "leading",
    )


class ConditionedUNet(nn.Module):
    """Training adapter for ``denoiser: unet``: ``unet(z_t, t, encoder_hidden_states=conditioner(s, mask, k, drop))``
    with the :class:`ZoomLDMDenoiser` call signature; the pipeline receives ``unet`` and ``conditioner`` separately."""

    def __init__(self, unet: UNet2DConditionModel, conditioner: ZoomConditioner) -> None:
        super().__init__()
        self.unet, self.conditioner = unet, conditioner

    def forward(self, noisy, timesteps, tokens, mask, magnification, drop_condition=None) -> BaseOutput:
        context = self.conditioner(tokens, mask, magnification, drop_condition)
        return BaseOutput(sample=self.unet(noisy, timesteps, encoder_hidden_states=context).sample)

    def save_pretrained(self, directory: str | Path) -> None:
        self.unet.save_pretrained(Path(directory) / "unet")
        self.conditioner.save_pretrained(Path(directory) / "conditioner")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ConditionedUNet:
        unet = UNet2DConditionModel.from_pretrained(Path(directory) / "unet")
        return cls(unet, ZoomConditioner.from_pretrained(Path(directory) / "conditioner"))


def build_unet(config: ZoomLDMConfig) -> ConditionedUNet:
    """A ``UNet2DConditionModel`` (one resolution per entry of ``unet_channels``, cross-attention in the outer
    blocks) and the :class:`ZoomConditioner` whose tokens it attends to (magnification as a token)."""
    channels, depth = tuple(config.unet_channels), len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.patch_size // 2 ** (len(config.vae_channels) - 1),
        in_channels=config.latent_channels, out_channels=config.latent_channels, block_out_channels=channels,
        layers_per_block=1, cross_attention_dim=config.context_dim, attention_head_dim=channels[0] // config.num_heads,
        norm_num_groups=math.gcd(*channels, 16),
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (depth - 1),
        up_block_types=("UpBlock2D",) * (depth - 1) + ("CrossAttnUpBlock2D",),
    )
    conditioner = ZoomConditioner(config.ssl_dim, config.summarizer_hidden, config.context_dim, config.max_grid,
                                  config.num_levels, config.summarizer_depth, config.num_heads, config.patch_size)
    return ConditionedUNet(unet, conditioner)


def build_denoiser(config: ZoomLDMConfig) -> ZoomLDMDenoiser | ConditionedUNet:
    if config.denoiser == "unet":
        return build_unet(config)
    return ZoomLDMDenoiser(
        sample_size=config.patch_size // 2 ** (len(config.vae_channels) - 1),
        in_channels=config.latent_channels,
        patch_size=config.latent_patch_size,
        hidden_size=config.hidden_size,
        depth=config.depth,
        num_heads=config.num_heads,
        ssl_dim=config.ssl_dim,
        max_grid=config.max_grid,
        num_levels=config.num_levels,
        summarizer_hidden=config.summarizer_hidden,
        summarizer_depth=config.summarizer_depth,
        context_dim=config.context_dim,
        image_patch_size=config.patch_size,
    )


def train(config: ZoomLDMConfig) -> TrainResult:
    set_seed(config.seed)
    dataset = build_dataset(config)
    noise_scheduler = build_noise_scheduler(config)
    vae_config = stage_config(config, "autoencoder", config.vae_steps, config.vae_learning_rate, use_ema=False)
    vae = run_stage(build_vae(config, dataset), AutoencoderObjective(config.kl_weight), dataset, vae_config)
    set_latent_scale(vae, dataset)

    ssl_dataset = build_dataset(config, levels=[0])
    ssl_config = stage_config(config, "ssl", config.ssl_steps, config.ssl_learning_rate, use_ema=False)
    encoder = ZoomSSLEncoder(config.ssl_dim, tuple(config.ssl_channels), config.ssl_dim)
    encoder = run_stage(encoder, SSLObjective(config.ssl_temperature), ssl_dataset, ssl_config)
    dataset.attach_embeddings(embed_level0_grids(encoder, dataset))

    conditioned = UniformMagnificationDataset(dataset, config.seed) if config.uniform_magnification else dataset
    ldm_config = stage_config(config, "ldm", config.max_train_steps, config.learning_rate)
    objective = LatentDiffusionObjective(vae, noise_scheduler, config.condition_dropout)
    denoiser = run_stage(build_denoiser(config), objective, conditioned, ldm_config)

    cdm = ZoomEmbeddingDiffusion(
        config.ssl_dim, config.max_grid, config.num_levels, config.cdm_hidden, config.cdm_depth, config.num_heads
    )

    def export(model: ZoomEmbeddingDiffusion, directory: Path) -> None:
        denoising = {"denoiser": denoiser.eval()}
        if isinstance(denoiser, ConditionedUNet):
            denoising = {"denoiser": denoiser.unet, "conditioner": denoiser.conditioner}
        pipe = ZoomLDMPipeline(
            vae=vae.eval(),
            ssl_encoder=encoder.eval(),
            embedding_model=model,
            scheduler=DDIMScheduler.from_config(noise_scheduler.config),
            **denoising,
        )
        pipe.save_pretrained(directory)

    cdm_config = stage_config(config, "cdm", config.cdm_steps, config.cdm_learning_rate, use_ema=False)
    cdm_config.export_dir = str(config.pipeline_dir)
    objective = EmbeddingDiffusionObjective(noise_scheduler, config.max_grid)
    result = Trainer(cdm, objective, conditioned, cdm_config, export_fn=export).train()
    return TrainResult(result.global_step, result.pipeline_dir, result.history)


# ---------------------------------------------------------------------- CLI: generate / eval / demo


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def load_pipeline(model_path: str) -> ZoomLDMPipeline:
    if not (Path(model_path) / "model_index.json").is_file():
        raise FileNotFoundError(f"--model {model_path}: not a pipeline folder (expected model_index.json inside)")
    return ZoomLDMPipeline.from_pretrained(model_path)


def parse_size(large: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in large.lower().split("x"))
    except ValueError:
        raise ValueError(f"--large must look like 256x256 (HEIGHTxWIDTH), got {large!r}") from None
    return height, width


def generate(
    model_path: str,
    output_dir: Path,
    magnification: int = 0,
    num_samples: int = 16,
    large: str | None = None,
    coupling: str = "guidance",
    num_inference_steps: int = 25,
    seed: int = 0,
) -> dict:
    """``num_samples`` patches at ``magnification`` into ``samples.png``; with ``--large HxW`` one jointly
    sampled large image (any multiple of the patch size) into ``large.png`` instead (``--coupling none``: no
    cross-magnification guidance)."""
    pipe = load_pipeline(model_path)
    generator = torch.Generator().manual_seed(seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    if large is not None:
        height, width = parse_size(large)
        image = pipe.generate_large_image(
            height, width, coupling=coupling, num_inference_steps=num_inference_steps, generator=generator, output_type="pil"
        ).images[0]
        image.save(output_dir / "large.png")
        return {"large": str(output_dir / "large.png"), "size": [height, width]}
    images = pipe(
        magnification=magnification,
        num_images=num_samples,
        num_inference_steps=num_inference_steps,
        generator=generator,
        output_type="np",
    ).images
    save_image_grid(images, output_dir / "samples.png")
    return {"grid": str(output_dir / "samples.png"), "num_samples": num_samples, "magnification": magnification}


@torch.no_grad()
def ssl_features(pipe: ZoomLDMPipeline, images: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2) * 2 - 1
    return pipe.ssl_encoder(pixels).numpy()


def sample_patches(pipe: ZoomLDMPipeline, level: int, count: int, steps: int, seed: int, tiled: bool) -> np.ndarray:
    """``count`` level-``level`` patches: sampled at that magnification, or (``tiled``, for a single-scale model)
    as ``2^level x 2^level`` independently sampled level-0 patches stitched and area-downsampled."""
    from ..eval.zoom import area_downsample

    generator = seeded(seed)
    if not tiled:
        return pipe(level, count, num_inference_steps=steps, generator=generator, output_type="np").images
    cells = 2**level
    tiles = pipe(0, count * cells * cells, num_inference_steps=steps, generator=generator, output_type="pt").images
    stitched = assemble_tiles(tiles, cells, cells).permute(0, 2, 3, 1).numpy()
    return area_downsample(stitched, cells).astype(np.float32)


def real_windows(images: list[str], split: str, level: int, patch_size: int, limit: int, stride: int = 16) -> np.ndarray:
    """Up to ``limit`` evenly spaced level-``level`` patches of ``split``'s columns taken every ``stride`` source
    pixels (denser than the training grid, so the coarse levels have enough real patches), ``(N, P, P, 3)``."""
    from ..data.zoom import area_downsample, load_large_images, split_bounds

    extent, patches = patch_size * 2**level, []
    for _, image in load_large_images(images):
        start, stop = split_bounds(image.shape[-1], split)
        for top in range(0, image.shape[-2] - extent + 1, stride):
            for left in range(start, stop - extent + 1, stride):
                patches.append(image[:, top : top + extent, left : left + extent])
    picks = np.linspace(0, len(patches) - 1, min(limit, len(patches))).astype(int)
    windows = area_downsample(torch.stack([patches[index] for index in picks]), 2**level)
    return windows.permute(0, 2, 3, 1).numpy()


def patch_quality(
    pipe, judge, images: list[str], levels: list[int], num_samples: int, steps: int, seed: int, tiled: bool = False
) -> dict:
    """Per-level Frechet distance between ``num_samples`` samples and up to ``num_samples`` held-out patches
    (:func:`real_windows`) with two judges: a fixed random CNN no model trained (``random_cnn_features``) and
    ``judge``'s SSL encoder (which the model was conditioned on); ``real_floor`` is the random-CNN distance of as
    many training patches to the held-out ones (what a model reproducing the training data would score)."""
    from ..eval.zoom import frechet_distance, random_cnn_features

    scores = {}
    for level in levels:
        real = real_windows(images, "test", level, judge.patch_size, num_samples)
        fake = sample_patches(pipe, level, num_samples, steps, seed, tiled)
        train_real = real_windows(images, "train", level, judge.patch_size, len(real))
        scores[level] = {
            "frechet_random_cnn": frechet_distance(random_cnn_features(fake), random_cnn_features(real)),
            "frechet_ssl": frechet_distance(ssl_features(judge, fake), ssl_features(judge, real)),
            "real_floor_random_cnn": frechet_distance(random_cnn_features(train_real), random_cnn_features(real)),
            "num_real": len(real),
            "num_samples": len(fake),
        }
    return scores


LARGE_SAMPLERS = {  # name: (coupling, overlapping windows, label)
    "joint_overlap": ("guidance", True, "joint sampling, overlapping windows (official)"),
    "joint_no_overlap": ("guidance", False, "joint sampling, disjoint windows"),
    "naive_tiling": ("none", False, "naive tiling"),
}


def large_image_scores(
    pipe: ZoomLDMPipeline,
    size: int,
    steps: int,
    seeds: list[int],
    output_dir: Path,
    samplers: tuple[str, ...] = tuple(LARGE_SAMPLERS),
    window_stride: int | None = None,
    shift_average: bool | None = None,
) -> dict:
    """Seam score and low-vs-high consistency PSNR (downsampled large image vs the view sampled with it) of
    :data:`LARGE_SAMPLERS` with the same seeds, noise and conditions: the official sliding-window joint sampler
    (overlapping windows, averaged clean estimates, blended decoding, gradient coupling), the same coupling on
    disjoint windows, and naive tiling. ``window_stride`` sets the overlapping sampler's stride, ``shift_average`` the
    final decode's (``None``: the pipeline's default)."""
    from ..eval.zoom import consistency_psnr, seam_score

    if unknown := set(samplers) - set(LARGE_SAMPLERS):
        raise ValueError(f"large samplers must be a subset of {list(LARGE_SAMPLERS)}, got {sorted(unknown)}")
    scores = {}
    for name in samplers:
        coupling, overlap, label = LARGE_SAMPLERS[name]
        stride = pipe.check_window_stride(window_stride, pipe.odd_stride) if overlap else pipe.window
        label = f"{label}, window stride {stride}"
        started = time.perf_counter()
        outputs = [
            pipe.generate_large_image(size, size, coupling=coupling, window_stride=stride, num_inference_steps=steps,
                                      shift_average=shift_average, generator=seeded(seed), output_type="np")
            for seed in seeds
        ]
        seconds = (time.perf_counter() - started) / len(seeds)
        images, views = np.concatenate([o.images for o in outputs]), np.concatenate([o.views for o in outputs])
        save_image_grid(
            images, output_dir / f"large_{size}_{name}.png", columns=len(seeds), scale=2,
            column_labels=[f"seed {seed}" for seed in seeds], title=f"{size}x{size} image, {label}",
        )
        scores[name] = {
            "seam_score": seam_score(images, pipe.patch_size),
            "consistency_psnr": consistency_psnr(images, views),
            "seconds_per_image": seconds,
        }
    return scores


def held_out_regions(dataset: ZoomPatchDataset, count: int, size: int, split: str = "test") -> list:
    """Up to ``count`` held-out ``size``-pixel regions (``PatchIndex`` of ``dataset``, a test-split dataset of the level
    covering ``size`` pixels): ``count`` evenly spaced ones (``split="test"``), or (``split="validation"``, for
    choosing sampler settings) ``count`` evenly spaced ones among those sharing no pixel with the test ones."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")

    def evenly(entries: list) -> list:
        return [entries[int(index)] for index in np.linspace(0, len(entries) - 1, min(count, len(entries)))]

    def overlaps(a, b) -> bool:
        return a.image == b.image and abs(a.top - b.top) < size and abs(a.left - b.left) < size

    test = evenly(dataset.index)
    regions = test if split == "test" else evenly([e for e in dataset.index if not any(overlaps(e, t) for t in test)])
    if not regions:
        raise ValueError(f"no {split} region of {size} px: every held-out region overlaps the {len(test)} test crops "
                         f"(ask for fewer crops, num_sr)")
    return regions


def held_out_crops(pipe: ZoomLDMPipeline, images: list[str], count: int, size: int, split: str = "test") -> np.ndarray:
    """The :func:`held_out_regions` of ``split`` as full-resolution crops, ``(N, size, size, 3)`` in ``[0, 1]``."""
    level = int(np.log2(size // pipe.patch_size))
    dataset = ZoomPatchDataset(images, "test", pipe.patch_size, max(pipe.num_levels, level + 1), [level],
                               pipe.max_grid)
    return np.stack([
        dataset.images[e.image][1][:, e.top : e.top + size, e.left : e.left + size].permute(1, 2, 0).numpy()
        for e in held_out_regions(dataset, count, size, split)
    ])


def to_pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2) * 2 - 1


def to_numpy(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def autoencoder_round_trip(pipe: ZoomLDMPipeline, images: np.ndarray, overlap: bool = True) -> np.ndarray:
    """Held-out images encoded tile by tile and decoded as a canvas (Gaussian-blended overlapping windows, or
    disjoint tiles): the best any sampler in this latent space can reproduce them."""
    latents = pipe.encode_canvas(to_pixels(images))
    stride = pipe.window // 2 if overlap else pipe.window
    return to_numpy(pipe.decode_canvas(latents, stride, 16))


def super_resolution_scores(
    pipe: ZoomLDMPipeline, images: list[str], count: int, steps: int, seed: int, num_draws: int = 3,
    strength: float = 1.0, split: str = "test", output_dir: Path | None = None, sr_guidance: str = "clean_gradient",
    shift_average: bool | None = None,
) -> dict:
    """4x SR of held-out full-resolution ``4P``-pixel crops (:func:`held_out_crops` of ``split``) area-downsampled to
    ``P``: consistency PSNR, PSNR and high-frequency energy against the crops for ZoomLDM (condition inversion +
    ``sr_guidance`` + data consistency, starting at ``strength``, final decode shift-averaged per ``shift_average``
    (``None``: the pipeline's default); one draw and the mean of ``num_draws`` draws, both with
    the data-consistency step; without inversion), bicubic, bicubic with the same data-consistency step, and the
    autoencoder round trip of the truth with that step (the ceiling of any sampler in this latent space);
    ``per_crop_psnr`` for each. With ``output_dir``, ``sr_<split>.png`` shows truth, bicubic + DC and both ZoomLDM
    rows."""
    from ..eval.zoom import area_downsample, consistency_psnr, high_frequency_energy, psnr

    truth = held_out_crops(pipe, images, count, 4 * pipe.patch_size, split).astype(np.float32)
    low = area_downsample(truth, 4).astype(np.float32)
    low_pixels = to_pixels(low)

    def sr(draw: int, **options) -> np.ndarray:
        return pipe.super_resolve(low, 4, num_inference_steps=steps, strength=strength, generator=seeded(seed + draw),
                                  sr_guidance=sr_guidance, shift_average=shift_average, output_type="np",
                                  **options).images

    draws = [sr(draw) for draw in range(num_draws)]
    bicubic = F.interpolate(low_pixels, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    round_trip = to_pixels(autoencoder_round_trip(pipe, truth))
    results = {
        "zoomldm": draws[0],
        f"zoomldm_mean_of_{num_draws}": to_numpy(match_low_frequencies(to_pixels(np.mean(draws, axis=0)), low_pixels)),
        "zoomldm_no_inversion": sr(0, inversion_steps=0),
        "bicubic": to_numpy(bicubic),
        "bicubic_data_consistency": to_numpy(match_low_frequencies(bicubic, low_pixels)),
        "autoencoder_round_trip_data_consistency": to_numpy(match_low_frequencies(round_trip, low_pixels)),
    }
    if output_dir is not None:
        shown = ["bicubic_data_consistency", "zoomldm", f"zoomldm_mean_of_{num_draws}"]
        save_image_grid(
            np.concatenate([truth] + [results[name] for name in shown]), output_dir / f"sr_{split}.png",
            columns=len(truth), scale=2, row_labels=["truth", *shown],
            title=f"4x SR of {split} crops, strength {strength}, {sr_guidance}, {steps} steps",
        )
    reference = high_frequency_energy(truth)
    return {
        name: {
            "consistency_psnr": consistency_psnr(result, low),
            "psnr_vs_truth": psnr(result, truth),
            "hf_energy_ratio": high_frequency_energy(result) / reference,
            "per_crop_psnr": [psnr(one, real) for one, real in zip(result, truth)],
        }
        for name, result in results.items()
    } | {"num_crops": len(truth), "strength": strength, "split": split, "sr_guidance": sr_guidance}


def autoencoder_scores(pipe: ZoomLDMPipeline, images: list[str], count: int) -> dict:
    """PSNR of held-out ``4P``-pixel crops through the autoencoder (overlapping blended / disjoint decoding, and the
    large-image sampler's final decode: blended at its default stride, then shift-averaged if ``pipe`` does so by
    default) vs the bicubic x4 upsampling of their ``P``-pixel area downsampling (the issue's ceiling argument)."""
    from ..eval.zoom import area_downsample, psnr, seam_score

    truth = held_out_crops(pipe, images, count, 4 * pipe.patch_size).astype(np.float32)
    low = to_pixels(area_downsample(truth, 4).astype(np.float32))
    bicubic = to_numpy(F.interpolate(low, scale_factor=4, mode="bicubic", align_corners=False))
    blended, disjoint = autoencoder_round_trip(pipe, truth), autoencoder_round_trip(pipe, truth, overlap=False)
    with torch.no_grad():
        final = to_numpy(pipe.final_decode(pipe.encode_canvas(to_pixels(truth)), pipe.odd_stride, 16, None))
    return {
        "round_trip_psnr_blended": psnr(blended, truth),
        "round_trip_psnr_tiles": psnr(disjoint, truth),
        "bicubic_x4_psnr": psnr(bicubic, truth),
        "seam_score_truth": seam_score(truth, pipe.patch_size),
        "seam_score_round_trip_blended": seam_score(blended, pipe.patch_size),
        "seam_score_round_trip_tiles": seam_score(disjoint, pipe.patch_size),
        "round_trip_psnr_large_image_decode": psnr(final, truth),
        "seam_score_round_trip_large_image_decode": seam_score(final, pipe.patch_size),
        "large_image_decode_shift_averaged": pipe.default_shift_average,
        "num_crops": len(truth),
    }


EVAL_PARTS = ("frechet", "autoencoder", "large", "sr", "mil")


def evaluate(
    model_path: str,
    output_dir: Path,
    baseline: str | None = None,
    baseline_max_level: int = 2,
    images: list[str] | None = None,
    parts: list[str] | None = None,
    num_samples: int = 128,
    num_inference_steps: int = 25,
    large_sizes: list[int] | None = None,
    num_large: int = 4,
    large_samplers: list[str] | None = None,
    window_stride: int | None = None,
    shift_average: bool | None = None,
    num_sr: int = 8,
    sr_strength: float = 1.0,
    sr_split: str = "test",
    sr_guidance: str = "clean_gradient",
    num_sr_draws: int = 3,
    mil_images: list[str] | None = None,
    mil_max_bags: int = 48,
    seed: int = 0,
) -> dict:
    """``parts`` (default all of :data:`EVAL_PARTS`): ``frechet`` -- per-magnification Frechet distance (held-out
    patches, SSL features of ``model_path``'s encoder) for the model and for the single-scale ``baseline``
    (level-0 samples, tiled and downsampled for levels up to ``baseline_max_level``); ``autoencoder`` -- round-trip
    PSNR of held-out crops vs bicubic x4; ``large`` -- seams and consistency of ``large_samplers`` (default all
    :data:`LARGE_SAMPLERS`; the overlapping one with ``window_stride``) at each of ``large_sizes`` for ``num_large``
    seeds from ``seed``; in both ``large`` and ``sr`` the final decode is shift-averaged per ``shift_average``
    (``None``: the pipeline's default); ``sr`` -- 4x SR (condition inversion, ``sr_guidance``, ``sr_strength``,
    ``num_sr_draws`` draws) on
    ``num_sr`` crops of ``sr_split`` (``test``, or ``validation`` for choosing settings) vs bicubic with the same
    data-consistency step;
    ``mil`` -- the multi-scale MIL probe (:mod:`selfgen.eval.zoom_mil`) on both tasks.
    Writes PNGs and returns the metrics."""
    from ..eval.zoom_mil import MIL_TASKS, mil_probe

    parts = list(parts or EVAL_PARTS)
    if unknown := set(parts) - set(EVAL_PARTS):
        raise ValueError(f"--parts must be a subset of {list(EVAL_PARTS)}, got {sorted(unknown)}")
    images = images or ["retina"]
    pipe = load_pipeline(model_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    levels = list(range(pipe.num_levels))
    metrics: dict[str, Any] = {"model": model_path}
    if "frechet" in parts:
        metrics["frechet"] = patch_quality(pipe, pipe, images, levels, num_samples, num_inference_steps, seed)
    if "frechet" in parts and baseline is not None:
        base = load_pipeline(baseline)
        base_levels = [level for level in levels if level <= baseline_max_level]
        metrics["baseline_frechet"] = patch_quality(
            base, pipe, images, base_levels, num_samples, num_inference_steps, seed, tiled=True
        )
    if "large" in parts:
        seeds = list(range(seed, seed + num_large))
        metrics["large_image"] = {
            size: large_image_scores(pipe, size, num_inference_steps, seeds, output_dir,
                                     tuple(large_samplers or LARGE_SAMPLERS), window_stride, shift_average)
            for size in large_sizes or [128]
        }
    if "autoencoder" in parts:
        metrics["autoencoder"] = autoencoder_scores(pipe, images, num_sr)
    if "sr" in parts:
        metrics["super_resolution"] = super_resolution_scores(
            pipe, images, num_sr, num_inference_steps, seed, num_sr_draws, sr_strength, sr_split, output_dir,
            sr_guidance, shift_average,
        )
    if "mil" in parts:
        metrics["mil"] = {
            task: mil_probe(pipe, task, mil_images, max_bags=mil_max_bags, seed=seed) for task in MIL_TASKS
        }
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """Patches at every level and one 128x128 image by the sliding-window joint sampler vs naively tiled (10 steps),
    with their seam scores."""
    pipe = load_pipeline(str(asset_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    rows = [
        pipe(magnification=level, num_images=8, num_inference_steps=20, generator=generator, output_type="np").images
        for level in range(pipe.num_levels)
    ]
    save_image_grid(
        np.concatenate(rows), output_dir / "levels.png", row_labels=[f"level {level}" for level in range(pipe.num_levels)],
        title="unconditional patches per magnification level (0 = highest magnification), 20 steps, seed 0",
    )
    metrics = {"large_image": large_image_scores(pipe, 128, 10, [0], output_dir, ("joint_overlap", "naive_tiling"))}
    return metrics


METHOD = Method(
    name="zoomldm",
    summary="ZoomLDM: multi-scale latent diffusion with SSL + magnification conditioning, large images, 4x SR",
    config_class=ZoomLDMConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="zoomldm-retina",
)
