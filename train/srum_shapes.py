"""SRUM on the bundled shapes world: the prompts, self-reward questions and judge that :mod:`selfgen.train.srum`'s
world-agnostic loop is given (``selfgen train srum --config configs/srum_shapes.yaml``).

Self-rewards of a :class:`~selfgen.pipelines.unified.UnifiedPipeline` on its own images (its understanding
path answers, nothing external):

* global (layout / whole-prompt) reward ``g = 2 P(yes | x0, "does the image show {c}?") - 1`` in ``[-1, 1]``
  (the authors ask the VLM for a global layout score in ``[-1, 1]``);
* local (object-level) rewards per quadrant ``r``
  ``s_r = P(yes | "is there an object in the r?") * (2 max_o P(yes | "is there a {o} in the r?") - 1)``,
  ``o`` over the prompt's objects: positive where a prompt object is drawn, negative where a wrong object
  is drawn; quadrants beyond the prompt's object count that hold an object score ``-P(object in r)``
  (:func:`~selfgen.train.srum.penalise_clutter`): regions that should be empty cost reward (the authors
  ask the VLM for a ``[-1, 1]`` score per detected box, which a spurious box gets negative).

The oracle control replaces these answers by the rule-based judge (:mod:`selfgen.eval.scenes`), and the
same judge measures held-out compositional accuracy after every round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import random
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from ..data.scenes import REGIONS, parse_prompt, question_in_region, sample_training_prompt
from ..eval.plots import save_image_grid
from ..eval.scenes import judge_image, paired_difference, ranking_auc, region_labels
from ..eval.statistics import bootstrap_interval, standard_error
from ..pipelines.unified import UnifiedPipeline
from . import unified
from .registry import Method
from .srum import (
    REWARD_COLORBAR,
    REWARD_MODES,
    SelfRewards,
    SRUMConfig,
    SRUMTrainer,
    blind,
    overlay_reward_maps,
    penalise_clutter,
    reward_maps,
)
from .trainer import TrainResult


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


def quadrant_slices(height: int, width: int) -> list[tuple[slice, slice]]:
    """The shapes world's reward-map layout for :func:`~selfgen.train.srum.reward_maps`: the quadrants' pixel
    extents in the order of :data:`~selfgen.data.scenes.REGIONS` (the columns of the local rewards)."""
    slices = region_slices(height, width)
    return [slices[region] for region in REGIONS]


def expected_objects(prompts: list[str]) -> np.ndarray:
    """How many objects each prompt asks for (``two red circles and a blue square`` -> 3)."""
    return np.array([sum(obj.count for obj in parse_prompt(prompt).objects) for prompt in prompts])


def local_rewards(umm: UnifiedPipeline, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-quadrant object-level scores ``s_r`` ``(N, 4)`` (clutter penalised) and the model's ``P(object in r)``."""
    occupied = np.zeros((len(images), len(REGIONS)), dtype=np.float32)
    matched = np.zeros_like(occupied)
    nouns = [[obj.noun for obj in parse_prompt(prompt).objects] for prompt in prompts]
    for index, region in enumerate(REGIONS):
        occupied[:, index] = umm.yes_probability(images, [question_in_region(None, region)] * len(images)).cpu().numpy()
        for slot in range(max(len(item) for item in nouns)):
            questions = [question_in_region(item[min(slot, len(item) - 1)], region) for item in nouns]
            probability = umm.yes_probability(images, questions).cpu().numpy()
            matched[:, index] = np.maximum(matched[:, index], probability)
    return penalise_clutter(occupied * (2 * matched - 1), occupied, expected_objects(prompts)), occupied


def oracle_rewards(images: np.ndarray, prompts: list[str]) -> SelfRewards:
    """The ``"both"`` reward map built from the rule-based judge instead of the model's own answers (the gate
    that proves the update can move the model; not SRUM: it uses an external judge): ``g = +1`` if
    :func:`judge_image` accepts the image else ``-1``; ``s_r = +1`` on a quadrant whose detected objects are
    all the prompt's, ``-1`` on one holding another object, ``0`` on an empty one, clutter penalised as in
    the self-reward; occupancy from the detector."""
    global_reward = np.array([1.0 if judge_image(image, prompt) else -1.0 for image, prompt in zip(images, prompts)])
    occupied, right = map(np.stack, zip(*(region_labels(image, prompt) for image, prompt in zip(images, prompts))))
    occupied = occupied.astype(np.float32)
    scores = penalise_clutter(np.where(right, 1.0, -1.0) * occupied, occupied, expected_objects(prompts))
    maps = reward_maps(global_reward, scores, occupied, images.shape[1:3], "both", quadrant_slices(*images.shape[1:3]))
    return SelfRewards(global_reward.astype(np.float32), scores.astype(np.float32), maps, occupied)


def self_rewards(umm: UnifiedPipeline, images: np.ndarray, prompts: list[str], mode: str = "both") -> SelfRewards:
    """Global + local self-rewards and dense reward maps of ``images`` ``(N, H, W, 3)`` in ``[0, 1]``
    (``mode="oracle"``: :func:`oracle_rewards`, the control that replaces the self-judge by the rule-based one;
    ``mode="oracle_blind"``: the oracle's maps made reward-blind, :func:`~selfgen.train.srum.blind`, the matched
    control of gate (a), which needs no judge of the model's own)."""
    if mode not in REWARD_MODES:
        raise ValueError(f"mode must be one of {REWARD_MODES}, got {mode!r}")
    if mode in ("oracle", "oracle_blind"):
        rewards = oracle_rewards(images, prompts)
        return dataclasses.replace(rewards, reward_maps=blind(rewards.reward_maps)) if mode == "oracle_blind" else rewards
    global_reward = np.asarray(umm.score(images, prompts), dtype=np.float32)
    scores, occupied = local_rewards(umm, images, prompts)
    maps = reward_maps(global_reward, scores, occupied, images.shape[1:3], mode, quadrant_slices(*images.shape[1:3]))
    return SelfRewards(global_reward, scores, maps, occupied)


def self_judge_agreement(
    umm: UnifiedPipeline,
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
    telling judge-correct from judge-wrong samples (0.5 = chance; ``auc_*_low``/``_high``: a 95% bootstrap
    interval over prompts), the judge accuracy of the
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
    with torch.autocast("cuda", dtype=torch.bfloat16) if torch.cuda.is_available() else contextlib.nullcontext():
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
        rows = np.concatenate([values.reshape(grouped.shape), grouped], axis=1)  # one row per prompt

        def auc(rows: np.ndarray) -> float:
            return ranking_auc(rows[:, :samples_per_prompt].ravel(), rows[:, samples_per_prompt:].ravel() > 0)

        results[f"auc_{name}_low"], results[f"auc_{name}_high"] = bootstrap_interval(auc, rows, num_resamples=500)
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


def compositional_accuracy(umm: UnifiedPipeline, config: SRUMConfig) -> dict[str, float]:
    """Compositional accuracy of the current model by the rule-based scene judge: ``accuracy_*`` on
    ``eval_split`` prompts and, when ``eval_train_prompts_per_category > 0``, ``train_accuracy_*`` on
    training prompts (same sampler, same noise every round)."""
    splits = {"accuracy": (config.eval_split, config.eval_prompts_per_category)}
    if config.eval_train_prompts_per_category:
        splits["train_accuracy"] = ("train", config.eval_train_prompts_per_category)
    results = {}
    for prefix, (split, per_category) in splits.items():
        prompts = unified.heldout_prompts(per_category, config.eval_seed, split)
        scores, _, _ = unified.compositional_accuracy(
            umm,
            prompts,
            config.eval_seed,
            config.eval_samples_per_prompt,
            num_inference_steps=config.eval_num_inference_steps,
            guidance_scale=config.eval_guidance_scale,
        )
        results.update({f"{prefix}_{key}": value for key, value in scores.items()})
    return results


def shapes_trainer(umm: UnifiedPipeline, config: SRUMConfig) -> SRUMTrainer:
    """The SRUM loop wired to the shapes world: training-split prompts, :func:`self_rewards` in
    ``config.reward`` mode, the unified pipeline's export (with its frozen ``vae`` when it generates latents) and
    the judge's accuracy after every round. A latent pipeline needs nothing else: the rewards are computed on its
    decoded images, and ``umm.encode_samples`` gives the loop the latents the loss runs on."""
    return SRUMTrainer(
        umm,
        config,
        sample_prompt=sample_training_prompt,
        reward_fn=functools.partial(self_rewards, mode=config.reward),
        export_fn=functools.partial(unified.export_pipeline, vae=umm.vae),
        evaluate_fn=functools.partial(compositional_accuracy, config=config),
        drop_prompt=unified.empty_prompt_like,
    )


def train(config: SRUMConfig) -> TrainResult:
    set_seed(config.seed)
    if not config.pretrained or not Path(config.pretrained, "model_index.json").is_file():
        raise FileNotFoundError(
            f"pretrained={config.pretrained!r} is not a UnifiedPipeline folder (no model_index.json)"
        )
    umm = UnifiedPipeline.from_pretrained(config.pretrained)
    umm.set_progress_bar_config(disable=True)
    return shapes_trainer(umm, config).train()


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
        row_labels=["sample", "reward"],
        column_labels=prompts,
        colorbar=REWARD_COLORBAR,
        title="SRUM model: held-out prompts and its own reward maps (seed 0)",
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
