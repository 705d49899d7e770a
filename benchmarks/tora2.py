"""Tora2 speed: training step and 8-frame generation, fp32 vs bf16, sdpa vs math, and the cost of customisation.

    python benchmarks/tora2.py [--batch 8] [--steps 10] [--repeats 3]

All rows use the architecture of ``configs/tora2_sprites.yaml`` with fresh (seeded) weights on the same
sprite batch, one after another in one process; each timing is the mean of ``repeats`` runs after a
warm-up. Rows: seconds per training step (forward + backward + AdamW) and per ``--steps``-step generation
of one batch, for fp32 and bf16 autocast, with the ``sdpa`` and ``math`` attention backends; then
video tokens per second of a training step for ``tora2`` / ``no_gate`` / ``tora1`` against the same-size DiT
with neither the trajectory nor the appearance path (``mode="dit"``): the ratio is the overhead.
Nothing is exported (no write under ``assets/``).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils import benchmark

from selfgen.data.sprites import SpriteVideoDataset, caption_tokenizer
from selfgen.train.config import load_config
from selfgen.train.tora import Collate, Tora2Config, Tora2Objective, build_model, build_pipeline

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tora2_sprites.yaml"
TOKENIZER = caption_tokenizer()


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def mean_seconds(function, repeats: int) -> float:
    """Mean seconds of ``repeats`` calls after one warm-up call (``torch.utils.benchmark``)."""
    function()
    return benchmark.Timer("function()", globals={"function": function}).timeit(repeats).median


def make(config: Tora2Config, mode: str, backend: str):
    torch.manual_seed(0)
    model = build_model(Tora2Config(**{**vars(config), "mode": mode}), TOKENIZER)
    model.set_attention_backend(backend)
    return model


def train_step_seconds(config: Tora2Config, items: list, mode: str, precision: str, backend: str, repeats: int) -> float:
    model = make(config, mode, backend)
    batch = Collate(model.config, TOKENIZER)(items)
    weight = config.contrastive_weight if mode in ("tora2", "no_gate") else 0.0
    objective = Tora2Objective(weight, config.contrastive_temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with autocast(precision):
            loss, _ = objective.compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return mean_seconds(step, repeats)


def generation_seconds(config: Tora2Config, items: list, precision: str, backend: str, steps: int, repeats: int) -> float:
    pipe = build_pipeline(make(config, "tora2", backend).eval(), TOKENIZER)
    pipe.set_progress_bar_config(disable=True)

    def generate() -> None:
        with autocast(precision):
            pipe(
                prompt=[item["prompt"] for item in items],
                entities=[item["entities"] for item in items],
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
            )

    return mean_seconds(generate, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="Euler steps per generation")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(Tora2Config, CONFIG)
    items = list(SpriteVideoDataset(args.batch, seed=0))
    print(f"Tora2 ({CONFIG.name} architecture), batch {args.batch}, mean of {args.repeats} after a warm-up")
    print(f"{'work':<28} {'backend':<8} {'fp32 s':>8} {'bf16 s':>8} {'fp32/bf16':>10}")
    for backend in ("sdpa", "math"):
        fp32, bf16 = (train_step_seconds(config, items, "tora2", p, backend, args.repeats) for p in ("no", "bf16"))
        print(f"{'training step':<28} {backend:<8} {fp32:>8.3f} {bf16:>8.3f} {fp32 / bf16:>10.2f}")
        fp32, bf16 = (generation_seconds(config, items, p, backend, args.steps, args.repeats) for p in ("no", "bf16"))
        print(f"{f'generation ({args.steps} steps)':<28} {backend:<8} {fp32:>8.3f} {bf16:>8.3f} {fp32 / bf16:>10.2f}")
    tokens = args.batch * build_model(config, TOKENIZER).num_video_tokens
    reference = tokens / train_step_seconds(config, items, "dit", "bf16", "sdpa", args.repeats)
    print(f"\ntraining video tokens/s, bf16, sdpa (reference: plain DiT, {reference:.0f} tokens/s)")
    print(f"{'mode':<10} {'tokens/s':>10} {'dit/mode':>10}")
    for mode in ("tora2", "no_gate", "tora1", "dit"):
        rate = reference if mode == "dit" else tokens / train_step_seconds(config, items, mode, "bf16", "sdpa", args.repeats)
        print(f"{mode:<10} {rate:>10.0f} {reference / rate:>10.2f}")


if __name__ == "__main__":
    main()
