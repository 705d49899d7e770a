"""The SRUM loop with its training samples drawn differently from its evaluation (docs/srum.md, eighteenth pass,
lead): the round's samples at guidance ``W`` and ``STEPS`` Euler steps, the loss's ``x0`` either the decoded images
re-encoded by the frozen autoencoder (``reencode``, what the loop and the authors do) or the sampled latents kept
(``kept``); validation after each round at the config's own settings (16 steps, guidance 3). ``constraint_weight``
0 (the reward-weighted term alone). A diagnostic, not a library option: it wraps the pipeline's ``generate`` and
the loop's ``training_set`` (see :mod:`srum_gradient_consistency` for why these settings matter).

    OMP_NUM_THREADS=1 python benchmarks/srum_sample_source.py <judged latent UnifiedPipeline> oracle|oracle_blind \
        outputs/w1s64kept-oracle-s0 1 64 kept [SEED]   # ~12 min a round on the loaded 2-core machine; SEED: loop seed, 0
"""
import dataclasses
import sys

from accelerate.utils import set_seed

from selfgen import UnifiedPipeline
from selfgen.train.config import load_config
from selfgen.train.srum import SelfGeneratedDataset, SRUMConfig, resize_reward_maps
from selfgen.train.srum_shapes import shapes_trainer
from srum_gradient_consistency import keeping_sampled_latents


def main(base: str, reward: str, output_dir: str, guidance: float, steps: int, source: str, seed: int = 0) -> None:
    if source not in ("kept", "reencode"):
        raise ValueError(f"source must be 'kept' or 'reencode', got {source!r}")
    config = load_config(SRUMConfig, "configs/srum_shapes_latent_gate.yaml")
    config = dataclasses.replace(config, pretrained=base, reward=reward, output_dir=output_dir, constraint_weight=0.0, seed=seed)
    set_seed(config.seed)
    umm = UnifiedPipeline.from_pretrained(base)
    umm.set_progress_bar_config(disable=True)
    trainer = shapes_trainer(umm, config)
    generate = umm.generate

    def round_generate(prompts, **options):
        if len(prompts) == config.prompts_per_round * config.samples_per_prompt:  # the round's samples, not evaluation
            options.update(guidance_scale=guidance, num_inference_steps=steps)
        return generate(prompts, **options)

    def kept_training_set(prompts, images, rewards):
        samples = sampled["latents"]
        maps = resize_reward_maps(rewards.reward_maps, tuple(samples.shape[2:]))
        return SelfGeneratedDataset(samples, umm.encode_prompts(prompts).cpu(), maps)

    umm.generate = round_generate
    with keeping_sampled_latents() as sampled:
        if source == "kept":
            trainer.training_set = kept_training_set
        trainer.train()


if __name__ == "__main__":
    main(*sys.argv[1:4], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], *map(int, sys.argv[7:8]))
