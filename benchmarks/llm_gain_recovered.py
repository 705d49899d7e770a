"""How much of a control's gain a recipe recovers, paired by problem, from saved per-problem results.

    python benchmarks/llm_gain_recovered.py --results runs/eval/a.json [more.json ...] --length 4 \\
        --start assets/lm-arith-llama --control <GRPO run(s)> --candidate <recipe run(s)>

``--results`` are ``benchmarks/llm_lengths.py --out`` files (greedy correctness per problem; files scored on
the same split and problem count line up problem by problem, and greedy decoding of one model gives the same
results in every file). Several ``--control`` / ``--candidate`` models (seeds) are averaged per problem.
Printed: each gain over the start with its 95% interval, candidate - control, and the fraction
``gain(candidate) / gain(control)`` with a 95% percentile bootstrap interval over problems (the issue's
"recovers >= 50% of GRPO's gain"), printed only when the control's gain interval excludes 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfgen.eval.statistics import bootstrap_interval, mean_difference


def gain_fraction(rows: np.ndarray) -> float:
    """``rows[:, 0]`` start, ``rows[:, 1]`` control, ``rows[:, 2]`` candidate correctness (seed means allowed):
    mean(candidate - start) / mean(control - start); NaN when the control gains nothing."""
    control_gain = float(np.mean(rows[:, 1] - rows[:, 0]))
    return float(np.mean(rows[:, 2] - rows[:, 0])) / control_gain if control_gain else float("nan")


def load_results(paths: list[Path], length: str) -> tuple[dict[str, np.ndarray], int]:
    merged, count = {}, None
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"--results: {path} not found (write it with benchmarks/llm_lengths.py --out)")
        data = json.loads(path.read_text())
        if count is not None and data["problems"] != count:
            raise ValueError(f"--results: {path} scored {data['problems']} problems, the others {count}")
        count = data["problems"]
        for model, lengths in data["correct"].items():
            if length in lengths:
                merged[model] = np.asarray(lengths[length], dtype=float)
    return merged, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", nargs="+", type=Path, required=True)
    parser.add_argument("--length", default="4")
    parser.add_argument("--start", required=True)
    parser.add_argument("--control", nargs="+", required=True)
    parser.add_argument("--candidate", nargs="+", required=True)
    args = parser.parse_args()
    results, count = load_results(args.results, args.length)
    missing = [m for m in [args.start, *args.control, *args.candidate] if m not in results]
    if missing:
        raise ValueError(f"no {args.length}-digit results for {missing} in --results (have {sorted(results)})")
    start = results[args.start]
    control = np.mean([results[m] for m in args.control], axis=0)
    candidate = np.mean([results[m] for m in args.candidate], axis=0)
    print(f"{count} problems, {args.length} digits; start {start.mean():.3f}")
    for name, values in (("control", control), ("candidate", candidate)):
        diff, se = mean_difference(start, values)
        print(f"{name:<9} {values.mean():.3f}  gain {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]")
    diff, se = mean_difference(control, candidate)
    print(f"candidate - control {diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]")
    gain, gain_se = mean_difference(start, control)
    if gain - 1.96 * gain_se <= 0:
        print("gain recovered: undefined (the control's gain interval reaches 0 or below)")
        return
    rows = np.stack([start, control, candidate], axis=1)
    low, high = bootstrap_interval(gain_fraction, rows, num_resamples=1000)
    print(f"gain recovered {gain_fraction(rows):.0%} [{low:.0%}, {high:.0%}] (95% bootstrap over problems)")


if __name__ == "__main__":
    main()
