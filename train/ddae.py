"""DDAE++ training: a self-conditioned DiT trained with the DDPM loss, plus optional contrastive self-distillation.

``configs/ddae_digits_wide_conv{,_stage2,_stage3,_stage4,_stage5}.yaml`` rebuild ``assets/ddae-digits`` (the last with
``--export_dir assets/ddae-digits``; it stores the weights as float16, ``export_dtype``), and
``configs/ddae_digits_noselfcond_wide_conv*.yaml`` the same runs with ``self_conditioning: false``;
``configs/ddae_digits{,_noselfcond}.yaml`` are the narrow stage 1 (bundled until session 39).
``configs/ddae_digits{,_noselfcond}_stage2.yaml`` continue those two runs (``pretrained``: the stage-1 export) for more
examples; with ``pretrained`` the architecture is the saved model's, and ``self_conditioning`` and ``final_conv`` must match it.
``selfgen eval ddae --model assets/ddae-digits`` reports the linear probe (with its timestep x layer
sweep) and the Frechet distance of samples in a small digits classifier's feature space.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from torch import nn

from ..data.digits import DigitsDataset, load_digits_arrays
from ..data.textures import TextureCropsDataset, load_texture_arrays
from ..eval.plots import save_image_grid
from ..models.ddae import DDAETransformer2DModel
from ..pipelines.ddae import DDAEPipeline
from ..pipelines.pipeline_utils import use_scheduler
from .config import TrainingConfig
from .losses import info_nce, random_shift
from .registry import Method
from .trainer import Objective, TrainResult, Trainer

DATASETS = ("digits", "textures")
EXPORT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class DDAEConfig(TrainingConfig):
    dataset: str = "digits"  # "digits" (16x16x1) or "textures" (32x32x3); --data FOLDER uses your images instead
    resolution: int = 16
    in_channels: int = 1
    patch_size: int = 2
    hidden_size: int = 96
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    self_conditioning: bool = True
    self_condition_layer: int | None = None  # default depth // 2
    num_classes: int = 0  # > 0: class-conditional (labels from the dataset), CFG by label dropout
    class_dropout_prob: float = 0.1
    contrastive_weight: float = 0.0  # > 0 enables contrastive self-distillation
    contrastive_temperature: float = 0.2
    contrastive_teacher_timestep: int = 0
    contrastive_teacher_momentum: float = 0.99  # EMA teacher: theta_t <- m theta_t + (1 - m) theta_s each step
    projection_dim: int = 0  # projection head width; needed when contrastive_weight > 0
    feature_layer: int | None = None  # extract_features defaults (see the probe sweep)
    feature_timestep: int = 0
    long_skips: bool = False  # U-ViT long skips from block i < L into block depth + 1 - i
    self_condition_centering: int = 0  # K > 0: inject W_s (LN(z) - mu_k), mu_k the running mean in K t-buckets (departure)
    centering_momentum: float = 0.95
    final_conv: bool = False  # U-ViT's 3x3 convolution on the un-patchified output (zero bias)
    final_conv_init: str = "identity"  # its kernel: "identity" (Dirac; a departure) or "uvit" (PyTorch's default, as U-ViT)
    snr_gamma: float | None = None  # Min-SNR-gamma loss weight min(SNR_t, gamma) / SNR_t (Hang et al., 2023); null: uniform
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    random_flip: bool = False
    on_error: str = "raise"  # a corrupt file under --data: "raise" stops, "skip" leaves it out (logged, counted)
    # the exported weights' storage dtype (diffusers' fp16 export: the model cast before save_pretrained); training is
    # unaffected, and from_pretrained loads them as float32 unless torch_dtype asks otherwise
    export_dtype: str = field(default="float32", metadata={"resume_safe": True})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        self.require_choice("export_dtype", EXPORT_DTYPES)
        if self.contrastive_weight > 0 and self.projection_dim <= 0:
            raise ValueError("contrastive_weight > 0 needs a projection head: set projection_dim > 0 (e.g. 64)")
        if not 0.0 <= self.contrastive_teacher_momentum < 1.0:
            raise ValueError(f"contrastive_teacher_momentum must be in [0, 1), got {self.contrastive_teacher_momentum}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 or null (uniform weighting), got {self.snr_gamma}")


class DDAEObjective(Objective):
    """``L = E w(t) || eps - eps_theta(x_t, t, y) ||^2  +  lambda * L_csd``.

    ``w(t) = 1`` (the DDPM loss) unless ``snr_gamma`` is set: then Min-SNR-gamma (Hang et al., 2023, for
    eps-prediction) ``w(t) = min(SNR(t), gamma) / SNR(t)``, ``SNR(t) = abar_t / (1 - abar_t)``, which turns down
    the low-noise steps whose eps error dominates the uniform loss (``w = 1`` wherever ``SNR(t) <= gamma``).

    Class labels are replaced by the null class with probability ``class_dropout_prob`` (CFG training).
    Contrastive self-distillation ``L_csd`` (DDAE++): the student is the projected semantic vector
    ``g(z(x_t))`` of the noisy training input; the teacher is an exponential moving average of the
    student (MoCo/DINO-style momentum teacher, ``theta_T <- m theta_T + (1 - m) theta_S`` after every
    update, ``m = contrastive_teacher_momentum``) reading another view ``x'`` (random shift) of the clean
    image at the low noise level ``s``: ``L_csd = InfoNCE(g_S(z_S(x_t)), sg(g_T(z_T(x'_s))))``.

    Every step also logs the self-conditioning injection ``u = W_s LN(z)``: ``injection_norm`` (mean
    ``||u||``), ``condition_norm`` (mean ``||emb(t) [+ E[y]]||``, what ``u`` is added to) and
    ``injection_varying`` (``sum_d Var_b u_d / mean_b ||u||^2``, the share of ``u``'s energy that differs
    between samples; a constant offset gives 0).
    """

    def __init__(self, noise_scheduler: DDPMScheduler, config: DDAEConfig, model: nn.Module | None = None) -> None:
        self.noise_scheduler = noise_scheduler
        self.config = config
        self.teacher: nn.Module | None = None
        if config.contrastive_weight > 0:
            if model is None:
                raise ValueError("contrastive_weight > 0 needs the student model to build its EMA teacher")
            self.teacher = copy.deepcopy(model).requires_grad_(False).eval()

    def setup(self, accelerator) -> None:
        """Move the EMA teacher to the device and checkpoint it, so ``--resume`` restores it exactly."""
        if self.teacher is not None:
            self.teacher.to(accelerator.device)
            accelerator.register_for_checkpointing(self.teacher)

    def _labels(self, batch: dict) -> torch.Tensor | None:
        if self.config.num_classes == 0:
            return None
        if "label" not in batch:
            raise ValueError(
                "num_classes > 0 needs labelled data: digits, textures, or a folder whose metadata.jsonl has labels"
            )
        labels = batch["label"]
        drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout_prob
        return labels.masked_fill(drop, self.config.num_classes)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        clean = batch["pixel_values"]
        labels = self._labels(batch)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, self.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
        output = model(self.noise_scheduler.add_noise(clean, noise, timesteps), timesteps, labels)
        diffusion_loss = self._diffusion_loss(output.sample.float(), noise.float(), timesteps)
        logs = injection_statistics(getattr(model, "module", model), output.injection, timesteps, labels)
        if self.teacher is None:
            return diffusion_loss, logs
        contrastive_loss = self._contrastive(model, clean, labels, output.semantic)
        loss = diffusion_loss + self.config.contrastive_weight * contrastive_loss
        return loss, {**logs, "diffusion_loss": diffusion_loss.item(), "contrastive_loss": contrastive_loss.item()}

    def _diffusion_loss(self, prediction: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``w(t) ||eps - eps_theta||^2 / numel`` (``w = 1`` without ``snr_gamma``)."""
        if self.config.snr_gamma is None:
            return F.mse_loss(prediction, noise)
        snr = compute_snr(self.noise_scheduler, timesteps)
        weights = snr.clamp(max=self.config.snr_gamma) / snr
        return (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()

    @torch.no_grad()
    def update_teacher(self, student: nn.Module) -> None:
        """``theta_T <- m theta_T + (1 - m) theta_S`` (the student's current weights)."""
        momentum = self.config.contrastive_teacher_momentum
        for teacher_param, student_param in zip(self.teacher.parameters(), student.parameters()):
            teacher_param.lerp_(student_param.detach().to(teacher_param.dtype), 1.0 - momentum)

    def _contrastive(self, model: nn.Module, clean, labels, semantic: torch.Tensor) -> torch.Tensor:
        student = getattr(model, "module", model)
        self.update_teacher(student)  # the student's weights after the previous optimizer step
        step = self.config.contrastive_teacher_timestep
        view = random_shift(clean)
        teacher_input = self.noise_scheduler.add_noise(view, torch.randn_like(view), torch.tensor([step]))
        with torch.no_grad():
            layer = self.teacher.self_condition_layer
            teacher = self.teacher.project(self.teacher.pooled_features(teacher_input, step, (layer,), labels)[layer])
        return info_nce(student.project(semantic), teacher, self.config.contrastive_temperature)


@torch.no_grad()
def injection_statistics(model, injection: torch.Tensor | None, timesteps, labels) -> dict[str, float]:
    """The logged sizes of the self-conditioning term (see :class:`DDAEObjective`); empty for the ablation."""
    if injection is None:
        return {}
    condition = model._condition(timesteps, labels, len(timesteps)).float()
    return {
        "injection_norm": injection.float().norm(dim=-1).mean().item(),
        "condition_norm": condition.norm(dim=-1).mean().item(),
        "injection_varying": varying_share(injection),
    }


def varying_share(vectors: torch.Tensor) -> float:
    """``sum_d Var_b v_d / mean_b ||v||^2``: the share of the energy of ``vectors`` ``(B, D)`` that differs
    between rows (0 for a constant offset, 1 for rows averaging to zero)."""
    vectors = vectors.float()
    return (vectors.var(0, unbiased=False).sum() / vectors.square().sum(-1).mean().clamp_min(1e-12)).item()


@torch.no_grad()
def injection_by_timestep(pipe: DDAEPipeline, images: torch.Tensor, timesteps=(0, 100, 500), seed: int = 0) -> dict:
    """At each fixed ``t``, over ``images`` (``[-1, 1]``) noised by ``pipe.scheduler``: ``||W_s LN(z)||``,
    ``||emb(t)||`` and the between-image shares (:func:`varying_share`) of the injection and of ``LN(z)``;
    ``{}`` for the ablation."""
    model, scheduler = pipe.transformer, pipe.scheduler
    if model.self_condition_embed is None:
        return {}
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    result = {}
    for step in timesteps:
        output = model(scheduler.add_noise(images, noise, torch.tensor([step])), step)
        stats = injection_statistics(model, output.injection, torch.full((len(images),), step), None)
        stats["normalized_semantic_varying"] = varying_share(model.self_condition_embed[0](output.semantic))
        result[f"t={step}"] = stats
    return result


def build_transformer(config: DDAEConfig) -> DDAETransformer2DModel:
    return DDAETransformer2DModel(
        sample_size=config.resolution,
        patch_size=config.patch_size,
        in_channels=config.in_channels,
        hidden_size=config.hidden_size,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        self_conditioning=config.self_conditioning,
        self_condition_layer=config.self_condition_layer,
        num_classes=config.num_classes,
        projection_dim=config.projection_dim,
        feature_layer=config.feature_layer,
        feature_timestep=config.feature_timestep,
        long_skips=config.long_skips,
        self_condition_centering=config.self_condition_centering,
        centering_momentum=config.centering_momentum,
        final_conv=config.final_conv,
        final_conv_init=config.final_conv_init,
    )


def build_dataset(config: DDAEConfig):
    if config.data is not None:
        from ..data.images import ImageFolderDataset

        return ImageFolderDataset(
            config.data, resolution=config.resolution, channels=config.in_channels, random_flip=config.random_flip,
            on_error=config.on_error,
        )
    expected = {"digits": 1, "textures": 3}[config.dataset]
    if config.in_channels != expected:
        raise ValueError(f"dataset {config.dataset!r} has {expected} channel(s): set in_channels: {expected}")
    if config.dataset == "digits":
        return DigitsDataset("train", resolution=config.resolution)
    return TextureCropsDataset("train", crop_size=config.resolution)


def train(config: DDAEConfig) -> TrainResult:
    set_seed(config.seed)
    if config.pretrained:
        pretrained = DDAEPipeline.from_pretrained(config.pretrained)
        transformer, noise_scheduler = pretrained.transformer, DDPMScheduler.from_config(pretrained.scheduler.config)
        for field in ("self_conditioning", "final_conv"):  # the arm and the output head are the saved model's
            if transformer.config[field] != getattr(config, field):
                raise ValueError(
                    f"{field} is {getattr(config, field)} but the pretrained model {config.pretrained} has "
                    f"{field}={transformer.config[field]}: set the field to match (the architecture is the model's)"
                )
    else:
        transformer = build_transformer(config)
        noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)

    def export(model: DDAETransformer2DModel, directory: Path) -> None:
        stored = stored_copy(model, getattr(torch, config.export_dtype))
        DDAEPipeline(transformer=stored, scheduler=noise_scheduler).save_pretrained(directory)

    objective = DDAEObjective(noise_scheduler, config, transformer)
    trainer = Trainer(transformer, objective, build_dataset(config), config, export_fn=export)
    return trainer.train()


def stored_copy(model: DDAETransformer2DModel, dtype: torch.dtype) -> DDAETransformer2DModel:
    """``model`` itself when its weights already are ``dtype``, else a copy cast to it (the trained model is untouched):
    what the export writes, e.g. float16 safetensors (round to nearest even, as ``Tensor.to``)."""
    return model if model.dtype == dtype else copy.deepcopy(model).to(dtype)


def load_pipeline(model_path: str, scheduler: str = "ddim"):
    """Any selfgen image pipeline (a DDAE++ checkpoint or the DDPM baseline) with ``scheduler`` swapped in."""
    from selfgen import AutoPipeline

    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"--model {model_path}: no such pipeline folder (expected one with model_index.json)")
    pipe = AutoPipeline.from_pretrained(model_path)
    use_scheduler(pipe, scheduler)
    return pipe


def generate(
    model_path: str,
    output_dir: Path,
    num_samples: int = 64,
    num_inference_steps: int = 50,
    scheduler: str = "ddim",
    guidance_scale: float = 1.0,
    class_label: int | None = None,
    seed: int = 0,
) -> dict:
    """Sample ``num_samples`` images into ``output_dir/samples.png`` (a grid) and ``samples.npy``."""
    pipe = load_pipeline(model_path, scheduler)
    options = {} if class_label is None else {"class_labels": class_label, "guidance_scale": guidance_scale}
    images = pipe(
        batch_size=num_samples,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **options,
    ).images
    output_dir.mkdir(parents=True, exist_ok=True)
    title = f"DDAE++ samples: {num_samples} images, {scheduler} {num_inference_steps} steps, seed {seed}"
    save_image_grid(images, output_dir / "samples.png", title=title)
    np.save(output_dir / "samples.npy", images)
    return {"num_samples": num_samples, "grid": str(output_dir / "samples.png"), "images": images}


def dataset_arrays(dataset: str, split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "digits":
        return load_digits_arrays(split, resolution)
    if dataset == "textures":
        return load_texture_arrays(split, crop_size=resolution)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def evaluate(
    model_path: str,
    output_dir: Path,
    dataset: str = "digits",
    timesteps: list[int] | None = None,
    layers: list[int] | None = None,
    num_samples: int = 512,
    num_inference_steps: int = 50,
    scheduler: str = "ddim",
    seed: int = 0,
    classifier: str | None = None,
    inception_weights: str | None = None,
    validation_fraction: float = 0.2,
    reference: str | None = None,
) -> dict:
    """(a) Linear probe of the model's features on ``dataset``: ``timesteps`` x ``layers`` selected on a
    validation split carved from the training split, the test split scored once (plus the raw-pixel
    probe); with ``reference`` (the ``metrics.json`` of another ``selfgen eval ddae`` run on the same
    dataset, e.g. the ablation), a paired McNemar test per probe; (b) on digits, the Frechet distance of
    ``num_samples`` samples to the real test split in the digits classifier's feature space
    (``classifier``: its safetensors file, default the bundled judge) and in DigitsJudge's PCA space, and
    Inception FID when ``inception_weights`` is given. Works on DDAE++ checkpoints and on the DDPM baseline.
    ``num_samples=0`` skips (b)."""
    from ..eval import probe

    reference_metrics = None
    if reference is not None:
        if not Path(reference).is_file():
            raise FileNotFoundError(f"--reference {reference}: no such metrics.json (from selfgen eval ddae)")
        reference_metrics = json.loads(Path(reference).read_text())
        if reference_metrics.get("dataset") != dataset or "test_correct" not in reference_metrics.get("probe", {}):
            raise ValueError(f"--reference {reference} is not a selfgen eval ddae metrics.json on dataset {dataset!r}")
    pipe = load_pipeline(model_path, scheduler)
    resolution = probe.pipeline_resolution(pipe)
    train_images, train_labels = dataset_arrays(dataset, "train", resolution)
    test_images, test_labels = dataset_arrays(dataset, "test", resolution)
    sweep = probe.probe_sweep(
        pipe, (train_images, train_labels), (test_images, test_labels), timesteps, layers, validation_fraction
    )
    metrics = {
        "model": model_path,
        "dataset": dataset,
        "params": sum(p.numel() for p in probe.denoiser(pipe).parameters()),
        "probe": sweep,
        "raw_pixel_probe_accuracy": probe.linear_probe(
            train_images.flatten(1).numpy(), train_labels.numpy(), test_images.flatten(1).numpy(), test_labels.numpy()
        ),
    }
    if isinstance(pipe, DDAEPipeline):
        metrics["injection_on_test"] = injection_by_timestep(pipe, test_images)
    if reference_metrics is not None:
        metrics["paired_vs_reference"] = {
            "reference": reference, **probe.paired_probe_comparison(sweep, reference_metrics["probe"])
        }
    if dataset == "digits" and num_samples > 0:
        started = time.perf_counter()
        samples = generate(model_path, output_dir, num_samples, num_inference_steps, scheduler, seed=seed)["images"]
        metrics["sampling_seconds"] = time.perf_counter() - started
        metrics["generation"] = probe.generation_metrics(samples, test_images, classifier, inception_weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """64 DPM-Solver++ 25 samples (the sampler chosen on the validation digits) and the default-feature linear
    probe on digits (no sweep), in a few seconds."""
    from ..eval import probe

    samples = generate(str(asset_dir), output_dir, num_samples=64, num_inference_steps=25, scheduler="dpm")["images"]
    pipe = DDAEPipeline.from_pretrained(str(asset_dir))
    (train_images, train_labels), (test_images, test_labels) = (load_digits_arrays(s, 16) for s in ("train", "test"))
    accuracy = probe.linear_probe(
        pipe.extract_features(train_images).numpy(),
        train_labels.numpy(),
        pipe.extract_features(test_images).numpy(),
        test_labels.numpy(),
    )
    metrics = {"probe_accuracy": accuracy, "generation": probe.generation_metrics(samples, test_images)}
    return metrics


METHOD = Method(
    name="ddae",
    summary="DDAE++: self-conditioned diffusion transformer for generation and linear-probe representations",
    config_class=DDAEConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="ddae-digits",
)
