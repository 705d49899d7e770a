"""One offline SRUM round (the authors' protocol: generate and score once, then fine-tune) for a reward arm AND its
reward-blind control trained on the SAME samples (docs/srum.md, nineteenth pass): the base is judged once (round 0),
the round's samples and rewards are drawn once, exactly as ``selfgen train srum --num_rounds 1`` draws them, and each
arm fine-tunes a fresh copy of the base on them (the control's maps: :func:`~selfgen.train.srum.blind`, the mean of
the arm's maps, as ``--reward blind`` / ``oracle_blind`` build them). It saves one generation and one base evaluation
per pair; each arm's ``rounds.jsonl`` and exported pipeline are what the CLI run with that reward would write.
``SOURCE`` ``kept`` trains on the sampled latents instead of the re-encoded decoded images (a departure; see
:mod:`srum_sample_source`). The override ``map=global`` gives the arm the per-image map of the paper's global-only
ablation, ``0.5 (g + 1) / 2`` on every pixel (for ``oracle``: 0.5 on an accepted image, 0 on a rejected one), so no
region of an image weighs more than another. With ``reward_baseline=group`` the arm's maps are group-baselined
(:func:`~selfgen.train.srum.group_baseline`, with ``reward_floor=F`` its uniform floor) before the control takes
their mean. With ``samples=PATH`` the round's
prompts, images and sampled latents are saved to PATH, or, when PATH exists, loaded from it (refused if it was drawn
with other sampling settings) and scored by this run's reward, so that other arms train on the SAME samples without
drawing them again.

    OMP_NUM_THREADS=1 python benchmarks/srum_offline_pair.py configs/srum_shapes_latent_gentle.yaml <base> \
        oracle|both|global outputs/gentle/s0-oracle [SEED] [reencode|kept] [FIELD=VALUE ...]   # config overrides, YAML values
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

from accelerate.utils import set_seed

import numpy as np
import torch
import yaml

from selfgen import UnifiedPipeline
from selfgen.eval.plots import save_image_grid
from selfgen.eval.scenes import per_prompt_accuracy
from selfgen.train import unified
from selfgen.train.config import load_config
from selfgen.train.srum import (
    SelfGeneratedDataset, SRUMConfig, blind, group_baseline, resize_reward_maps, reward_maps, write_history,
)
from selfgen.train.srum_shapes import quadrant_slices, shapes_trainer
from srum_gradient_consistency import keeping_sampled_latents

CONTROLS = {"both": "blind", "global": "blind", "oracle": "oracle_blind"}  # the control: the mean of the arm's maps
SAMPLING = ("pretrained", "seed", "prompts_per_round", "samples_per_prompt", "num_inference_steps", "guidance_scale")


def load(config: SRUMConfig) -> UnifiedPipeline:
    umm = UnifiedPipeline.from_pretrained(config.pretrained)
    umm.set_progress_bar_config(disable=True)
    return umm


def validation(umm: UnifiedPipeline, config: SRUMConfig, path: Path) -> dict:
    """The loop's per-round judge accuracy (:func:`~selfgen.train.srum_shapes.compositional_accuracy`, same prompts,
    noise and sampler), also writing ``path``: each prompt's fraction of accepted images, for paired differences."""
    prompts = unified.heldout_prompts(config.eval_prompts_per_category, config.eval_seed, config.eval_split)
    scores, images, correct = unified.compositional_accuracy(
        umm, prompts, config.eval_seed, config.eval_samples_per_prompt,
        num_inference_steps=config.eval_num_inference_steps, guidance_scale=config.eval_guidance_scale,
    )
    k = config.eval_samples_per_prompt
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"per_prompt_accuracy": per_prompt_accuracy(correct, prompts, k)}, indent=1))
    shown = np.arange(0, len(prompts), max(1, len(prompts) // 8))[:8]  # prompts across the categories
    save_image_grid(images.reshape(len(prompts), k, *images.shape[1:])[shown].reshape(-1, *images.shape[1:]),
                    path.with_suffix(".png"), columns=k, row_labels=[prompts[i] for i in shown])
    return {f"accuracy_{key}": value for key, value in scores.items()}


def round_samples(trainer, cache: Path | None) -> tuple[list[str], np.ndarray, torch.Tensor, object, dict]:
    """The round's prompts, images, sampled latents, this run's rewards of them and the seconds taken: drawn once by
    ``trainer.self_generate(1)`` (saved to ``cache`` if given), or loaded from an existing ``cache`` and re-scored."""
    setting = {name: getattr(trainer.config, name) for name in SAMPLING}
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=True)  # torch's restricted loader: tensors, strings, numbers
        if saved["setting"] != setting:
            raise ValueError(f"{cache} was drawn with {saved['setting']}, this run samples with {setting}")
        start = time.perf_counter()
        images = saved["images"].numpy()
        rewards = trainer.reward_fn(trainer.umm, images, saved["prompts"])
        seconds = {"seconds_generate": 0.0, "seconds_reward": time.perf_counter() - start}
        return saved["prompts"], images, saved["latents"], rewards, seconds
    with keeping_sampled_latents() as sampled:
        prompts, images, rewards, seconds = trainer.self_generate(1)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        saved = {"setting": setting, "prompts": prompts, "images": torch.from_numpy(images), "latents": sampled.get("latents")}
        partial = cache.with_name(cache.name + ".partial")
        torch.save(saved, partial)
        partial.replace(cache)  # a killed run leaves no half-written cache behind
    return prompts, images, sampled.get("latents"), rewards, seconds


def main(
    config_path: str, base: str, reward: str, output_dir: str, seed: int = 0, source: str = "reencode", *overrides: str
) -> None:
    if reward not in CONTROLS or source not in ("kept", "reencode"):
        raise ValueError(f"reward must be one of {tuple(CONTROLS)} and source 'kept' or 'reencode', got {reward!r}, {source!r}")
    fields = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    map_mode = fields.pop("map", "paper")
    cache = Path(fields.pop("samples")) if "samples" in fields else None
    if map_mode not in ("paper", "global"):
        raise ValueError(f"map must be 'paper' or 'global', got {map_mode!r}")
    config = dataclasses.replace(
        load_config(SRUMConfig, config_path, fields),
        pretrained=base, reward=reward, seed=seed, num_rounds=1, output_dir=output_dir
    )
    set_seed(config.seed)
    trainer = shapes_trainer(load(config), config)
    start = time.perf_counter()
    round_zero = {"round": 0, **validation(trainer.umm, config, Path(output_dir, "validation-base.json"))}
    round_zero["seconds_evaluate"] = time.perf_counter() - start
    prompts, images, latents, rewards, seconds = round_samples(trainer, cache)
    if map_mode == "global":
        size = images.shape[1:3]
        maps = reward_maps(rewards.global_reward, rewards.local_rewards, rewards.occupancy, size, "global", quadrant_slices(*size))
        rewards = dataclasses.replace(rewards, reward_maps=maps)
    if config.reward_baseline == "group":  # baselined here, so that the blind control is the mean of the arm's weights
        maps = group_baseline(rewards.reward_maps, config.samples_per_prompt, config.reward_floor)
        rewards = dataclasses.replace(rewards, reward_maps=maps)
        config = dataclasses.replace(config, reward_baseline="none", reward_floor=0.0)
    arms = {reward: rewards, CONTROLS[reward]: dataclasses.replace(rewards, reward_maps=blind(rewards.reward_maps))}
    for arm, arm_rewards in arms.items():
        arm_config = dataclasses.replace(config, reward=arm, output_dir=str(Path(output_dir) / arm), export_dir=None)
        set_seed(config.seed)
        arm_trainer = shapes_trainer(load(config), arm_config)
        if source == "kept":
            def kept_training_set(prompts, images, rewards, umm=arm_trainer.umm):
                maps = resize_reward_maps(rewards.reward_maps, tuple(latents.shape[2:]))
                return SelfGeneratedDataset(latents, umm.encode_prompts(prompts).cpu(), maps)
            arm_trainer.training_set = kept_training_set
        start = time.perf_counter()
        result = arm_trainer.update(1, prompts, images, arm_rewards)
        record = {
            "round": 1,
            "global_reward_mean": float(arm_rewards.global_reward.mean()),
            "local_reward_mean": float(arm_rewards.local_rewards.mean()),
            "reward_map_mean": float(arm_rewards.reward_maps.mean()),
            "loss": result.final_loss,
            **seconds,
            "seconds_update": time.perf_counter() - start,
        }
        record.update(validation(arm_trainer.umm, config, Path(output_dir, f"validation-{arm}.json")))
        write_history([round_zero, record], Path(arm_config.output_dir))
        print(arm, json.dumps({k: v for k, v in record.items() if "pooled" in k or "seconds" in k}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5], *map(int, sys.argv[5:6]), *sys.argv[6:])
