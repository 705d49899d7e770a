"""PlenopticDreamer training and evaluation (Fu et al. 2026, "Plenoptic Video Generation").

Objective (rectified flow on the target view of a multi-view scene): for a target view ``V^{tgt}`` and
``n`` conditioning views ``{(V^i, P^i)}`` of the same scene,

    L = E_{sigma, eps} || x_theta(x_sigma, sigma, P^{tgt} | {(V^i, P^i)}) - V^{tgt} ||^2 ,
    x_sigma = (1 - sigma) V^{tgt} + sigma eps,

(x-prediction with an ``x_0`` loss; the sampler steps on the implied velocity ``(x_sigma - x_theta) / sigma``),

averaged over the target frames that are not given clean. The paper's training recipe, in miniature:

* **progressive context scaling** -- the number of conditioning videos ``n`` is drawn from ``1..n_max`` where
  ``n_max`` grows from 1 to ``max_conditions`` (K) in equal stages over the first ``context_warmup_fraction``
  of training (``progressive_context: false`` draws from ``1..K`` from the start);
* **self-conditioning** -- after ``self_conditioning_start`` of training, each conditioning view other than
  the source is, with probability ``self_conditioning_prob``, replaced by the model's own generation of that
  view, so the model learns to condition on imperfect generated videos as it must at inference time, deep
  in an autoregressive chain. Two sources of generations (``self_conditioning``):

  - ``"offline"`` (nearer the paper, used to fine-tune a trained model): before training, the model being
    fine-tuned (``pretrained``) re-renders every training scene with the full inference pipeline -- views
    ``1..V-1`` generated autoregressively from view 0 with FOV retrieval (``max_conditions`` videos) and
    ``self_conditioning_steps`` Euler steps, so later views carry the compounded errors of a chain. The
    generations are stored once as a uint8 ``.npz`` bank (``self_conditioning_bank``; by default
    ``<output_dir>/self_conditioning_bank.npz``, built if missing, reused if present) and the training
    batches carry them as ``"generated_videos"`` (:class:`SelfGeneratedViews`). Departures: the bank is made
    once and not refreshed as the model changes, and the replacement probability is ours (the paper's
    schedule was not available to us);
  - ``"online"``: generated inside the training step with ``self_conditioning_steps`` Euler steps,
    conditioned on the source only, no gradient (cheap, but unlike the views of a real chain, whose
    conditions are themselves generations);
* **long-video conditioning** -- with probability ``clean_prefix_prob`` the first ``1..num_frames - 1`` target
  frames are given clean (timestep 0) and excluded from the loss, as a continuation chunk sees them;
* **retrieved conditions** -- ``condition_selection: fov`` (default) conditions the target on the ``n``
  other views of the scene with the highest 3D-FOV retrieval score
  (:func:`selfgen.pipelines.plenoptic.frustum_overlap`, the criterion the pipeline retrieves with), so
  training sees the same kind of context as inference; ``random`` draws ``n`` other views uniformly;
* ``single_in: true`` is the ReCamMaster-like ablation: the source video is the only condition;
* ``warp_conditioning: true`` (our departure, see ``models/plenoptic.py``) also gives every target (and every
  online self-generated condition) the source forward-warped into its cameras with the source's depth
  (the synthetic renderer's, standing in for a depth estimator); with probability ``warp_drop_prob`` the warp
  is left empty, so the model also works where no depth is known (user data without depth). Fine-tuning a
  model trained without it (``pretrained``) adds the zero-initialised warp projection;
* ``refiner_width > 0`` (our departure, see ``models/plenoptic.py``) adds the pixel-space refiner after the
  linear head (zero-initialised residual; fine-tuning a model without it adds it), and ``freeze_trunk: true``
  trains only the refiner, so the same recipe without the refiner is the pretrained model itself (the matched
  control at equal budget) and a step costs a forward of the trunk, not a backward.

Cameras are made relative to the source's first camera; the target view is any non-source view. The
synthetic training scenes (``neighbour_prob``, see :class:`MultiViewSceneDataset`) include views whose
path is a slightly turned copy of another view's, as multi-camera datasets include overlapping
trajectories; without them retrieval never offers a condition near the target camera (a departure in
the data, named in ``docs/plenoptic.md``). ``selfgen train plenoptic --config configs/plenoptic_scenes.yaml``
followed by ``configs/plenoptic_scenes_stage2.yaml`` (600 more steps at ``timestep_shift: 3``, reading stage 1's
export), ``configs/plenoptic_scenes_warp.yaml`` (the warp input) and ``configs/plenoptic_scenes_refiner.yaml``
(the pixel refiner, trunk frozen) rebuilds ``assets/plenoptic-scenes``. The equal-budget fine-tuning stage starts from that asset
(``pretrained``): ``configs/plenoptic_scenes_continue.yaml`` (plain continuation, the control) and the arms
``plenoptic_scenes_selfcond.yaml`` (offline), ``plenoptic_scenes_online_selfcond.yaml`` (online) and
``plenoptic_scenes_single_in.yaml``, each the control with one field changed.

Evaluation (``selfgen eval plenoptic``): on held-out scenes, chains A, B, C, ... then A' (A's cameras
again), scored against ground-truth renders (``eval/multiview.py``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.multiview import (
    CAMERA_CONVENTIONS,
    SYNTHETIC_CAMERA_DISTANCE,
    MultiViewSceneDataset,
    MultiViewVideoFolder,
    WalkAwayScenes,
    check_cameras,
    load_camera_file,
    load_depth_file,
    normalize_pose_scale,
    read_video,
    render,
    resize_depth,
    resize_video,
    rotate_about_vertical,
    to_opencv,
    unseen_mask,
)
from ..eval.multiview import camera_error, chain_slope, masked_psnr, psnr, ssim
from ..eval.plots import pyplot, save_figure, save_image_grid
from ..eval.statistics import mean_difference, standard_error
from ..models.embeddings import relative_cameras
from ..models.plenoptic import PlenopticTransformer
from ..pipelines.plenoptic import RETRIEVAL_MODES, PlenopticDreamerPipeline, frustum_overlap, warp_condition
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainerCallback, TrainResult, Trainer

DEMO_STEPS = 1  # Euler steps of the demo and the eval default, chosen on validation scenes (see docs/plenoptic.md)
CAMERA_CANDIDATE_DEGREES = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)
CONDITION_SELECTIONS = ("fov", "random")
SELF_CONDITIONING_MODES = ("online", "offline")
EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class PlenopticConfig(TrainingConfig):
    num_scenes: int = 256
    num_views: int = 4
    num_frames: int = 4
    size: int = 32
    patch_size: int = 8
    hidden_size: int = 96
    depth: int = 3
    num_heads: int = 4
    max_conditions: int = 2  # K
    single_in: bool = False
    progressive_context: bool = True
    context_warmup_fraction: float = 0.5
    self_conditioning_prob: float = 0.3
    self_conditioning_start: float = 0.5
    self_conditioning_steps: int = 2  # Euler steps of the self-generated conditions (in-step sample or offline chains)
    self_conditioning: str = "online"  # "offline": a bank of full-pipeline chains by the pretrained model
    self_conditioning_bank: str | None = None  # offline bank (.npz); None: <output_dir>/self_conditioning_bank.npz, built if missing
    clean_prefix_prob: float = 0.2
    warp_conditioning: bool = False  # the source warped into the target by its depth, as a zero-initialised input
    warp_drop_prob: float = 0.1  # share of training targets given an empty warp (no depth known)
    refiner_width: int = 0  # channels of the pixel-space refiner after the linear head (0: none)
    freeze_trunk: bool = False  # train only the refiner (the rest keeps pretrained's weights)
    timestep_shift: float = 1.0  # s > 1 trains more on high noise: sigma = s u / (1 + (s - 1) u), u ~ U(0, 1) (SD3's shift)
    condition_selection: str = "fov"
    neighbour_prob: float = 0.0
    neighbour_angle: float = 0.15
    export_dtype: str = "float32"  # float16 halves the exported weights (loaded back as float32 by from_pretrained)
    train_dataset_cache: bool = True
    camera_convention: str = "opencv"  # --data: axes of the camera JSONs, "opencv" (x right, y down, z forward) or "opengl"
    camera_distance: float | None = SYNTHETIC_CAMERA_DISTANCE  # --data: rescale camera positions to this mean distance to the scene (None: as stored)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2 (a source and a target), got {self.num_views}")
        if not 1 <= self.max_conditions <= self.num_views - 1:
            raise ValueError(f"max_conditions must be in [1, num_views - 1 = {self.num_views - 1}], got {self.max_conditions}")
        self.require_fractions(
            "context_warmup_fraction", "self_conditioning_prob", "self_conditioning_start", "clean_prefix_prob", "neighbour_prob",
            "warp_drop_prob",
        )
        if self.refiner_width < 0:
            raise ValueError(f"refiner_width must be >= 0 (0: no refiner), got {self.refiner_width}")
        if self.freeze_trunk and self.refiner_width == 0:
            raise ValueError("freeze_trunk trains only the refiner: set refiner_width > 0")
        if self.warp_conditioning and self.data is not None:
            raise ValueError("warp_conditioning needs the source's depth: only the synthetic scenes have it (unset --data)")
        if self.camera_convention not in CAMERA_CONVENTIONS:
            raise ValueError(f"camera_convention must be one of {CAMERA_CONVENTIONS}, got {self.camera_convention!r}")
        if self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0, got {self.timestep_shift}")
        if self.camera_distance is not None and self.camera_distance <= 0:
            raise ValueError(f"camera_distance must be > 0 (or None to keep the stored scale), got {self.camera_distance}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"export_dtype must be one of {tuple(EXPORT_DTYPES)}, got {self.export_dtype!r}")
        if self.condition_selection not in CONDITION_SELECTIONS:
            raise ValueError(f"condition_selection must be one of {CONDITION_SELECTIONS}, got {self.condition_selection!r}")
        if self.self_conditioning not in SELF_CONDITIONING_MODES:
            raise ValueError(f"self_conditioning must be one of {SELF_CONDITIONING_MODES}, got {self.self_conditioning!r}")
        if self.self_conditioning == "offline" and self.pretrained is None and self.self_conditioning_bank is None:
            raise ValueError(
                "self_conditioning: offline fine-tunes a trained model: set pretrained (the pipeline whose own "
                "chains fill the bank) or self_conditioning_bank (an existing bank .npz)"
            )


# ---------------------------------------------------------------------- objective


def flow_sample(model: nn.Module, batch_inputs: dict[str, torch.Tensor], shape: tuple[int, ...], steps: int) -> torch.Tensor:
    """A coarse generation: ``steps`` Euler steps of ``dx/dsigma = v_theta`` from ``x_1 ~ N(0, I)`` to ``sigma = 0``."""
    latents = torch.randn(shape, device=batch_inputs["target_cameras"].device)
    sigmas = torch.linspace(1.0, 0.0, steps + 1, device=latents.device)
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
        velocity = model(latents, (sigma * 1000).expand(shape[0]), **batch_inputs).sample.float()
        latents = latents + (next_sigma - sigma) * velocity
    return latents.clamp(-1, 1)


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift ``s sigma / (1 + (s - 1) sigma)``: ``s > 1`` moves training noise levels towards 1,
    where the 1-step sampler evaluates the model; ``s = 1`` is the identity."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def per_view_intrinsics(intrinsics: torch.Tensor, num_views: int) -> torch.Tensor:
    """A batch's intrinsics as ``(B, V, 3, 3)``: shared ``(B, 3, 3)`` ones (synthetic scenes) repeated per view."""
    return intrinsics[:, None].expand(-1, num_views, -1, -1) if intrinsics.ndim == 3 else intrinsics


class PlenopticObjective(Objective):
    """The rectified-flow loss on a target view given ``n`` other views, with the curriculum,
    self-conditioning and clean-prefix schedule described in the module docstring."""

    def __init__(self, config: PlenopticConfig) -> None:
        self.config = config
        self.global_step = 0

    def max_conditions_now(self) -> int:
        """``n_max`` of progressive context scaling at the current step."""
        config = self.config
        if config.single_in or not config.progressive_context:
            return 1 if config.single_in else config.max_conditions
        stage_steps = max(1.0, config.context_warmup_fraction * config.max_train_steps / config.max_conditions)
        return min(config.max_conditions, 1 + int(self.global_step // stage_steps))

    def self_conditioning_active(self) -> bool:
        config = self.config
        return config.self_conditioning_prob > 0 and self.global_step >= config.self_conditioning_start * config.max_train_steps

    def pick_views(self, cameras: torch.Tensor, intrinsics: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample (cameras ``(B, V, F, 4, 4)``, intrinsics ``(B, 3, 3)`` or ``(B, V, 3, 3)``) a target view in ``1..V-1`` and ``n`` condition views
        among the others: the ``n`` best by 3D-FOV score (``condition_selection: fov``; ties broken at
        random) or ``n`` random ones; ``[0]`` if single-in."""
        batch_size, num_views = cameras.shape[:2]
        device = cameras.device
        targets = torch.randint(1, num_views, (batch_size,), device=device)
        if self.config.single_in:
            return targets, torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        count = int(torch.randint(1, self.max_conditions_now() + 1, ()))
        order = torch.rand(batch_size, num_views, device=device)
        if self.config.condition_selection == "fov":
            scores = self.fov_scores(cameras, per_view_intrinsics(intrinsics, num_views), targets, size)
            order = order * 1e-3 - scores.to(device)
        order[torch.arange(batch_size, device=device), targets] = 2.0
        return targets, order.argsort(dim=1)[:, :count]

    @staticmethod
    def fov_scores(cameras: torch.Tensor, intrinsics: torch.Tensor, targets: torch.Tensor, size: int) -> torch.Tensor:
        """``(B, V)`` 3D-FOV retrieval score of every view for its sample's target path (per-view intrinsics ``(B, V, 3, 3)``)."""
        cameras_np, intrinsics_np = cameras.detach().double().cpu().numpy(), intrinsics.detach().double().cpu().numpy()
        scores = [
            frustum_overlap(
                cameras_np[row, int(target)], list(cameras_np[row]), intrinsics_np[row, int(target)], size,
                memory_intrinsics=list(intrinsics_np[row]),
            )
            for row, target in enumerate(targets)
        ]
        return torch.from_numpy(np.stack(scores)).float()

    def source_warps(self, batch: dict, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor | None:
        """The warp input (:func:`~selfgen.pipelines.plenoptic.warp_condition`) of view ``views[i]`` of sample
        ``rows[i]``, ``(N, F, 4, H, W)``, each empty with probability ``warp_drop_prob``; ``None`` without
        ``warp_conditioning``."""
        if not self.config.warp_conditioning:
            return None
        if "depths" not in batch:
            raise ValueError("warp_conditioning needs batches with 'depths' (MultiViewSceneDataset(return_depth=True))")
        videos, depths, cameras = batch["videos"].cpu().numpy(), batch["depths"].cpu().numpy(), batch["cameras"].cpu().double().numpy()
        intrinsics = per_view_intrinsics(batch["intrinsics"], videos.shape[1]).cpu().double().numpy()
        warps = []
        for row, view in zip(rows.tolist(), views.tolist()):
            warp = warp_condition(videos[row, 0], depths[row, 0], cameras[row, 0], cameras[row, view], intrinsics[row, 0], intrinsics[row, view])
            warps.append(warp * float(torch.rand(()) >= self.config.warp_drop_prob))
        return torch.from_numpy(np.stack(warps)).to(batch["videos"].device)

    @torch.no_grad()
    def self_generate(self, model: nn.Module, videos, cameras, intrinsics, views: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        """The model's own generations of ``views`` ``(B, n)`` conditioned on the source (and, given the ``batch``
        of a warp-conditioned run, on the source's warp into each view): ``(B, n, F, C, H, W)``."""
        num_samples, count = views.shape
        flat = views.reshape(-1)
        sample_index = torch.arange(num_samples, device=views.device).repeat_interleave(count)
        inputs = {
            "target_cameras": cameras[sample_index, flat],
            "intrinsics": intrinsics[sample_index, flat],
            "condition_videos": videos[sample_index, :1],
            "condition_cameras": cameras[sample_index, :1],
            "condition_intrinsics": intrinsics[sample_index, :1],
            "warp": None if batch is None else self.source_warps(batch, sample_index, flat),
        }
        generated = flow_sample(model, inputs, tuple(videos[sample_index, flat].shape), self.config.self_conditioning_steps)
        return generated.reshape(num_samples, count, *generated.shape[1:])

    def own_generations(self, model: nn.Module, batch: dict, videos, cameras, intrinsics, views: torch.Tensor) -> torch.Tensor:
        """The model's own versions of ``views`` ``(B, n)`` in ``[-1, 1]``: the offline bank's chain generations
        (``batch["generated_videos"]``) or, online, a fresh :meth:`self_generate`."""
        if self.config.self_conditioning == "online":
            return self.self_generate(model, videos, cameras, intrinsics, views, batch)
        if "generated_videos" not in batch:
            raise ValueError("self_conditioning: offline needs batches with 'generated_videos' (wrap the dataset in SelfGeneratedViews)")
        generated = batch["generated_videos"].permute(0, 1, 2, 5, 3, 4) * 2 - 1
        return generated[torch.arange(views.shape[0], device=views.device)[:, None], views]

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        videos = batch["videos"].permute(0, 1, 2, 5, 3, 4) * 2 - 1  # (B, V, F, C, H, W) in [-1, 1]
        cameras = relative_cameras(batch["cameras"], batch["cameras"][:, :1, :1])
        intrinsics = per_view_intrinsics(batch["intrinsics"], videos.shape[1])
        batch_size, num_frames = videos.shape[0], videos.shape[2]
        rows = torch.arange(batch_size, device=videos.device)
        targets, views = self.pick_views(batch["cameras"], intrinsics, videos.shape[-1])
        conditions = videos[rows[:, None], views]
        logs = {"num_conditions": float(views.shape[1])}
        if self.self_conditioning_active():
            replace = (views != 0) & (torch.rand(views.shape, device=videos.device) < self.config.self_conditioning_prob)
            if replace.any():
                generated = self.own_generations(model, batch, videos, cameras, intrinsics, views).to(conditions.dtype)
                conditions = torch.where(replace[..., None, None, None, None], generated, conditions)
            logs["self_conditioned"] = replace.float().mean().item()

        clean_video = videos[rows, targets]
        sigma = shift_sigmas(torch.rand(batch_size, 1, device=videos.device), self.config.timestep_shift).expand(batch_size, num_frames)
        num_clean = torch.randint(1, max(2, num_frames), (batch_size, 1), device=videos.device)
        has_prefix = torch.rand(batch_size, 1, device=videos.device) < self.config.clean_prefix_prob
        is_clean = has_prefix & (torch.arange(num_frames, device=videos.device)[None] < num_clean)
        sigma = torch.where(is_clean, 0.0, sigma)
        noise = torch.randn_like(clean_video)
        sigma_view = sigma[..., None, None, None]
        noisy = (1 - sigma_view) * clean_video + sigma_view * noise
        prediction = model(
            noisy, sigma * 1000, cameras[rows, targets], intrinsics[rows, targets], conditions,
            cameras[rows[:, None], views], intrinsics[rows[:, None], views], warp=self.source_warps(batch, rows, targets),
        ).denoised.float()
        per_frame = F.mse_loss(prediction, clean_video.float(), reduction="none").mean(dim=(2, 3, 4))
        weight = (~is_clean).float()
        loss = (per_frame * weight).sum() / weight.sum().clamp(min=1.0)
        return loss, logs


class ObjectiveStep(TrainerCallback):
    """Keeps the objective's step counter (curriculum, self-conditioning start) equal to the Trainer's, resumes included."""

    def __init__(self, objective: PlenopticObjective) -> None:
        self.objective = objective

    def on_train_begin(self, trainer: Trainer) -> None:
        self.objective.global_step = trainer.global_step

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self.objective.global_step = trainer.global_step


def build_dataset(config: PlenopticConfig):
    if config.data is not None:
        dataset = MultiViewVideoFolder(
            config.data, config.num_views, config.num_frames, config.size, config.camera_convention, config.camera_distance
        )
        if config.max_conditions > dataset.num_views - 1:
            raise ValueError(
                f"max_conditions={config.max_conditions} needs scenes of at least {config.max_conditions + 1} views; "
                f"the smallest scene in --data {config.data} has {dataset.num_views}"
            )
        return dataset
    return MultiViewSceneDataset(
        config.num_scenes, config.num_views, config.num_frames, config.size, config.seed,
        split="train", cache=config.train_dataset_cache, include_scene=False,
        neighbour_prob=config.neighbour_prob, neighbour_angle=config.neighbour_angle, return_depth=config.warp_conditioning,
    )


class SelfGeneratedViews(Dataset):
    """``dataset`` with each item's ``"generated_videos"`` added: ``(V, F, H, W, 3)`` in ``[0, 1]``, view 0 the
    real source and views ``1..V-1`` the offline bank's generations of that scene (``bank[index]``, uint8)."""

    def __init__(self, dataset: Dataset, bank: np.ndarray) -> None:
        self.dataset, self.bank = dataset, bank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        generated = torch.from_numpy(self.bank[index]).float() / 255
        return {**item, "generated_videos": torch.cat([item["videos"][:1], generated])}


@torch.no_grad()
def generate_bank(pipe: PlenopticDreamerPipeline, dataset: Dataset, retrieval_k: int, num_inference_steps: int, seed: int) -> np.ndarray:
    """``(S, V - 1, F, H, W, 3)`` uint8: for every scene of ``dataset``, views ``1..V-1`` re-rendered by ``pipe``
    from view 0 in one autoregressive chain (FOV retrieval of ``retrieval_k`` videos, as at inference),
    with the generator seeded ``seed + scene index``. A warp-conditioned ``pipe`` is given the source's depth
    (the dataset's ``"depths"``), as at evaluation, so the bank holds the chains the model really makes."""
    warp = pipe.transformer.config.warp_conditioning
    chains = []
    for index in tqdm(range(len(dataset)), desc="self-conditioning bank", mininterval=10):
        item = dataset[index]
        videos, cameras = item["videos"].numpy(), item["cameras"].numpy()
        intrinsics = per_view_intrinsics(item["intrinsics"][None], len(videos))[0].numpy()
        depth = {"source_depth": item["depths"][0].numpy()} if warp else {}
        generated = pipe(
            source_video=videos[0], source_cameras=cameras[0], target_cameras=list(cameras[1:]), intrinsics=intrinsics[0],
            target_intrinsics=list(intrinsics[1:]), retrieval_k=retrieval_k, retrieval="fov", num_inference_steps=num_inference_steps,
            generator=torch.Generator().manual_seed(seed + index), output_type="np", **depth,
        ).videos
        chains.append((np.stack(generated) * 255).round().astype(np.uint8))
    return np.stack(chains)


def load_bank(path: Path, dataset: Dataset) -> np.ndarray:
    """The bank stored at ``path``, checked against ``dataset`` (one chain of ``V - 1`` views per scene)."""
    with np.load(path) as stored:
        if "videos" not in stored:
            raise ValueError(f"self_conditioning_bank {path}: expected an array 'videos' inside")
        bank = stored["videos"]
    videos = dataset[0]["videos"]
    expected = (len(dataset), videos.shape[0] - 1, *videos.shape[1:])
    if bank.shape != expected or bank.dtype != np.uint8:
        raise ValueError(
            f"self_conditioning_bank {path}: videos of shape {bank.shape} ({bank.dtype}) do not fit the training data, "
            f"expected {expected} uint8 (scenes, views - 1, frames, H, W, 3)"
        )
    return bank


def self_conditioning_bank(config: PlenopticConfig, transformer: PlenopticTransformer, dataset: Dataset) -> np.ndarray:
    """The offline self-conditioning bank: ``config.self_conditioning_bank`` (must exist) or
    ``<output_dir>/self_conditioning_bank.npz``, generated by ``transformer`` and written atomically if missing."""
    if config.self_conditioning_bank is not None:
        path = Path(config.self_conditioning_bank)
        if not path.is_file():
            raise FileNotFoundError(
                f"self_conditioning_bank {path} not found (expected a bank .npz from an earlier offline run; "
                "leave the field unset to build one under output_dir)"
            )
        return load_bank(path, dataset)
    path = Path(config.output_dir) / "self_conditioning_bank.npz"
    if not path.is_file():
        pipe = build_pipeline(transformer)
        pipe.set_progress_bar_config(disable=True)
        bank = generate_bank(pipe, dataset, config.max_conditions, config.self_conditioning_steps, config.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(partial, videos=bank)
        partial.replace(path)  # atomic: a crash leaves no half-written bank behind
    return load_bank(path, dataset)


def build_transformer(config: PlenopticConfig) -> PlenopticTransformer:
    """A new transformer, or ``pretrained``'s; a ``warp_conditioning`` or ``refiner_width`` the pretrained model
    lacks adds that part, zero-initialised (the fine-tuned model starts as the pretrained one). With
    ``freeze_trunk`` only the refiner's parameters require gradients."""
    added = {"warp_conditioning": config.warp_conditioning, "refiner_width": config.refiner_width}
    if not config.pretrained:
        transformer = PlenopticTransformer(
            sample_size=config.size, num_frames=config.num_frames, patch_size=config.patch_size,
            hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads, **added,
        )
    else:
        pretrained = PlenopticDreamerPipeline.from_pretrained(config.pretrained).transformer
        transformer = pretrained
        if pretrained.config.warp_conditioning and not config.warp_conditioning:
            raise ValueError(f"pretrained {config.pretrained} has a warp input; set warp_conditioning: true to fine-tune it")
        if pretrained.config.refiner_width not in (0, config.refiner_width):
            raise ValueError(f"pretrained {config.pretrained} has refiner_width {pretrained.config.refiner_width}; got {config.refiner_width}")
        if any(pretrained.config[key] != value for key, value in added.items()):
            arguments = {key: value for key, value in pretrained.config.items() if not key.startswith("_")}
            transformer = PlenopticTransformer(**{**arguments, **added})
            missing, unexpected = transformer.load_state_dict(pretrained.state_dict(), strict=False)
            if unexpected or any(not key.startswith(("warp_embed.", "refiner.")) for key in missing):
                raise ValueError(f"pretrained {config.pretrained}: weights do not fit (missing {missing}, unexpected {unexpected})")
    if config.freeze_trunk:
        for name, parameter in transformer.named_parameters():
            parameter.requires_grad_(name.startswith("refiner."))
    return transformer


def build_pipeline(transformer: PlenopticTransformer) -> PlenopticDreamerPipeline:
    return PlenopticDreamerPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0))


def export_pipeline(model: PlenopticTransformer, directory: Path, dtype: str) -> None:
    """Save the pipeline with the transformer's weights stored as ``dtype`` (the training copy is untouched)."""
    stored = model if EXPORT_DTYPES[dtype] == model.dtype else copy.deepcopy(model).to(EXPORT_DTYPES[dtype])
    build_pipeline(stored).save_pretrained(directory)


def train(config: PlenopticConfig) -> TrainResult:
    set_seed(config.seed)
    transformer, dataset = build_transformer(config), build_dataset(config)
    if config.self_conditioning == "offline" and config.self_conditioning_prob > 0:
        dataset = SelfGeneratedViews(dataset, self_conditioning_bank(config, transformer, dataset))
        set_seed(config.seed)  # the same training randomness as a run without a bank
    objective = PlenopticObjective(config)
    trainer = Trainer(
        transformer, objective, dataset, config,
        export_fn=lambda model, directory: export_pipeline(model, directory, config.export_dtype),
        callbacks=[ObjectiveStep(objective)],
    )
    return trainer.train()


# ---------------------------------------------------------------------- evaluation


def load_pipeline(model_path: str) -> PlenopticDreamerPipeline:
    if not (Path(model_path) / "model_index.json").is_file():
        raise FileNotFoundError(f"--model {model_path}: not a pipeline folder (expected model_index.json inside)")
    pipe = PlenopticDreamerPipeline.from_pretrained(model_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def depth_inputs(pipe: PlenopticDreamerPipeline, item: dict[str, Any]) -> dict[str, Any]:
    """``{"source_depth": ...}`` (the source's rendered depth) for a warp-conditioned ``pipe``, else ``{}``."""
    if not pipe.transformer.config.warp_conditioning:
        return {}
    size = item["videos"].shape[2]
    return {"source_depth": render(item["scene"], item["cameras"].numpy()[0], item["intrinsics"].numpy(), size, return_depth=True)[1]}


def held_out_scenes(count: int, chain_length: int, num_frames: int, size: int) -> MultiViewSceneDataset:
    """Test-split scenes with a source and ``chain_length`` target paths each."""
    return MultiViewSceneDataset(count, 1 + chain_length, num_frames, size, seed=0, split="test")


def scene_chain_scores(item: dict[str, Any], generated: list[np.ndarray], intrinsics: np.ndarray) -> dict[str, Any]:
    """Scores of one chain ``[A, B, C, ..., A']`` of one scene against its ground truth."""
    videos, cameras, scene = item["videos"].numpy(), item["cameras"].numpy(), item["scene"]
    truths = list(videos[1:]) + [videos[1]]
    size = videos.shape[2]
    _, source_depth = render(scene, cameras[0], intrinsics, size, return_depth=True)
    _, depth_a = render(scene, cameras[1], intrinsics, size, return_depth=True)
    unseen = unseen_mask(depth_a, cameras[1], source_depth, cameras[0], intrinsics)
    camera_errors = []
    for video, path in zip(generated[:-1], cameras[1:]):
        angles = np.deg2rad(CAMERA_CANDIDATE_DEGREES)
        candidates = [render(scene, rotate_about_vertical(path, angle), intrinsics, size) for angle in angles]
        camera_errors.append(camera_error(video, candidates, CAMERA_CANDIDATE_DEGREES))
    return {
        "psnr": [psnr(video, truth) for video, truth in zip(generated, truths)],
        "ssim": [ssim(video, truth) for video, truth in zip(generated, truths)],
        "sync_psnr": psnr(generated[-1], generated[0]),
        "sync_psnr_unseen": masked_psnr(generated[-1], generated[0], unseen),
        "unseen_fraction": float(unseen.mean()),
        "camera_error_deg": float(np.mean(camera_errors)),
    }


def chain_scores(
    pipe: PlenopticDreamerPipeline | None,
    dataset: MultiViewSceneDataset,
    retrieval: str,
    retrieval_k: int,
    num_inference_steps: int,
    seed: int,
) -> dict[str, Any]:
    """Mean scores over ``dataset``'s scenes of the chain A, B, ..., A' (with standard errors over the
    scenes of the mean PSNR, of both sync scores and of the degradation along the chain); ``pipe=None``
    scores the "copy the source video" floor. Degradation is measured from B (the first view whose
    context may hold generated videos) to the last new view: ``degradation_slope`` is the mean per-scene
    least-squares slope of PSNR in dB per view, ``drop_b_to_last`` the mean PSNR difference last - B.
    ``per_scene`` keeps each scene's mean PSNR, sync PSNR (whole frame and, the headline, the pixels of A the
    source never saw) and slope for paired comparisons between rows. Also
    returns the generated chains of the first scene."""
    per_scene, first_chain = [], None
    for index in range(len(dataset)):
        item = dataset[index]
        videos, cameras, intrinsics = item["videos"].numpy(), item["cameras"].numpy(), item["intrinsics"].numpy()
        targets = list(cameras[1:]) + [cameras[1]]
        if pipe is None:
            generated = [videos[0]] * len(targets)
        else:
            generated = pipe(
                source_video=videos[0], source_cameras=cameras[0], target_cameras=targets, intrinsics=intrinsics,
                retrieval_k=retrieval_k, retrieval=retrieval, num_inference_steps=num_inference_steps,
                generator=torch.Generator().manual_seed(seed + index), output_type="np", **depth_inputs(pipe, item),
            ).videos
        per_scene.append(scene_chain_scores(item, generated, intrinsics))
        first_chain = first_chain if first_chain is not None else [videos[0]] + list(generated)
    summary: dict[str, Any] = {
        key: np.nanmean([scores[key] for scores in per_scene], axis=0).tolist() for key in per_scene[0]
    }
    summary["mean_psnr"] = float(np.mean(summary["psnr"][:-1]))
    summary["mean_ssim"] = float(np.mean(summary["ssim"][:-1]))
    slopes = [chain_slope(scores["psnr"][1:-1]) for scores in per_scene]
    drops = [scores["psnr"][-2] - scores["psnr"][1] for scores in per_scene]
    summary["degradation_slope"], summary["drop_b_to_last"] = float(np.mean(slopes)), float(np.mean(drops))
    summary["per_scene"] = {
        "mean_psnr": [float(np.mean(scores["psnr"][:-1])) for scores in per_scene],
        "sync_psnr": [scores["sync_psnr"] for scores in per_scene],
        "sync_psnr_unseen": [scores["sync_psnr_unseen"] for scores in per_scene],
        "degradation_slope": slopes,
    }
    summary["standard_error"] = {
        "mean_psnr": standard_error(summary["per_scene"]["mean_psnr"]),
        "sync_psnr": standard_error(summary["per_scene"]["sync_psnr"]),
        "sync_psnr_unseen": standard_error(summary["per_scene"]["sync_psnr_unseen"]),
        "degradation_slope": standard_error(summary["per_scene"]["degradation_slope"]),
        "drop_b_to_last": standard_error(drops),
    }
    return {"scores": summary, "first_chain": first_chain}


def advanced_generator(seed: int, views: int, shape: tuple[int, ...]) -> torch.Generator:
    """A generator seeded ``seed`` that has already drawn the starting noise of ``views`` videos of ``shape``
    (one clip each), so a single view generated with it starts from the noise the ``views + 1``-th view of a
    chain seeded ``seed`` starts from."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(views):
        torch.randn(shape, generator=generator)
    return generator


def walk_away_scene_scores(
    pipe: PlenopticDreamerPipeline | None, item: dict[str, Any], retrieval: str, retrieval_k: int, num_inference_steps: int, seed: int
) -> dict[str, Any]:
    """One walk-away scene (:class:`WalkAwayScenes`): the chain ``1, 2, ..., V-1`` then view 1 again (loop
    closure), and every view ``k`` once more conditioned on the **ground truth** of views ``1..k-1`` (same
    retrieval, same starting noise as in the chain). ``exposure_gap[k] = PSNR_gt-conditioned - PSNR_chain``.
    ``pipe=None`` copies the source (no gap by construction)."""
    videos, cameras, intrinsics = item["videos"].numpy(), item["cameras"].numpy(), item["intrinsics"].numpy()
    truths, scene = videos[1:], item["scene"]
    options = dict(intrinsics=intrinsics, retrieval_k=retrieval_k, retrieval=retrieval, num_inference_steps=num_inference_steps, output_type="np")
    if pipe is not None:
        options.update(depth_inputs(pipe, item))
    if pipe is None:
        chain, teacher, in_context = [videos[0]] * len(videos), [videos[0]] * len(truths), [True] * len(truths)
    else:
        out = pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[*cameras[1:], cameras[1]],
                   generator=torch.Generator().manual_seed(seed), **options)
        chain, in_context = out.videos, [0 in chosen for chosen in out.conditions[:-1]]
        shape = (1, *np.moveaxis(videos[0], -1, 1).shape)
        teacher = [
            pipe(source_video=videos[0], source_cameras=cameras[0], target_cameras=[cameras[view]],
                 known_videos=list(videos[1:view]), known_cameras=list(cameras[1:view]),
                 generator=advanced_generator(seed, view - 1, shape), **options).videos[0]
            for view in range(1, len(videos))
        ]
    size = videos.shape[2]
    _, source_depth = render(scene, cameras[0], intrinsics, size, return_depth=True)
    _, depth_a = render(scene, cameras[1], intrinsics, size, return_depth=True)
    unseen = unseen_mask(depth_a, cameras[1], source_depth, cameras[0], intrinsics)
    chain_psnr = [psnr(video, truth) for video, truth in zip(chain[:-1], truths)]
    teacher_psnr = [psnr(video, truth) for video, truth in zip(teacher, truths)]
    return {
        "chain_psnr": chain_psnr,
        "teacher_psnr": teacher_psnr,
        "exposure_gap": [gt - own for gt, own in zip(teacher_psnr, chain_psnr)],
        "loop_sync_psnr": psnr(chain[-1], chain[0]),
        "loop_sync_psnr_unseen": masked_psnr(chain[-1], chain[0], unseen),
        "loop_psnr": psnr(chain[-1], truths[0]),
        "source_in_context": float(np.mean(in_context[1:])),
        "chain": [videos[0], *chain],
    }


def walk_away_scores(
    pipe: PlenopticDreamerPipeline | None, dataset: Dataset, retrieval: str, retrieval_k: int, num_inference_steps: int, seed: int
) -> dict[str, Any]:
    """Means over the walk-away scenes (seed ``seed + scene index``) with standard errors over scenes:
    per-position chain / ground-truth-conditioned PSNR and exposure gap, ``mean_exposure_gap`` (views 2..V-1,
    whose context can hold generations), ``chain_slope`` (dB per view over views 2..V-1), loop-closure sync
    (the headline is ``loop_sync_psnr_unseen``: pixels of view 1 the source never saw, where agreement cannot
    come from the source), and ``source_in_context`` (share of views 2..V-1 conditioned on the real source).
    ``per_scene`` keeps the scene-level numbers for paired comparisons."""
    per_scene = [walk_away_scene_scores(pipe, dataset[index], retrieval, retrieval_k, num_inference_steps, seed + index)
                 for index in range(len(dataset))]
    first_chain = per_scene[0].pop("chain")
    scene_metrics = {
        "mean_exposure_gap": [float(np.mean(scores["exposure_gap"][1:])) for scores in per_scene],
        "chain_slope": [chain_slope(scores["chain_psnr"][1:]) for scores in per_scene],
        "mean_chain_psnr": [float(np.mean(scores["chain_psnr"])) for scores in per_scene],
        "loop_sync_psnr_unseen": [scores["loop_sync_psnr_unseen"] for scores in per_scene],
        "loop_sync_psnr": [scores["loop_sync_psnr"] for scores in per_scene],
    }
    summary: dict[str, Any] = {
        key: np.nanmean([scores[key] for scores in per_scene], axis=0).tolist()
        for key in ("chain_psnr", "teacher_psnr", "exposure_gap", "loop_psnr", "source_in_context")
    }
    summary.update({key: float(np.nanmean(values)) for key, values in scene_metrics.items()})
    summary["standard_error"] = {key: standard_error([v for v in values if np.isfinite(v)]) for key, values in scene_metrics.items()}
    summary["per_scene"] = scene_metrics
    summary["first_chain"] = first_chain
    return summary


def parse_extra_model(entry: str) -> tuple[str, str, str]:
    """``"name=path@retrieval"`` -> ``(name, path, retrieval)``."""
    try:
        name, rest = entry.split("=", 1)
        path, retrieval = rest.rsplit("@", 1)
    except ValueError:
        raise ValueError(f"--extra_models entries must look like name=path@retrieval, got {entry!r}") from None
    if retrieval not in RETRIEVAL_MODES:
        raise ValueError(f"--extra_models {entry!r}: retrieval must be one of {RETRIEVAL_MODES}")
    return name, path, retrieval


def paired_differences(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, list[float]]:
    """Per-scene differences ``row - reference`` of every metric in ``per_scene`` (same scenes, same seeds):
    ``{metric: [mean, standard error over scenes]}``."""
    return {metric: list(mean_difference(reference["per_scene"][metric], values)) for metric, values in row["per_scene"].items()}


def plot_chain_quality(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """PSNR vs chain position (the last position is the revisit A') for every row."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, row in rows.items():
        values = row["psnr"]
        axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
    axis.set_xlabel("chain position (last = revisit of view 1)")
    axis.set_ylabel("PSNR vs ground truth (dB)")
    axis.set_title("Revisit chains: PSNR along the chain", fontsize=9)
    axis.legend(fontsize=7)
    save_figure(figure, path)


def plot_walk_away(rows: dict[str, dict[str, Any]], step_degrees: float, path: Path) -> None:
    """Walk-away chains: PSNR vs how far the view has turned from the source, conditioned on the model's own
    chain (solid) and on ground truth (dashed); the vertical distance is the exposure gap."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for name, row in rows.items():
        angles = step_degrees * np.arange(1, len(row["chain_psnr"]) + 1)
        (line,) = axis.plot(angles, row["chain_psnr"], marker="o", label=f"{name}: own chain")
        if name != "copy-source":
            axis.plot(angles, row["teacher_psnr"], linestyle="--", color=line.get_color(), label=f"{name}: ground-truth context")
    axis.set_xlabel("target turned from the source (degrees)")
    axis.set_ylabel("PSNR vs ground truth (dB)")
    axis.set_title("Walk-away chains (static scenes)", fontsize=9)
    axis.legend(fontsize=6)
    save_figure(figure, path)


def evaluate(
    model_path: str,
    output_dir: Path,
    retrievals: list[str] | None = None,
    retrieval_k: int = 2,
    extra_models: list[str] | None = None,
    num_scenes: int = 12,
    chain_length: int = 8,
    num_inference_steps: int = DEMO_STEPS,
    seed: int = 0,
    paired_references: list[str] | None = None,
    walk_away_scenes: int | None = None,
    walk_away_views: int = 12,
    walk_away_step: float = 30.0,
) -> dict:
    """Two protocols on held-out scenes, for the model under each retrieval mode, for ``extra_models``
    (``name=path@retrieval``, e.g. ablation checkpoints) and for the copy-the-source floor:

    * **revisit chains** (``num_scenes`` dynamic scenes; 0 skips them): A, B, C, ... (``chain_length`` independent paths)
      then A' (A's cameras again); ``chain_quality.png`` and ``chains.png`` (first scene);
    * **walk-away chains** (``walk_away_scenes`` static scenes, default ``num_scenes``; 0 skips them): views
      turned ``walk_away_step`` degrees further each, ``walk_away_views - 1`` targets, then view 1 again
      (:func:`walk_away_scores`: exposure gap, chain slope, loop-closure sync on unseen pixels);
      ``walk_away.png`` and ``walk_away_chains.png`` (first scene, first frames: source, views 1..V-1 and the
      revisit of view 1; top row ground truth, then each row's chain).

    ``paired_references`` (row names, e.g. ``[single-in]``) add every row's :func:`paired_differences` to each."""
    pipe = load_pipeline(model_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = pipe.transformer.config
    dataset = held_out_scenes(num_scenes, chain_length, config.num_frames, config.sample_size) if num_scenes else None
    runs = [(f"plenoptic-{mode}", pipe, mode) for mode in (retrievals or ["fov", "recent"])]
    runs += [(name, load_pipeline(path), mode) for name, path, mode in map(parse_extra_model, extra_models or [])]
    runs.append(("copy-source", None, "source"))
    names = [name for name, _, _ in runs]
    for reference in paired_references or []:
        if reference not in names:
            raise ValueError(f"--paired_references {reference!r} is not a row; rows: {names}")
    walk_count = num_scenes if walk_away_scenes is None else walk_away_scenes
    if not num_scenes and not walk_count:
        raise ValueError("num_scenes and walk_away_scenes are both 0: nothing to evaluate")
    walk_data = WalkAwayScenes(walk_count, walk_away_views, config.num_frames, config.sample_size, walk_away_step) if walk_count else None
    rows, walk_rows, chains, walk_chains = {}, {}, [], []
    for name, run_pipe, mode in runs:
        if dataset is not None:
            result = chain_scores(run_pipe, dataset, mode, retrieval_k, num_inference_steps, seed)
            rows[name] = result["scores"]
            chains.append(np.concatenate(result["first_chain"]))
        if walk_data is not None:
            walk_rows[name] = walk_away_scores(run_pipe, walk_data, mode, retrieval_k, num_inference_steps, seed)
            walk_chains.append(np.stack([video[0] for video in walk_rows[name].pop("first_chain")]))
    for reference in paired_references or []:
        for table in (rows, walk_rows):
            for row in table.values():
                row["paired_vs_" + reference] = paired_differences(row, table[reference])
    metrics = {"model": model_path, "num_scenes": num_scenes, "chain_length": chain_length, "retrieval_k": retrieval_k, "rows": rows}
    if dataset is not None:
        plot_chain_quality(rows, output_dir / "chain_quality.png")
        save_image_grid(np.stack(chains).reshape(-1, *chains[0].shape[1:]), output_dir / "chains.png", columns=chains[0].shape[0])
    if walk_data is not None:
        plot_walk_away(walk_rows, walk_away_step, output_dir / "walk_away.png")
        truth = walk_data[0]["videos"].numpy()[:, 0]
        grid = np.concatenate([truth, truth[1:2], *walk_chains])  # rows: ground truth, then each row's chain
        save_image_grid(grid, output_dir / "walk_away_chains.png", columns=len(truth) + 1)
        metrics["walk_away"] = {"num_scenes": walk_count, "views": walk_away_views, "step_degrees": walk_away_step, "rows": walk_rows}
    return metrics


# ---------------------------------------------------------------------- generate / demo


def write_video(frames: np.ndarray, path: Path, fps: int) -> Path:
    """``(F, H, W, 3)`` in ``[0, 1]`` -> an H.264 MP4 written with PyAV."""
    import av

    pixels = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = pixels.shape[2], pixels.shape[1], "yuv420p"
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def load_target_paths(path: str | Path, num_frames: int) -> list[np.ndarray]:
    """Target camera paths from JSON: a list whose items are ``[4x4 per frame]`` or ``{"cameras": [...]}``
    (optionally wrapped as ``{"targets": [...]}``), each with ``num_frames`` rigid matrices."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"targets file {path} not found (expected a JSON list of camera paths)")
    record = json.loads(path.read_text())
    entries = record.get("targets") if isinstance(record, dict) else record
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"targets file {path} must hold a non-empty list of camera paths (or {{'targets': [...]}})")
    paths = []
    for index, entry in enumerate(entries):
        cameras = entry.get("cameras") if isinstance(entry, dict) else entry
        paths.append(check_cameras(cameras, f"{path}: target {index}", num_frames))
    return paths


def generate(
    model_path: str,
    output_dir: Path,
    video: str,
    cameras: str,
    targets: str,
    retrieval_k: int = 2,
    retrieval: str = "fov",
    num_inference_steps: int = 30,
    seed: int = 0,
    fps: int = 4,
    camera_convention: str = "opencv",
    camera_distance: float | None = SYNTHETIC_CAMERA_DISTANCE,
    depth: str | None = None,
) -> dict:
    """Re-render ``video`` (with its camera JSON ``cameras``) along every path in ``targets``: writes
    ``target_<i>.mp4`` per target and ``grid.png`` (rows: source, then each target). Camera files use
    ``camera_convention`` axes; with ``camera_distance`` all paths (source and targets together) are rescaled
    to the training scenes' scale (:func:`~selfgen.data.multiview.normalize_pose_scale`). ``depth``: a ``.npy``
    file of the source's camera depth ``(F, H, W)`` at the video's resolution, in the camera file's units
    (``inf`` for sky), for warp-conditioned models; it is rescaled and resized with the cameras and frames."""
    pipe = load_pipeline(model_path)
    frames = read_video(video)
    source_cameras, intrinsics = load_camera_file(cameras, len(frames), camera_convention)
    target_paths = [to_opencv(path, camera_convention) for path in load_target_paths(targets, len(frames))]
    source_depth = None if depth is None else load_depth_file(depth, frames.shape[:3])
    scale = 1.0
    if camera_distance is not None:
        scaled, scale = normalize_pose_scale(np.stack([source_cameras, *target_paths]), camera_distance, f"{cameras} and {targets}")
        source_cameras, target_paths = scaled[0], list(scaled[1:])
    size = pipe.transformer.config.sample_size
    source, intrinsics = resize_video(frames, intrinsics, size)
    output = pipe(
        source_video=source, source_cameras=source_cameras, target_cameras=target_paths, intrinsics=intrinsics,
        retrieval_k=retrieval_k, retrieval=retrieval, num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed), output_type="np",
        source_depth=None if source_depth is None else resize_depth(source_depth * scale, size),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    files = [str(write_video(generated, output_dir / f"target_{index}.mp4", fps)) for index, generated in enumerate(output.videos)]
    grid = save_image_grid(
        np.concatenate([source, *output.videos]), output_dir / "grid.png", columns=len(source),
        row_labels=["source"] + [f"target {index}" for index in range(len(output.videos))],
        column_labels=[f"frame {index}" for index in range(len(source))],
    )
    return {"videos": files, "grid": str(grid), "conditions": output.conditions}


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """One held-out scene: chain A, B, C, A' (retrieval K=2; a warp-conditioned model also gets the source's
    rendered depth), against the ground truth; ``chain.png`` rows are source, A, B, C, A' and ground truth A, B, C."""
    pipe = load_pipeline(str(asset_dir))
    config = pipe.transformer.config
    item = held_out_scenes(1, 3, config.num_frames, config.sample_size)[0]
    videos, cameras, intrinsics = item["videos"].numpy(), item["cameras"].numpy(), item["intrinsics"].numpy()
    generated = pipe(
        source_video=videos[0], source_cameras=cameras[0], target_cameras=[cameras[1], cameras[2], cameras[3], cameras[1]],
        intrinsics=intrinsics, retrieval_k=2, num_inference_steps=DEMO_STEPS, generator=torch.Generator().manual_seed(0),
        **depth_inputs(pipe, item),
    ).videos
    output_dir.mkdir(parents=True, exist_ok=True)
    save_image_grid(
        np.concatenate([videos[0], *generated, *videos[1:]]), output_dir / "chain.png", columns=len(videos[0]),
        row_labels=["source", "generated A", "generated B", "generated C", "generated A'", "truth A", "truth B", "truth C"],
        column_labels=[f"frame {index}" for index in range(len(videos[0]))],
        title="held-out scene: views generated in the order A, B, C, A' (retrieval K=2) vs ground truth",
    )
    scores = scene_chain_scores(item, generated, intrinsics)
    metrics = {key: scores[key] for key in ("psnr", "sync_psnr", "camera_error_deg")}
    return metrics


METHOD = Method(
    name="plenoptic",
    summary="PlenopticDreamer: camera-controlled multi-view video re-rendering with retrieval + self-conditioning",
    config_class=PlenopticConfig,
    train=train,
    generate=generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="plenoptic-scenes",
)
