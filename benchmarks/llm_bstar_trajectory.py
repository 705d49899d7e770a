"""B-STaR's per-iteration choices across runs: a table and one figure (one line per run).

    python benchmarks/llm_bstar_trajectory.py --runs runs/bstar-countdown-llama-s0 runs/bstar-countdown-llama-s1 ...
        [--star runs/star-countdown-llama-s0 ...] [--out docs/images/bstar_countdown_trajectory.png]

Reads each run's ``metrics.jsonl`` (written by the iteration driver). Iteration ``k``'s ``temperature``,
``threshold`` and ``balance_score`` were chosen on the probe queries by the policy *entering*
iteration ``k``; its ``accuracy`` is the held-out greedy accuracy of the policy *after* it (iteration 0:
the start). ``--star`` runs add their held-out accuracy to the accuracy panel for comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfgen.eval.plots import pyplot, save_figure

PANELS = (("temperature", "chosen temperature T"), ("threshold", "chosen threshold tau"),
          ("balance_score", "balance score (probe)"), ("distinct_correct", "distinct correct / query (T chosen)"),
          ("accuracy", "held-out greedy accuracy (driver's eval set)"))


def history(run: str) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"--runs/--star: {path} not found (run the recipe first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--star", nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = {run: history(run) for run in args.runs}
    keys = ("temperature", "threshold", "balance_score", "distinct_correct", "pass_at_k", "selection_precision", "accuracy")
    print("run | iteration | " + " | ".join(keys))
    for run, records in runs.items():
        for record in records:
            values = " | ".join(f"{record[k]:.3f}" if k in record else "" for k in keys)
            print(f"{Path(run).name} | {record['iteration']} | {values}")
    if args.out is None:
        return
    figure, axes = pyplot().subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 2.8), squeeze=False)
    for axis, (key, title) in zip(axes[0], PANELS):
        for run, records in runs.items():
            points = [(r["iteration"], r[key]) for r in records if key in r]
            axis.plot(*zip(*points), marker="o", label=f"B-STaR {Path(run).name[-2:]}")
        if key == "accuracy":
            for run in args.star:
                points = [(r["iteration"], r[key]) for r in history(run)]
                axis.plot(*zip(*points), marker="x", linestyle="--", label=f"STaR {Path(run).name[-2:]}")
            axis.legend(fontsize=6)
        axis.set_xticks(range(max(len(records) for records in runs.values())))
        axis.set_xlabel("iteration")
        axis.set_title(title, fontsize=8)
    figure.suptitle("B-STaR on Countdown (lm-countdown-llama): per-iteration choices and accuracy", fontsize=9)
    figure.tight_layout()
    save_figure(figure, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
