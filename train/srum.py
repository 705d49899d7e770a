"""SRUM: fine-grained self-rewarding for unified multimodal models (Jin et al. 2025, arXiv:2510.12784).

The understanding path of a unified model judges what its generation path draws, and that judgement
(no human labels, no external reward model) steers a reward-weighted update of the generation path.
One round, repeated ``num_rounds`` times (``selfgen train srum --config configs/srum_shapes.yaml``):

1. sample prompts from the training split and **generate** ``x0 ~ p_theta(. | c)`` with the current model;
2. **self-reward** with the model's own (frozen) understanding:

   * global (layout / whole-prompt) reward ``g = 2 P(yes | x0, "does the image show {c}?") - 1`` in ``[-1, 1]``;
   * local (object-level) rewards per region ``r`` (the four quadrants):
     ``s_r = P(yes | "is there an object in the r?") * (2 max_o P(yes | "is there a {o} in the r?") - 1)``,
     ``o`` ranging over the prompt's objects: positive where a prompt object is drawn, negative where a
     wrong object is drawn, ~0 where nothing is;
   * the dense reward map, built as in the authors' code: neutral ``0.5`` everywhere, ``(s_r + 1) / 2`` on
     regions that hold an object, all scaled by the global factor: ``R(i, j) = M(i, j) (g + 1) / 2`` in ``[0, 1]``;

3. **update** only the generation parameters on the self-generated samples with the reward-weighted
   rectified-flow objective regularised toward the frozen reference (start) model:

   ``L = E_{sigma, eps} [ mean_ij R(i, j) (v_theta(x_sigma, sigma, c) - (eps - x0))^2_ij ]
        + lambda E [ mean_ij (v_theta(x_sigma, sigma, c) - v_ref(x_sigma, sigma, c))^2_ij ]``,
   ``x_sigma = (1 - sigma) x0 + sigma eps``;

   Optionally (``reward_baseline="group"``, ``samples_per_prompt=K``; not in the paper) ``R`` is replaced by
   its excess over the mean map of the same prompt's K samples, clipped at 0 (:func:`group_baseline`);

4. log the rewards, reward maps (PNG grids with the maps overlaid) and held-out accuracy of the
   independent rule-based judge (:mod:`selfgen.eval.scenes`).

Any unified model can be plugged in through :class:`SelfRewardingUMM` (``UnifiedPipeline`` implements it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from accelerate.utils import set_seed
from diffusers import ImagePipelineOutput
from torch import nn
from torch.utils.data import Dataset

from ..data.scenes import REGIONS, parse_prompt, question_in_region, sample_training_prompt
from ..eval.plots import save_image_grid, save_metric_curves
from ..eval.scenes import judge_image, paired_difference, ranking_auc, region_labels
from ..eval.statistics import standard_error
from ..pipelines.unified import UnifiedPipeline
from . import unified
from .config import TrainingConfig
from .registry import Method
from .trainer import Objective, TrainResult, Trainer

REWARD_MODES = ("both", "global", "local", "blind", "oracle")
BASELINES = ("none", "group")


class SelfRewardingUMM(Protocol):
    """What SRUM needs from a unified multimodal model (``UnifiedPipeline`` is one).

    A BAGEL-style adapter implements ``generate`` with its flow-matching sampler (images decoded from
    the VAE), ``yes_probability`` from the LLM's next-token logits of "yes"/"no" after the ViT tokens and
    the question, ``encode_prompts`` with its tokenizer, ``velocity(model, x, sigma, c)`` from the packed
    forward with the VAE latents as the generation tokens (the reward map is then resized to the latent
    grid, as the authors do), and ``generation_parameters`` = the MoT generation experts plus
    ``vae2llm``/``llm2vae``/time embedder; ``transformer`` is the module the Trainer wraps.
    """

    transformer: nn.Module

    def generate(
        self, prompts: list[str], *, generator: torch.Generator | None, output_type: str, **options
    ) -> ImagePipelineOutput: ...

    def yes_probability(self, images: np.ndarray, questions: list[str]) -> torch.Tensor: ...

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray: ...

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor: ...

    def velocity(
        self, model: nn.Module, sample: torch.Tensor, sigmas: torch.Tensor, prompt_ids: torch.Tensor
    ) -> torch.Tensor: ...

    def generation_parameters(self) -> list[nn.Parameter]: ...


@dataclass
class SRUMConfig(TrainingConfig):
    """``max_train_steps`` is the number of updates *per round*."""

    pretrained: str | None = "assets/unified-shapes"
    num_rounds: int = 3
    prompts_per_round: int = 128
    num_inference_steps: int = 16
    guidance_scale: float = 3.0
    reward: str = "both"  # "both" (global x local, the paper), "global", "local"; controls "blind", "oracle"
    constraint_weight: float = 1.0  # lambda of the regulariser toward the reference model
    cfg_dropout: float = 0.0  # prompt dropped to the empty prompt in the update (authors: text_cond_dropout_prob)
    samples_per_prompt: int = 1  # images generated per prompt (a group shares one baseline)
    reward_baseline: str = "none"  # "none" (the raw map, the paper) or "group" (see group_baseline)
    eval_prompts_per_category: int = 16
    eval_seed: int = 0
    eval_split: str = "heldout"  # "train" for tuning hyper-parameters; report on "heldout" only
    eval_samples_per_prompt: int = 1  # images judged per evaluation prompt (different noise), less noisy
    eval_train_prompts_per_category: int = 0  # > 0: also judge this many training prompts (train_accuracy_*)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {self.reward!r}")
        if self.reward_baseline not in BASELINES:
            raise ValueError(f"reward_baseline must be one of {BASELINES}, got {self.reward_baseline!r}")
        if self.eval_split not in ("train", "heldout"):
            raise ValueError(f"eval_split must be 'train' or 'heldout', got {self.eval_split!r}")
        if self.samples_per_prompt < 1 or self.eval_samples_per_prompt < 1:
            raise ValueError(
                f"samples_per_prompt and eval_samples_per_prompt must be >= 1, got {self.samples_per_prompt} "
                f"and {self.eval_samples_per_prompt}"
            )
        if not self.pretrained:
            raise ValueError("SRUM fine-tunes a pretrained unified model: set pretrained (e.g. assets/unified-shapes)")
        if self.num_rounds < 1 or self.prompts_per_round < 1:
            raise ValueError("num_rounds and prompts_per_round must be >= 1")


# ----------------------------------------------------------------------------- rewards


@dataclass
class SelfRewards:
    """``global_reward`` ``(N,)`` and ``local_rewards`` ``(N, 4)`` in ``[-1, 1]``;
    ``reward_maps`` ``(N, H, W)`` in ``[0, 1]``; ``occupancy`` ``(N, 4)``: the model's ``P(object in r)``."""

    global_reward: np.ndarray
    local_rewards: np.ndarray
    reward_maps: np.ndarray
    occupancy: np.ndarray


def region_slices(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """Pixel extent of each of :data:`~selfgen.data.scenes.REGIONS` (the four quadrants)."""
    top, left = slice(0, height // 2), slice(0, width // 2)
    bottom, right = slice(height // 2, height), slice(width // 2, width)
    return {
        "top-left": (top, left),
        "top-right": (top, right),
        "bottom-left": (bottom, left),
        "bottom-right": (bottom, right),
    }


def local_rewards(umm: SelfRewardingUMM, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-region object-level scores ``s_r`` ``(N, 4)`` and the model's ``P(object in r)`` ``(N, 4)``."""
    occupied = np.zeros((len(images), len(REGIONS)), dtype=np.float32)
    matched = np.zeros_like(occupied)
    for index, region in enumerate(REGIONS):
        occupied[:, index] = umm.yes_probability(images, [question_in_region(None, region)] * len(images)).cpu().numpy()
        nouns = [[obj.noun for obj in parse_prompt(prompt).objects] for prompt in prompts]
        for slot in range(max(len(item) for item in nouns)):
            questions = [question_in_region(item[min(slot, len(item) - 1)], region) for item in nouns]
            probability = umm.yes_probability(images, questions).cpu().numpy()
            matched[:, index] = np.maximum(matched[:, index], probability)
    return occupied * (2 * matched - 1), occupied


def reward_maps(
    global_reward: np.ndarray, scores: np.ndarray, occupied: np.ndarray, size: tuple[int, int], mode: str
) -> np.ndarray:
    """``R = M (g + 1) / 2`` with ``M = 0.5`` except ``(s_r + 1) / 2`` on occupied regions (see the module docstring).

    ``mode="global"`` keeps ``M = 0.5`` (no local term); ``mode="local"`` drops the global factor;
    ``mode="blind"`` (a control, not in the paper) gives every pixel of every sample the mean of the
    ``"both"`` maps: the same update size with no information from the rewards."""
    height, width = size
    maps = np.full((len(global_reward), height, width), 0.5, dtype=np.float32)
    if mode != "global":
        slices = region_slices(height, width)
        for index, region in enumerate(REGIONS):
            rows, cols = slices[region]
            regional = np.where(occupied[:, index] > 0.5, (scores[:, index] + 1) / 2, 0.5)
            maps[:, rows, cols] = regional[:, None, None]
    if mode != "local":
        maps *= ((global_reward + 1) / 2)[:, None, None]
    return np.full_like(maps, maps.mean()) if mode == "blind" else maps


def oracle_rewards(images: np.ndarray, prompts: list[str]) -> SelfRewards:
    """The ``"both"`` reward map built from the rule-based judge instead of the model's own answers (a
    diagnostic upper bound, not SRUM: it uses an external judge): ``g = +1`` if :func:`judge_image` accepts
    the image else ``-1``; ``s_r = +1`` on a quadrant whose detected objects are all the prompt's, ``-1``
    on one holding another object, ``0`` on an empty one; occupancy from the detector."""
    global_reward = np.array([1.0 if judge_image(image, prompt) else -1.0 for image, prompt in zip(images, prompts)])
    occupied, right = map(np.stack, zip(*(region_labels(image, prompt) for image, prompt in zip(images, prompts))))
    scores = np.where(right, 1.0, -1.0) * occupied
    maps = reward_maps(global_reward, scores, occupied.astype(np.float32), images.shape[1:3], "both")
    return SelfRewards(global_reward.astype(np.float32), scores.astype(np.float32), maps, occupied.astype(np.float32))


def self_rewards(umm: SelfRewardingUMM, images: np.ndarray, prompts: list[str], mode: str = "both") -> SelfRewards:
    """Global + local self-rewards and dense reward maps of ``images`` ``(N, H, W, 3)`` in ``[0, 1]``
    (``mode="oracle"``: :func:`oracle_rewards`, the control that replaces the self-judge by the rule-based one)."""
    if mode not in REWARD_MODES:
        raise ValueError(f"mode must be one of {REWARD_MODES}, got {mode!r}")
    if mode == "oracle":
        return oracle_rewards(images, prompts)
    global_reward = np.asarray(umm.score(images, prompts), dtype=np.float32)
    scores, occupied = local_rewards(umm, images, prompts)
    maps = reward_maps(global_reward, scores, occupied, images.shape[1:3], mode)
    return SelfRewards(global_reward, scores, maps, occupied)


def group_baseline(maps: np.ndarray, group_size: int) -> np.ndarray:
    """Weights relative to a per-prompt baseline: ``w = max(R - mean_group(R), 0)``, pixel by pixel over the
    ``group_size`` consecutive samples of one prompt, rescaled so that ``mean(w) = mean(R)`` (the loss keeps
    the raw map's scale, so ``constraint_weight`` means the same). Samples (regions) the model's own judge
    finds better than its average for that prompt are imitated; the rest get weight 0."""
    if len(maps) % group_size:
        raise ValueError(f"{len(maps)} reward maps do not split into groups of samples_per_prompt={group_size}")
    grouped = maps.reshape(-1, group_size, *maps.shape[1:])
    weights = np.maximum(grouped - grouped.mean(axis=1, keepdims=True), 0).reshape(maps.shape)
    total = weights.mean()
    return (weights * (maps.mean() / total) if total > 0 else np.zeros_like(maps)).astype(np.float32)


def overlay_reward_maps(images: np.ndarray, maps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend each reward map (red = 0, green = 1) over its image: ``(N, H, W, 3)`` in ``[0, 1]``."""
    heat = np.stack([1 - maps, maps, np.zeros_like(maps)], axis=-1)
    return (1 - alpha) * images + alpha * heat


def self_judge_agreement(
    umm: SelfRewardingUMM,
    num_prompts: int = 64,
    samples_per_prompt: int = 4,
    seed: int = 0,
    num_inference_steps: int = 16,
    guidance_scale: float = 3.0,
    split: str = "train",
) -> dict[str, float]:
    """How well the model's own rewards rank its own samples, measured against the rule-based judge.

    Draws ``num_prompts`` prompts of ``split``, ``samples_per_prompt`` images each, and returns the judge's
    accuracy, the AUC of each self-reward (global ``g``, reward-map mean, sum of local ``s_r``) for
    telling judge-correct from judge-wrong samples (0.5 = chance), the judge accuracy of the
    top-1 sample of each prompt under that reward (best-of-K selection by the model itself) and its gain over
    a random pick of the same prompt's samples with the standard error over prompts (``top1_gain_*``,
    ``top1_gain_*_se``: 0 means the judge cannot rank its own samples; ``top1_gain_oracle`` is the same for
    a perfect judge, the headroom of best-of-K selection), the
    accuracy of the model's own yes/no answers on its own images (``answer_accuracy_whole_prompt``: "does
    the image show {prompt}?" against the judge; ``answer_accuracy_occupancy``: "is there an object in the
    {r}?" against the detector), and, per quadrant (:func:`~selfgen.eval.scenes.region_labels`), the
    AUC of ``P(object in r)`` for the detector's occupancy (``auc_occupancy``) and of ``s_r`` for "the
    objects there are the prompt's" among occupied quadrants (``auc_local_region``).
    """
    rng = random.Random(f"agreement-{seed}")
    prompts = [sample_training_prompt(rng, split) for _ in range(num_prompts)]
    prompts = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    with torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16):
        images = umm.generate(
            prompts,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
        ).images
        rewards = self_rewards(umm, images, prompts)
    correct = np.array([judge_image(image, prompt) for image, prompt in zip(images, prompts)])
    results = {"judge_accuracy": float(correct.mean())}
    candidates = {
        "global": rewards.global_reward,
        "map_mean": rewards.reward_maps.mean(axis=(1, 2)),
        "local_sum": rewards.local_rewards.sum(axis=1),
    }
    grouped = correct.reshape(-1, samples_per_prompt)
    for name, values in candidates.items():
        results[f"auc_{name}"] = ranking_auc(values, correct)
        best = values.reshape(-1, samples_per_prompt).argmax(axis=1)
        top1 = grouped[np.arange(len(best)), best]
        gain = top1 - grouped.mean(axis=1)
        results[f"top1_accuracy_{name}"] = float(top1.mean())
        results[f"top1_gain_{name}"] = float(gain.mean())
        results[f"top1_gain_{name}_se"] = standard_error(gain)
    oracle_gain = grouped.max(axis=1) - grouped.mean(axis=1)
    results["top1_gain_oracle"] = float(oracle_gain.mean())
    results["top1_gain_oracle_se"] = standard_error(oracle_gain)
    occupied, right = map(np.stack, zip(*(region_labels(image, prompt) for image, prompt in zip(images, prompts))))
    results["answer_accuracy_whole_prompt"] = float(((rewards.global_reward > 0) == correct).mean())
    results["answer_accuracy_occupancy"] = float(((rewards.occupancy > 0.5) == occupied).mean())
    results["auc_occupancy"] = ranking_auc(rewards.occupancy.ravel(), occupied.ravel())
    results["auc_local_region"] = ranking_auc(rewards.local_rewards[occupied], right[occupied])
    return results


# ----------------------------------------------------------------------------- objective


class SelfGeneratedDataset(Dataset):
    """One round's self-generated samples with their prompts and reward maps."""

    def __init__(self, images: torch.Tensor, prompt_ids: torch.Tensor, maps: np.ndarray) -> None:
        if not len(images) == len(prompt_ids) == len(maps):
            raise ValueError(f"got {len(images)} images, {len(prompt_ids)} prompts and {len(maps)} reward maps")
        self.images, self.prompt_ids = images, prompt_ids
        self.maps = torch.from_numpy(maps)[:, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {
            "pixel_values": self.images[index],
            "prompt_ids": self.prompt_ids[index],
            "reward_map": self.maps[index],
        }


class SRUMObjective(Objective):
    """Reward-weighted rectified flow on self-samples + ``lambda`` * velocity match to the reference model.

    ``L = mean[R * (v_theta - (eps - x0))^2] + lambda * mean[(v_theta - v_ref)^2]`` at the same ``x_sigma``.
    """

    def __init__(
        self, umm: SelfRewardingUMM, reference: nn.Module, constraint_weight: float, cfg_dropout: float = 0.0
    ) -> None:
        self.umm, self.reference, self.constraint_weight = umm, reference, constraint_weight
        self.cfg_dropout = cfg_dropout

    def setup(self, accelerator) -> None:
        self.reference.to(accelerator.device).eval().requires_grad_(False)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images, prompt_ids, maps = batch["pixel_values"], batch["prompt_ids"], batch["reward_map"]
        if self.cfg_dropout > 0:  # keep training the unconditional branch that guidance relies on
            drop = torch.rand(images.shape[0], device=images.device) < self.cfg_dropout
            prompt_ids = torch.where(drop[:, None], unified.empty_prompt_like(prompt_ids), prompt_ids)
        noisy, sigmas, target = unified.noisy_pair(images)
        velocity = self.umm.velocity(model, noisy, sigmas, prompt_ids).float()
        with torch.no_grad():
            reference = self.umm.velocity(self.reference, noisy, sigmas, prompt_ids).float()
        reward_term = (maps * (velocity - target) ** 2).mean()
        constraint = ((velocity - reference) ** 2).mean()
        loss = reward_term + self.constraint_weight * constraint
        return loss, {"loss_reward": reward_term.item(), "loss_constraint": constraint.item()}


# ----------------------------------------------------------------------------- the loop


def freeze_understanding(model: nn.Module, generation_parameters: list[nn.Parameter]) -> None:
    """Only the generation path stays trainable."""
    trainable = {id(param) for param in generation_parameters}
    for param in model.parameters():
        param.requires_grad_(id(param) in trainable)


def generate_round(umm: SelfRewardingUMM, prompts: list[str], config: SRUMConfig, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return umm.generate(
        prompts,
        generator=generator,
        output_type="np",
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
    ).images


def inference_precision(config: SRUMConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast for generation and self-rewarding when the run trains in bf16, else nothing."""
    if config.mixed_precision == "bf16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SRUMTrainer:
    """The SRUM loop on the shared :class:`~selfgen.train.trainer.Trainer`: one Trainer per round over
    that round's self-generated, self-rewarded samples (see the module docstring for the equations).

    Args:
        umm: the unified model (a :class:`SelfRewardingUMM`; its ``transformer`` is trained).
        config: the :class:`SRUMConfig`.

    ``train()`` evaluates the start model, runs ``config.num_rounds`` rounds, evaluates after each and
    returns a ``TrainResult`` whose ``history`` has one record per round (round 0 = the start model).
    """

    def __init__(self, umm: SelfRewardingUMM, config: SRUMConfig) -> None:
        self.umm, self.config = umm, config
        self.reference = copy.deepcopy(umm.transformer)  # the frozen start model of the regulariser
        self.history: list[dict] = []

    def evaluate(self) -> dict[str, float]:
        """Compositional accuracy of the current model by the rule-based scene judge: ``accuracy_*`` on
        ``eval_split`` prompts and, when ``eval_train_prompts_per_category > 0``, ``train_accuracy_*`` on
        training prompts (same sampler, same noise every round; bf16 when the run trains in bf16)."""
        config = self.config
        splits = {"accuracy": (config.eval_split, config.eval_prompts_per_category)}
        if config.eval_train_prompts_per_category:
            splits["train_accuracy"] = ("train", config.eval_train_prompts_per_category)
        results = {}
        for prefix, (split, per_category) in splits.items():
            prompts = unified.heldout_prompts(per_category, config.eval_seed, split)
            with inference_precision(config):
                scores, _ = unified.compositional_accuracy(
                    self.umm,
                    prompts,
                    config.eval_seed,
                    config.eval_samples_per_prompt,
                    num_inference_steps=config.num_inference_steps,
                    guidance_scale=config.guidance_scale,
                )
            results.update({f"{prefix}_{key}": value for key, value in scores.items()})
        return results

    def run_round(self, round_index: int) -> dict:
        """Generate -> self-reward -> update; reloads the exported weights and returns the round's logs
        (reward statistics and the seconds spent in each phase)."""
        config, umm = self.config, self.umm
        round_dir = Path(config.output_dir) / f"round-{round_index}"
        rng = random.Random(f"{config.seed}-round-{round_index}")
        prompts = [sample_training_prompt(rng) for _ in range(config.prompts_per_round)]
        prompts = [prompt for prompt in prompts for _ in range(config.samples_per_prompt)]
        start = time.perf_counter()
        with inference_precision(config):
            images = generate_round(umm, prompts, config, seed=config.seed * 1000 + round_index)
            generated = time.perf_counter()
            rewards = self_rewards(umm, images, prompts, config.reward)
        rewarded = time.perf_counter()
        preview = slice(0, min(8, len(images)))
        save_image_grid(
            np.concatenate([images[preview], overlay_reward_maps(images[preview], rewards.reward_maps[preview])]),
            round_dir / "samples_and_reward_maps.png",
        )
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()) * 2 - 1
        weights = rewards.reward_maps
        if config.reward_baseline == "group":
            weights = group_baseline(weights, config.samples_per_prompt)
        dataset = SelfGeneratedDataset(pixels, umm.encode_prompts(prompts).cpu(), weights)
        freeze_understanding(umm.transformer, umm.generation_parameters())
        round_config = dataclasses.replace(
            config,
            output_dir=str(round_dir),
            export_dir=str(config.pipeline_dir) if round_index == config.num_rounds else str(round_dir / "pipeline"),
            seed=config.seed + round_index,
        )
        objective = SRUMObjective(umm, self.reference, config.constraint_weight, config.cfg_dropout)
        result = Trainer(umm.transformer, objective, dataset, round_config, export_fn=unified.export_pipeline).train()
        updated = time.perf_counter()
        self.umm = type(umm).from_pretrained(result.pipeline_dir)  # the exported weights, free of training wrappers
        self.umm.set_progress_bar_config(disable=True)
        return {
            "round": round_index,
            "global_reward_mean": float(rewards.global_reward.mean()),
            "local_reward_mean": float(rewards.local_rewards.mean()),
            "reward_map_mean": float(rewards.reward_maps.mean()),
            "loss": result.final_loss,
            "seconds_generate": generated - start,
            "seconds_reward": rewarded - generated,
            "seconds_update": updated - rewarded,
        }

    def train(self) -> TrainResult:
        self.history = [{"round": 0, **self.evaluate()}]
        for round_index in range(1, self.config.num_rounds + 1):
            self.history.append({**self.run_round(round_index), **self.evaluate()})
            write_history(self.history, Path(self.config.output_dir))
        return TrainResult(self.config.max_train_steps * self.config.num_rounds, self.config.pipeline_dir, self.history)


def train(config: SRUMConfig) -> TrainResult:
    set_seed(config.seed)
    if not Path(config.pretrained, "model_index.json").is_file():
        raise FileNotFoundError(
            f"pretrained={config.pretrained!r} is not a UnifiedPipeline folder (no model_index.json)"
        )
    umm = UnifiedPipeline.from_pretrained(config.pretrained)
    umm.set_progress_bar_config(disable=True)
    return SRUMTrainer(umm, config).train()


def write_history(history: list[dict], output_dir: Path) -> None:
    """``rounds.jsonl`` and ``accuracy_per_round.png`` (held-out judge accuracy per category vs round)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "rounds.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))
    keys = sorted(key for key in history[0] if key.startswith("accuracy_") and not key.endswith("_se"))
    save_metric_curves(
        [{**record, "step": record["round"]} for record in history], keys, output_dir / "accuracy_per_round.png"
    )


def evaluate(
    model_path: str,
    output_dir: Path,
    prompts_per_category: int = 16,
    samples_per_prompt: int = 8,
    split: str = "heldout",
    agreement_prompts: int = 64,
    seed: int = 0,
    baseline: str | None = None,
) -> dict:
    """SRUM's report for one checkpoint: :func:`selfgen.train.unified.evaluate` (judge accuracy on ``split``
    prompts with its standard error, understanding accuracy on rendered scenes) at the loop's sampler
    settings (16 Euler steps, guidance 3), plus :func:`self_judge_agreement` on ``agreement_prompts``
    prompts of the same split x 4 samples (0 skips it). ``baseline``: the ``metrics.json`` of another
    model evaluated with the same options; adds ``paired_vs_baseline`` (this model minus it, per prompt,
    with its standard error, :func:`~selfgen.eval.scenes.paired_difference`)."""
    options = {"num_inference_steps": 16, "guidance_scale": 3.0}
    metrics = unified.evaluate(
        model_path,
        output_dir,
        prompts_per_category,
        samples_per_prompt=samples_per_prompt,
        split=split,
        seed=seed,
        **options,
    )
    if baseline:
        if not Path(baseline).is_file():
            raise FileNotFoundError(f"baseline={baseline!r}: expected the metrics.json of a 'selfgen eval srum' run")
        reference = json.loads(Path(baseline).read_text())["per_prompt_accuracy"]
        difference, difference_se = paired_difference(reference, metrics["per_prompt_accuracy"])
        metrics["paired_vs_baseline"] = {"baseline": baseline, "difference": difference, "se": difference_se}
    if agreement_prompts:
        umm = UnifiedPipeline.from_pretrained(model_path)
        umm.set_progress_bar_config(disable=True)
        metrics["self_judge_agreement"] = self_judge_agreement(umm, agreement_prompts, 4, seed, split=split, **options)
    return metrics


def demo(asset_dir: Path, output_dir: Path) -> dict:
    """Held-out prompts through the SRUM-tuned model (judged), plus its own reward maps on them."""
    metrics = unified.evaluate(str(asset_dir), output_dir, prompts_per_category=8, num_scenes=60)
    umm = UnifiedPipeline.from_pretrained(asset_dir)
    prompts = unified.heldout_prompts(1)
    images = umm.generate(prompts, generator=torch.Generator().manual_seed(0), output_type="np").images
    rewards = self_rewards(umm, images, prompts)
    save_image_grid(
        np.concatenate([images, overlay_reward_maps(images, rewards.reward_maps)]),
        output_dir / "reward_maps.png",
        columns=len(images),
    )
    metrics["self_global_reward_mean"] = float(rewards.global_reward.mean())
    return metrics


METHOD = Method(
    name="srum",
    summary="SRUM: a unified model rewards its own generations with its own understanding (global + local rewards)",
    config_class=SRUMConfig,
    train=train,
    generate=unified.generate,
    evaluate=evaluate,
    demo=demo,
    demo_asset="unified-shapes-srum",
)
