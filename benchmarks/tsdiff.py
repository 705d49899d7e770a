"""TSDiff forecasting speed, fp32 vs bf16 autocast, with the CRPS of each so a speed-up never hides a loss.

    python benchmarks/tsdiff.py [--model assets/tsdiff-co2] [--dataset co2] [--num_samples 100]
                                [--num_windows 8] [--num_inference_steps 100] [--repeats 1]

Forecasts ``num_samples`` paths for a batch of the dataset's last ``num_windows`` rolling test windows
with quantile self-guidance (the same generator seed in both precisions) and prints seconds per batch,
the speed ratio against fp32, and the normalised CRPS of each. One process, one card (CPU here).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from selfgen.data.bundled import load_bundled
from selfgen.eval.forecasting import normalized_crps
from selfgen.pipelines.tsdiff import TSDiffPipeline


def timed_forecast(
    pipe: TSDiffPipeline, contexts: np.ndarray, horizon: int, args: argparse.Namespace, bf16: bool
) -> tuple[float, np.ndarray]:
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with precision:
            samples = pipe.forecast(
                contexts, horizon, args.num_samples, "quantile", num_inference_steps=args.num_inference_steps,
                generator=torch.Generator().manual_seed(0),
            ).samples
        times.append(time.perf_counter() - start)
    return min(times), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tsdiff-co2")
    parser.add_argument("--dataset", default="co2")
    parser.add_argument("--num_samples", type=int, default=100)
    parser.add_argument("--num_windows", type=int, default=8)
    parser.add_argument("--num_inference_steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    pipe = TSDiffPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    bundled = load_bundled(args.dataset)
    windows = bundled.test_windows()[-args.num_windows :]
    horizon = bundled.prediction_length
    contexts = np.stack([history[-pipe.required_context_length(horizon) :] for history, _ in windows])
    truth = np.stack([t for _, t in windows])
    print(f"{args.dataset}: {len(windows)} series x {args.num_samples} samples, {args.num_inference_steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    print("| precision | s / batch | speed vs fp32 | normalized CRPS |")
    print("| --- | --- | --- | --- |")
    reference = None
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        seconds, samples = timed_forecast(pipe, contexts, horizon, args, bf16)
        reference = reference or seconds
        print(f"| {name} | {seconds:.2f} | {reference / seconds:.2f}x | {normalized_crps(samples, truth):.4g} |")


if __name__ == "__main__":
    main()
