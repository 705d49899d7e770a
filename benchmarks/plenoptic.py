"""PlenopticDreamer speed: seconds per generated view vs the number of conditioning videos, fp32 vs bf16.

    OMP_NUM_THREADS=1 python benchmarks/plenoptic.py [--model assets/plenoptic-scenes] [--steps 20] [--repeats 3]

Times ``pipe.generate_view`` (one target clip of the model's length, ``steps`` Euler steps) with 0, 1, 2 and
3 conditioning videos, the cost of context scaling: every conditioning video adds ``F x (H / p)^2`` tokens
to full attention. fp32 and ``torch.autocast("cpu", bfloat16)`` variants are interleaved and the median of
``repeats`` rounds is reported, so background load affects them alike. Prints seconds per view and the
ratio to one conditioning video in fp32. Loads the model read-only; writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
from functools import partial

import torch

from selfgen import PlenopticDreamerPipeline
from timing import interleaved_medians

CONDITION_COUNTS = (0, 1, 2, 3)


def generate_view(pipe: PlenopticDreamerPipeline, num_conditions: int, steps: int, bf16: bool) -> None:
    config = pipe.transformer.config
    shape = (config.num_frames, config.in_channels, config.sample_size, config.sample_size)
    generator = torch.Generator().manual_seed(0)
    conditions = torch.rand((num_conditions, *shape), generator=generator) * 2 - 1
    cameras = torch.eye(4).repeat(config.num_frames, 1, 1)
    intrinsics = torch.tensor([[config.sample_size, 0.0, config.sample_size / 2], [0.0, config.sample_size, config.sample_size / 2], [0.0, 0.0, 1.0]])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        pipe.generate_view(conditions, cameras[None].repeat(num_conditions, 1, 1, 1), cameras, intrinsics, steps, generator, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/plenoptic-scenes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipe = PlenopticDreamerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    variants = {
        (count, bf16): partial(generate_view, pipe, count, args.steps, bf16) for count in CONDITION_COUNTS for bf16 in (False, True)
    }
    medians = interleaved_medians(variants, args.repeats)
    reference = medians[(1, False)]
    config = pipe.transformer.config
    tokens = config.num_frames * (config.sample_size // config.patch_size) ** 2
    print(f"{config.num_frames} frames of {config.sample_size}x{config.sample_size}, {tokens} tokens per video, "
          f"{args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"{'conditions':<11} {'precision':<9} {'s/view':>8} {'vs 1 cond fp32':>15}")
    for (count, bf16), median in medians.items():
        print(f"{count:<11} {'bf16' if bf16 else 'fp32':<9} {median:>8.3f} {median / reference:>15.2f}")


if __name__ == "__main__":
    main()
