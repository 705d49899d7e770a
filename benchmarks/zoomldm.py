"""ZoomLDM large-image speed: joint multi-scale sampling vs the projection ablation vs naive tiling, fp32 vs bf16.

    OMP_NUM_THREADS=1 python benchmarks/zoomldm.py [--model assets/zoomldm-retina] [--size 128] [--steps 10] [--repeats 3]

Times ``pipe.generate_large_image(size, size, coupling=...)`` (one ``size x size`` image, ``(size / 32)^2``
tiles plus the low-magnification view) for ``coupling`` in ``guidance`` (the paper's gradient guidance: one
backward pass through the decoder and the denoiser per step), ``projection`` (decode, back-project, re-encode
per step) and ``none`` (naive tiling), in fp32 and under ``torch.autocast("cpu", bfloat16)``. Variants are
interleaved and the median of ``repeats`` rounds is reported, so background load affects all of them alike.
Prints seconds per image and ratios to naive fp32. Loads the model read-only; writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
from functools import partial

import torch

from selfgen import ZoomLDMPipeline
from selfgen.pipelines.zoomldm import COUPLINGS
from timing import interleaved_medians


def large_image(pipe: ZoomLDMPipeline, size: int, steps: int, coupling: str, bf16: bool) -> None:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        pipe.generate_large_image(
            size, size, coupling=coupling, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/zoomldm-retina")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipe = ZoomLDMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    variants = {
        (coupling, bf16): partial(large_image, pipe, args.size, args.steps, coupling, bf16)
        for coupling in COUPLINGS for bf16 in (False, True)
    }
    medians = interleaved_medians(variants, args.repeats)
    reference = medians[("none", False)]
    print(f"{args.size}x{args.size}, {args.steps} DDIM steps, torch threads {torch.get_num_threads()}")
    print(f"{'coupling':<11} {'precision':<9} {'s/image':>8} {'vs naive fp32':>14}")
    for (coupling, bf16), median in medians.items():
        print(f"{coupling:<11} {'bf16' if bf16 else 'fp32':<9} {median:>8.2f} {median / reference:>14.2f}")


if __name__ == "__main__":
    main()
