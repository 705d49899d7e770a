"""SRUM: fine-grained self-rewarding for unified multimodal models (Jin et al. 2025, arXiv:2510.12784).

The understanding path of a unified model judges what its generation path draws, and that judgement
(no human labels, no external reward model) steers a reward-weighted update of the generation path.
This module is the world-agnostic loop; :mod:`selfgen.train.srum_shapes` plugs in the bundled
shapes world (its prompts, its self-reward questions, its judge). One round, ``num_rounds`` times:

1. sample prompts with the caller's ``sample_prompt`` and **generate** ``x0 ~ p_theta(. | c)``;
2. **self-reward** with the caller's ``reward_fn(umm, images, prompts) -> SelfRewards``: a global
   (whole-prompt) reward ``g`` in ``[-1, 1]`` and local rewards ``s_r`` in ``[-1, 1]`` per region
   ``r`` (the world's layout, passed in as pixel slices; the shapes world's four quadrants), combined as in
   the authors' code (``regional_reward_dataset.py``) into
   the dense map (:func:`reward_maps`): neutral ``0.5`` everywhere, ``(s_r + 1) / 2`` on regions that
   hold an object, all scaled by the global factor, ``R(i, j) = M(i, j) (g + 1) / 2`` in ``[0, 1]``;
3. **update** on the self-generated samples with the authors' objective (``modeling/bagel/bagel.py``)::

       L = E_{sigma, eps} [ mean_ij R(i, j) (v_theta(x_sigma) - (eps - x0))^2_ij ]
           + lambda E_{sigma, eps} [ mean_ij (v_theta(x_sigma) - (eps - x_anchor))^2_ij ],
       x_sigma = (1 - sigma) x0 + sigma eps.

   The authors' "constraint" term is a flow-matching loss toward an anchor image (``gt_image_tensor``,
   their "good" folder); every released training config points the "good" and the "bad" folders at
   the same self-generated images, so ``x_anchor = x0`` and the loss is flow matching on the model's own
   samples with the weight ``R + lambda`` per pixel: the update moves the generator all the way toward
   its own samples, most where its own judge rewards them. (Until this version selfgen regularised
   toward the frozen start model's velocity, ``lambda ||v - v_ref||^2``, whose pointwise minimiser
   ``(R t + lambda v_ref) / (R + lambda)`` moved the model only 5-17% of the way: a departure, removed.)
   Default ``lambda = 0.5`` as in the authors' training scripts (``scripts/train_reg_*.sh``).

A latent-generation model (BAGEL: FLUX's VAE; selfgen: a frozen ``AutoencoderKL``) needs nothing latent-specific
in the loop: rewards are computed on the decoded images, ``umm.encode_samples`` returns the ``x0`` the loss runs on
(the autoencoder's encoding of the decoded sample, as the authors' trainer VAE-encodes their saved samples), and the
map is resized to that grid (:func:`resize_reward_maps`, bilinear as in their ``bagel.py``). Departures: selfgen
re-encodes the float images (the authors' are saved as 8-bit PNG first) with the posterior mean (theirs samples).

Which weights learn: the authors pass ``--freeze_llm False --visual_und False``: the whole language
model (both experts of the MoT) is trainable, with no understanding loss, so the understanding expert
moves only through the prompt tokens the generation tokens attend to. ``train_parameters="all"``
does that; the default ``"generation"`` keeps the understanding path (the judge) fixed, so that later
rounds are rewarded by the same judge as the first (the authors run one round).

Any model implementing :class:`SelfRewardingUMM` plugs in; everything world-specific (prompts, rewards,
export, evaluation) is passed to :class:`SRUMTrainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from diffusers import ImagePipelineOutput
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..eval.plots import ColorBar, save_image_grid, save_metric_curves
from .config import TrainingConfig
from .losses import noisy_pair
from .trainer import Objective, Trainer, TrainResult

REWARD_MODES = ("both", "global", "local", "blind", "oracle", "oracle_blind")
BASELINES = ("none", "group")
TRAIN_PARAMETERS = ("generation", "all")


class SelfRewardingUMM(Protocol):
    """What the SRUM loop needs from a unified multimodal model (``UnifiedPipeline`` is one).

    A BAGEL-style adapter implements ``generate`` with its flow-matching sampler (images decoded from
    the VAE), ``encode_prompts`` with its tokenizer, ``velocity(model, x, sigma, c)`` from the packed
    forward with the VAE latents as the generation tokens (the reward map is then resized to the latent
    grid, as the authors do), and ``generation_parameters`` = the MoT generation experts plus
    ``vae2llm``/``llm2vae``/time embedder; ``transformer`` is the module the Trainer wraps. How the model
    judges its own images belongs to the ``reward_fn`` given to :class:`SRUMTrainer`.
    """

    transformer: nn.Module

    def generate(
        self, prompts: list[str], *, generator: torch.Generator | None, output_type: str, **options
    ) -> ImagePipelineOutput: ...

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor: ...

    def velocity(
        self, model: nn.Module, sample: torch.Tensor, sigmas: torch.Tensor, prompt_ids: torch.Tensor
    ) -> torch.Tensor: ...

    def generation_parameters(self) -> list[nn.Parameter]: ...

    def encode_samples(self, images: np.ndarray) -> torch.Tensor:
        """The clean flow sample ``x0`` ``(N, C, h, w)`` of the model's own decoded images ``(N, H, W, 3)`` in
        ``[0, 1]``: what ``velocity`` reads and the loss is written on (a pixel model: the pixels in ``[-1, 1]``;
        a latent model: its frozen autoencoder's encoding, as BAGEL's trainer VAE-encodes the saved samples).
        The reward maps are resized to the ``(h, w)`` grid (:func:`resize_reward_maps`)."""
        ...


@dataclass
class SRUMConfig(TrainingConfig):
    """``max_train_steps`` is the number of updates *per round*."""

    pretrained: str | None = "assets/unified-shapes"  # the UnifiedPipeline folder `selfgen train srum` loads
    num_rounds: int = 3
    prompts_per_round: int = 128
    num_inference_steps: int = 16
    guidance_scale: float = 3.0
    reward: str = "both"  # "both" (global x local, the paper), "global", "local"; controls "blind", "oracle", "oracle_blind"
    constraint_weight: float = 0.5  # lambda of the anchor term (authors' scripts: 0.5)
    train_parameters: str = "generation"  # "generation" (judge fixed) or "all" (the authors' --freeze_llm False)
    cfg_dropout: float = 0.0  # prompt dropped to the empty prompt in the update (authors: text_cond_dropout_prob)
    update_guidance_scale: float = 1.0  # w of the velocity the loss is written on (1: the conditional one, as the authors)
    samples_per_prompt: int = 1  # images generated per prompt (a group shares one baseline)
    reward_baseline: str = "none"  # "none" (the raw map, the paper) or "group" (see group_baseline)
    reward_floor: float = 0.0  # with "group": the share of the weight spread uniformly (see group_baseline); not in the paper
    eval_prompts_per_category: int = 16
    eval_seed: int = 0
    eval_split: str = "heldout"  # "train" for tuning hyper-parameters; report on "heldout" only
    eval_samples_per_prompt: int = 1  # images judged per evaluation prompt (different noise), less noisy
    eval_num_inference_steps: int = 16  # the sampler of the per-round judge accuracy, as `selfgen eval srum` reads it
    eval_guidance_scale: float = 3.0  # ... (independent of the round's own samples' num_inference_steps / guidance_scale)
    eval_train_prompts_per_category: int = 0  # > 0: also judge this many training prompts (train_accuracy_*)

    def __post_init__(self) -> None:
        super().__post_init__()
        choices = {"reward": REWARD_MODES, "reward_baseline": BASELINES, "train_parameters": TRAIN_PARAMETERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.eval_split not in ("train", "heldout"):
            raise ValueError(f"eval_split must be 'train' or 'heldout', got {self.eval_split!r}")
        if self.samples_per_prompt < 1 or self.eval_samples_per_prompt < 1:
            raise ValueError(
                f"samples_per_prompt and eval_samples_per_prompt must be >= 1, got {self.samples_per_prompt} "
                f"and {self.eval_samples_per_prompt}"
            )
        if self.num_rounds < 1 or self.prompts_per_round < 1:
            raise ValueError("num_rounds and prompts_per_round must be >= 1")
        if not 0 <= self.reward_floor <= 1:
            raise ValueError(f"reward_floor must be in [0, 1], got {self.reward_floor}")
        if self.reward_floor > 0 and self.reward_baseline != "group":
            raise ValueError(f"reward_floor only applies with reward_baseline='group', got {self.reward_baseline!r}")
        if self.constraint_weight < 0:
            raise ValueError(f"constraint_weight must be >= 0, got {self.constraint_weight}")
        if self.eval_num_inference_steps < 1:
            raise ValueError(f"eval_num_inference_steps must be >= 1, got {self.eval_num_inference_steps}")
        if self.update_guidance_scale < 1:
            raise ValueError(f"update_guidance_scale must be >= 1, got {self.update_guidance_scale}")
        if self.lora_rank > 0:
            raise ValueError("SRUM continues each round from the previous round's weights: lora_rank must be 0")


# ----------------------------------------------------------------------------- reward maps


@dataclass
class SelfRewards:
    """``global_reward`` ``(N,)`` and ``local_rewards`` ``(N, R)`` in ``[-1, 1]`` (one column per region of the
    world's layout, in the order of the ``regions`` given to :func:`reward_maps`); ``reward_maps`` ``(N, H, W)``
    in ``[0, 1]``; ``occupancy`` ``(N, R)``: the judge's ``P(object in r)``."""

    global_reward: np.ndarray
    local_rewards: np.ndarray
    reward_maps: np.ndarray
    occupancy: np.ndarray


RewardFn = Callable[[SelfRewardingUMM, np.ndarray, list[str]], SelfRewards]


def reward_maps(
    global_reward: np.ndarray,
    scores: np.ndarray,
    occupied: np.ndarray,
    size: tuple[int, int],
    mode: str,
    regions: Sequence[tuple[slice, slice]],
) -> np.ndarray:
    """``R = M (g + 1) / 2`` with ``M = 0.5`` except ``(s_r + 1) / 2`` on occupied regions (see the module docstring).

    ``regions``: the pixel extent ``(rows, cols)`` of each column of ``scores`` / ``occupied`` (the world's
    layout; e.g. :func:`selfgen.train.srum_shapes.quadrant_slices`). ``mode="global"`` keeps ``M = 0.5`` (no local
    term); ``mode="local"`` drops the global factor;
    ``mode="blind"`` (a control, not in the paper) gives every pixel of every sample the mean of the
    ``"both"`` maps: the same update size with no information from the rewards."""
    if len(regions) != scores.shape[1] or occupied.shape != scores.shape:
        raise ValueError(
            f"regions has {len(regions)} entries; scores {scores.shape} and occupied {occupied.shape} must both "
            "be (N, len(regions)), one column per region"
        )
    height, width = size
    maps = np.full((len(global_reward), height, width), 0.5, dtype=np.float32)
    if mode != "global":
        for index, (rows, cols) in enumerate(regions):
            regional = np.where(occupied[:, index] > 0.5, (scores[:, index] + 1) / 2, 0.5)
            maps[:, rows, cols] = regional[:, None, None]
    if mode != "local":
        maps *= ((global_reward + 1) / 2)[:, None, None]
    return blind(maps) if mode == "blind" else maps


def blind(maps: np.ndarray) -> np.ndarray:
    """The reward-blind control's maps: every pixel of every sample the mean of ``maps`` (the same update size as
    ``maps`` with no information about which sample or region was good)."""
    return np.full_like(maps, maps.mean())


def resize_reward_maps(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Reward maps ``(N, H, W)`` on the image's pixels -> ``(N, h, w)`` on the generation grid the loss runs on
    (:meth:`SelfRewardingUMM.encode_samples`): bilinear, ``align_corners=False``, as the authors resize their
    map to BAGEL's latent tokens (``modeling/bagel/bagel.py``). A map constant on blocks of ``H / h`` pixels (the
    quadrants of a 32x32 image on an 8x8 latent) keeps its block values exactly; at ``(h, w) = (H, W)`` it is the
    identity."""
    resized = F.interpolate(torch.from_numpy(maps)[:, None], size=grid, mode="bilinear", align_corners=False)
    return resized[:, 0].numpy()


def penalise_clutter(scores: np.ndarray, occupied: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Local scores where objects the prompt did not ask for cost reward.

    A prompt of ``expected[i]`` objects can fill at most that many quadrants: of the quadrants judged
    occupied (``occupied > 0.5``), the ``expected[i]`` with the highest score keep it, and every further
    one scores ``-occupied`` (an object where the image should be empty). Without this a cluttered image
    that repeats a prompt object in every quadrant would earn the most local reward."""
    penalised = scores.copy()
    for row, (sample_scores, sample_occupied) in enumerate(zip(scores, occupied)):
        filled = np.flatnonzero(sample_occupied > 0.5)
        extra = filled[np.argsort(-sample_scores[filled], kind="stable")][int(expected[row]) :]
        penalised[row, extra] = -sample_occupied[extra]
    return penalised


def group_baseline(maps: np.ndarray, group_size: int, floor: float = 0.0) -> np.ndarray:
    """Weights relative to a per-prompt baseline, pixel by pixel over the ``group_size`` consecutive samples of one
    prompt: ``a = max(R - mean_group(R), 0)``, and with a uniform ``floor`` f in [0, 1]

        ``w = mean(R) ((1 - f) a / mean(a) + f)``,

    i.e. ``max(R - mean_group(R), 0) + c`` rescaled so that ``mean(w) = mean(R)`` (the loss keeps the raw map's
    scale, so ``constraint_weight`` means the same), with the constant ``c`` holding the share f of the weight.
    f = 0: samples (regions) the model's own judge finds better than its average for that prompt are imitated and
    the rest get weight 0 (a prompt whose samples all score the same weighs 0); f = 1: the blind control's uniform
    weights. Not in the paper (its weight is the raw map R); the floor keeps every sample in the update while the
    baseline decides where the rest of the weight goes. ``max(.,0) + c`` rather than ``R - mean_group(R) + c``:
    the weights stay >= 0 for any c (a negative weight on the flow-matching loss pushes away from a sample without
    bound, an unlearning term the paper does not have), and f = 0 is the earlier weighting exactly. If no sample is
    above its group's mean anywhere, only the floor's part ``f mean(R)`` is left."""
    if len(maps) % group_size:
        raise ValueError(f"{len(maps)} reward maps do not split into groups of samples_per_prompt={group_size}")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    grouped = maps.reshape(-1, group_size, *maps.shape[1:])
    above = np.maximum(grouped - grouped.mean(axis=1, keepdims=True), 0).reshape(maps.shape)
    total, mean = above.mean(), maps.mean()
    imitated = above * (mean / total) if total > 0 else np.zeros_like(maps)
    return ((1 - floor) * imitated + floor * mean).astype(np.float32)


def reward_colors(values: np.ndarray) -> np.ndarray:
    """Reward in ``[0, 1]`` -> RGB: red = 0, green = 1 (the colours of :func:`overlay_reward_maps`)."""
    return np.stack([1 - values, values, np.zeros_like(values)], axis=-1)


REWARD_COLORBAR = ColorBar("reward map (blended 50% over the image)", reward_colors, "0", "1")


def overlay_reward_maps(images: np.ndarray, maps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend each reward map (red = 0, green = 1) over its image: ``(N, H, W, 3)`` in ``[0, 1]``."""
    return (1 - alpha) * images + alpha * reward_colors(maps)


# ----------------------------------------------------------------------------- objective


class SelfGeneratedDataset(Dataset):
    """One round's self-generated samples ``x0`` (``encode_samples`` of the images) with their prompts and reward
    maps on the samples' grid."""

    def __init__(self, samples: torch.Tensor, prompt_ids: torch.Tensor, maps: np.ndarray) -> None:
        if not len(samples) == len(prompt_ids) == len(maps):
            raise ValueError(f"got {len(samples)} samples, {len(prompt_ids)} prompts and {len(maps)} reward maps")
        if maps.shape[1:] != samples.shape[2:]:
            raise ValueError(f"reward maps of shape {maps.shape[1:]} do not cover samples of grid {samples.shape[2:]}")
        self.samples, self.prompt_ids = samples, prompt_ids
        self.maps = torch.from_numpy(maps)[:, None]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return {
            "sample": self.samples[index],
            "prompt_ids": self.prompt_ids[index],
            "reward_map": self.maps[index],
        }


class SRUMObjective(Objective):
    """The authors' reward-weighted rectified flow on self-samples plus the anchor term (module docstring):

    ``L = mean[R * (v_theta - (eps - x0))^2] + lambda * mean[(v_theta - (eps - x0))^2]`` at one ``x_sigma``.

    ``v_theta`` is the conditional velocity (the authors) or, with ``guidance_scale`` ``w > 1``, the guided velocity
    ``sg(v_u) + w (v_c - sg(v_u))`` that sampled the round's images (:meth:`velocity`; not in the paper).
    ``drop_prompt(prompt_ids)`` returns the unconditional prompt ids (needed when ``cfg_dropout > 0`` or ``w > 1``)."""

    def __init__(
        self,
        umm: SelfRewardingUMM,
        constraint_weight: float,
        cfg_dropout: float = 0.0,
        drop_prompt: Callable[[torch.Tensor], torch.Tensor] | None = None,
        guidance_scale: float = 1.0,
    ) -> None:
        if (cfg_dropout > 0 or guidance_scale != 1) and drop_prompt is None:
            raise ValueError("cfg_dropout > 0 or guidance_scale != 1 needs drop_prompt, the model's unconditional prompt ids")
        self.umm, self.constraint_weight = umm, constraint_weight
        self.cfg_dropout, self.drop_prompt, self.guidance_scale = cfg_dropout, drop_prompt, guidance_scale

    def velocity(self, model: nn.Module, noisy: torch.Tensor, sigmas: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        """The velocity the loss is written on. At ``w = 1`` the conditional ``v_c``. At ``w > 1`` the guided
        ``v_u + w (v_c - v_u)`` with the unconditional ``v_u`` held fixed (no gradient): the loss then fits the
        sampler that drew the samples (classifier-free guidance at ``w``), and only ``v_c`` learns, toward
        ``v_u + (t - v_u) / w``. Meant to stop guidance compounding (fitting ``v_c`` to samples drawn at ``w`` and
        guiding again at sampling); measured worse than fitting ``v_c`` (docs/srum.md, eighteenth pass, D3): a guided
        ODE's velocity is not the marginal velocity of what it samples, so this is no fixed point either. Not in the
        paper (the authors fit ``v_c``, with prompt dropout 0.1); off by default."""
        conditional = self.umm.velocity(model, noisy, sigmas, prompt_ids).float()
        if self.guidance_scale == 1:
            return conditional
        with torch.no_grad():
            unconditional = self.umm.velocity(model, noisy, sigmas, self.drop_prompt(prompt_ids)).float()
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images, prompt_ids, maps = batch["sample"], batch["prompt_ids"], batch["reward_map"]
        if self.cfg_dropout > 0:  # keep training the unconditional branch that guidance relies on
            drop = torch.rand(images.shape[0], device=images.device) < self.cfg_dropout
            prompt_ids = torch.where(drop[:, None], self.drop_prompt(prompt_ids), prompt_ids)
        noisy, sigmas, target = noisy_pair(images)
        squared_error = (self.velocity(model, noisy, sigmas, prompt_ids) - target) ** 2
        reward_term = (maps * squared_error).mean()
        anchor_term = squared_error.mean()
        loss = reward_term + self.constraint_weight * anchor_term
        return loss, {"loss_reward": reward_term.item(), "loss_constraint": anchor_term.item()}


# ----------------------------------------------------------------------------- the loop


def set_trainable(model: nn.Module, parameters: list[nn.Parameter] | None) -> None:
    """Train only ``parameters`` (``None``: every parameter of ``model``)."""
    trainable = None if parameters is None else {id(param) for param in parameters}
    for param in model.parameters():
        param.requires_grad_(trainable is None or id(param) in trainable)


def inference_precision(config: SRUMConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast for generation and self-rewarding when the run trains in bf16, else nothing."""
    if config.mixed_precision == "bf16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SRUMTrainer:
    """The SRUM loop on the shared :class:`~selfgen.train.trainer.Trainer`: one Trainer per round over
    that round's self-generated, self-rewarded samples (see the module docstring for the equations).

    Args:
        umm: the unified model (a :class:`SelfRewardingUMM`; its ``transformer`` is trained in place).
        config: the :class:`SRUMConfig`.
        sample_prompt: ``sample_prompt(rng) -> str``, one training prompt.
        reward_fn: ``reward_fn(umm, images, prompts) -> SelfRewards``, the model's own judgement of its
            images ``(N, H, W, 3)`` in ``[0, 1]``.
        export_fn: ``export_fn(transformer, directory)`` saves a loadable model (each round's export).
        evaluate_fn: ``evaluate_fn(umm) -> dict`` of metrics, run on the start model and after each round.
        drop_prompt: the unconditional prompt ids for ``cfg_dropout`` and ``update_guidance_scale`` (see
            :class:`SRUMObjective`).

    ``train()`` runs ``config.num_rounds`` rounds and returns a ``TrainResult`` whose ``history`` has one
    record per round (round 0 = the start model).
    """

    def __init__(
        self,
        umm: SelfRewardingUMM,
        config: SRUMConfig,
        sample_prompt: Callable[[random.Random], str],
        reward_fn: RewardFn,
        export_fn: Callable[[nn.Module, Path], None],
        evaluate_fn: Callable[[SelfRewardingUMM], dict] | None = None,
        drop_prompt: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.umm, self.config = umm, config
        self.sample_prompt, self.reward_fn, self.export_fn = sample_prompt, reward_fn, export_fn
        self.evaluate_fn, self.drop_prompt = evaluate_fn, drop_prompt
        self.history: list[dict] = []

    def evaluate(self) -> dict:
        if self.evaluate_fn is None:
            return {}
        with inference_precision(self.config):
            return self.evaluate_fn(self.umm)

    def self_generate(self, round_index: int) -> tuple[list[str], np.ndarray, SelfRewards, dict[str, float]]:
        """Steps 1-2 of a round: prompts, the model's images of them, its own rewards, and the seconds each took."""
        config, umm = self.config, self.umm
        rng = random.Random(f"{config.seed}-round-{round_index}")
        prompts = [self.sample_prompt(rng) for _ in range(config.prompts_per_round)]
        prompts = [prompt for prompt in prompts for _ in range(config.samples_per_prompt)]
        start = time.perf_counter()
        with inference_precision(config):
            images = umm.generate(
                prompts,
                generator=torch.Generator().manual_seed(config.seed * 1000 + round_index),
                output_type="np",
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
            ).images
            generated = time.perf_counter()
            rewards = self.reward_fn(umm, images, prompts)
        seconds = {"seconds_generate": generated - start, "seconds_reward": time.perf_counter() - generated}
        return prompts, images, rewards, seconds

    def training_set(self, prompts: list[str], images: np.ndarray, rewards: SelfRewards) -> SelfGeneratedDataset:
        """The round's samples on the model's generation grid (``umm.encode_samples``) with the reward maps
        (optionally group-baselined) resized onto that grid (:func:`resize_reward_maps`)."""
        weights = rewards.reward_maps
        if self.config.reward_baseline == "group":
            weights = group_baseline(weights, self.config.samples_per_prompt, self.config.reward_floor)
        samples = self.umm.encode_samples(images).detach().cpu().float()
        weights = resize_reward_maps(weights, tuple(samples.shape[2:]))
        return SelfGeneratedDataset(samples, self.umm.encode_prompts(prompts).cpu(), weights)

    def update(self, round_index: int, prompts: list[str], images: np.ndarray, rewards: SelfRewards) -> TrainResult:
        """Step 3: one Trainer over the round's samples; the model in memory ends as the exported one."""
        config, umm = self.config, self.umm
        dataset = self.training_set(prompts, images, rewards)
        set_trainable(umm.transformer, umm.generation_parameters() if config.train_parameters == "generation" else None)
        round_dir = Path(config.output_dir) / f"round-{round_index}"
        last = round_index == config.num_rounds
        round_config = dataclasses.replace(
            config,
            output_dir=str(round_dir),
            export_dir=str(config.pipeline_dir) if last else str(round_dir / "pipeline"),
            seed=config.seed + round_index,
        )
        objective = SRUMObjective(
            umm, config.constraint_weight, config.cfg_dropout, self.drop_prompt, config.update_guidance_scale
        )
        trainer = Trainer(umm.transformer, objective, dataset, round_config, export_fn=self.export_fn)
        result = trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # no autocast wrapper
        if trainer.ema is not None:  # what export() saved
            trainer.ema.copy_to(model.parameters())
        model.eval().requires_grad_(False)
        return result

    def run_round(self, round_index: int) -> dict:
        """Generate -> self-reward -> update; returns the round's logs (rewards, seconds per phase)."""
        prompts, images, rewards, seconds = self.self_generate(round_index)
        preview = slice(0, min(8, len(images)))
        save_image_grid(
            np.concatenate([images[preview], overlay_reward_maps(images[preview], rewards.reward_maps[preview])]),
            Path(self.config.output_dir) / f"round-{round_index}" / "samples_and_reward_maps.png",
            columns=len(images[preview]), row_labels=["sample", "reward"], column_labels=list(prompts[preview]),
            colorbar=REWARD_COLORBAR, title=f"round {round_index}: samples and self-rewards",
        )
        start = time.perf_counter()
        result = self.update(round_index, prompts, images, rewards)
        return {
            "round": round_index,
            "global_reward_mean": float(rewards.global_reward.mean()),
            "local_reward_mean": float(rewards.local_rewards.mean()),
            "reward_map_mean": float(rewards.reward_maps.mean()),
            "loss": result.final_loss,
            **seconds,
            "seconds_update": time.perf_counter() - start,
        }

    def train(self) -> TrainResult:
        self.history = [{"round": 0, **self.evaluate()}]
        for round_index in range(1, self.config.num_rounds + 1):
            self.history.append({**self.run_round(round_index), **self.evaluate()})
            write_history(self.history, Path(self.config.output_dir))
        return TrainResult(self.config.max_train_steps * self.config.num_rounds, self.config.pipeline_dir, self.history)


def write_history(history: list[dict], output_dir: Path) -> None:
    """``rounds.jsonl`` and, when the history holds ``accuracy_*`` metrics, ``accuracy_per_round.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "rounds.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))
    keys = sorted(key for key in history[0] if key.startswith("accuracy_") and not key.endswith("_se"))
    if keys:
        save_metric_curves(
            [{**record, "step": record["round"]} for record in history], keys, output_dir / "accuracy_per_round.png"
        )
