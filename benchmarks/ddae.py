"""DDAE++ training-step speed: self-conditioning overhead, bf16 autocast, and ours vs diffusers' DiT.

    OMP_NUM_THREADS=1 python benchmarks/ddae.py [--batch 32] [--patch 2] [--hidden 64] [--repeats 5] [--bf16] [--final_conv]

Times one forward + backward (+ AdamW step) of the bundled-checkpoint size (16x16x1, hidden 64 or ``--hidden``, depth 6,
4 heads, U-ViT long skips) on the same batch for: our DiT with and without self-conditioning, in fp32 (and bf16 autocast
with ``--bf16``; on a CPU without AMX it is several times slower),
and ``diffusers.DiTTransformer2DModel`` with the same width, depth, heads and patch (adaLN-Zero with a
single dummy class, as that class requires labels; no long skips); ``--final_conv`` adds our self-conditioned DiT with
U-ViT's 3x3 output convolution (``final_conv=True``) and its overhead against the one without. Variants are interleaved (in alternating order) and the median of
``repeats`` rounds is reported, so background load affects all of them alike. Prints steps/s and ratios,
the self-conditioning overhead as the median of the per-round time ratios (paired within a round), and the
floating-point operations of one training step counted by ``torch.utils.flop_counter.FlopCounterMode``
(independent of machine load).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import DiTTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

from selfgen.models.ddae import DDAETransformer2DModel

def size(hidden: int) -> dict:
    """Width, depth and heads of the bundled digits DiT at width ``hidden``."""
    return dict(hidden_size=hidden, depth=6, num_heads=4)


def ours(self_conditioning: bool, patch: int, hidden: int, final_conv: bool = False) -> tuple[torch.nn.Module, Callable]:
    model = DDAETransformer2DModel(
        sample_size=16, patch_size=patch, self_conditioning=self_conditioning, long_skips=True, final_conv=final_conv,
        **size(hidden),
    )
    return model, lambda x, t: model(x, t).sample


def diffusers_dit(patch: int, hidden: int) -> tuple[torch.nn.Module, Callable]:
    shape = size(hidden)
    model = DiTTransformer2DModel(
        num_attention_heads=shape["num_heads"],
        attention_head_dim=shape["hidden_size"] // shape["num_heads"],
        in_channels=1,
        out_channels=1,
        num_layers=shape["depth"],
        sample_size=16,
        patch_size=patch,
        num_embeds_ada_norm=1,
    )
    return model, lambda x, t: model(x, timestep=t, class_labels=torch.zeros_like(t)).sample


def step_time(model: torch.nn.Module, forward: Callable, batch: int, bf16: bool, iterations: int = 3) -> float:
    """Seconds per forward + backward + optimizer step (after one warm-up step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sample, timesteps = torch.randn(batch, 1, 16, 16), torch.randint(0, 1000, (batch,))
    elapsed = []
    for index in range(iterations + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(sample, timesteps).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index:
            elapsed.append(time.perf_counter() - start)
    return sum(elapsed) / len(elapsed)


def step_flops(forward: Callable, batch: int) -> int:
    """Floating-point operations of one forward + backward on a ``batch``, counted (not timed)."""
    sample, timesteps = torch.randn(batch, 1, 16, 16), torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        forward(sample, timesteps).float().square().mean().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64, help="width (the wide configs: 128)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--final_conv", action="store_true", help="also time the self-conditioned DiT with the output conv")
    args = parser.parse_args()
    torch.manual_seed(0)
    variants = {
        "ours, self-conditioned": ours(True, args.patch, args.hidden),
        "ours, plain (ablation)": ours(False, args.patch, args.hidden),
        "diffusers DiTTransformer2DModel": diffusers_dit(args.patch, args.hidden),
    }
    if args.final_conv:
        variants["ours, self-conditioned + output conv"] = ours(True, args.patch, args.hidden, final_conv=True)
    timings: dict[str, list[float]] = {}
    for round_index in range(args.repeats):  # the order alternates, so no variant always runs first
        for name, (model, forward) in list(variants.items())[:: 1 if round_index % 2 == 0 else -1]:
            for bf16 in (False, True)[: 1 + args.bf16]:
                key = f"{name} [{'bf16' if bf16 else 'fp32'}]"
                timings.setdefault(key, []).append(step_time(model, forward, args.batch, bf16))
    median = {key: statistics.median(values) for key, values in timings.items()}
    reference = median["ours, plain (ablation) [fp32]"]
    print(f"batch {args.batch}, 16x16x1, patch {args.patch}, {size(args.hidden)}, {torch.get_num_threads()} thread(s)")
    flops = {name: step_flops(forward, args.batch) for name, (_, forward) in variants.items()}
    print(f"{'variant':48s} {'params':>9s} {'GFLOP/step':>10s} {'steps/s':>8s} {'time vs ours-plain-fp32':>24s}")
    for key, seconds in median.items():
        name = key.rsplit(" [", 1)[0]
        params = sum(p.numel() for p in variants[name][0].parameters())
        print(f"{key:48s} {params:9d} {flops[name] / 1e9:10.3f} {1 / seconds:8.2f} {seconds / reference:24.3f}")
    overheads = {"self-conditioning": ("ours, self-conditioned", "ours, plain (ablation)")}
    if args.final_conv:
        overheads["output conv"] = ("ours, self-conditioned + output conv", "ours, self-conditioned")
    for label, (with_it, without) in overheads.items():
        params = [sum(p.numel() for p in variants[name][0].parameters()) for name in (with_it, without)]
        print(f"{label} overhead: parameters {params[0] - params[1]:+d} ({100 * (params[0] / params[1] - 1):+.3f}%), "
              f"counted FLOPs {100 * (flops[with_it] / flops[without] - 1):+.3f}%")
        for precision in ("fp32", "bf16")[: 1 + args.bf16]:
            ratios = [a / b for a, b in zip(timings[f"{with_it} [{precision}]"], timings[f"{without} [{precision}]"])]
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            print(f"{label} step-time overhead ({precision}), median of {len(ratios)} paired rounds: "
                  f"{100 * (statistics.median(ratios) - 1):+.1f}% (quartiles {100 * (quartiles[0] - 1):+.1f}% .. "
                  f"{100 * (quartiles[2] - 1):+.1f}%)")


if __name__ == "__main__":
    main()
