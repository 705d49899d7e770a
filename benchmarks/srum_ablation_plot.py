"""Validation accuracy per category over SRUM rounds, one line per arm (docs/srum.md, nineteenth pass).

Reads each run directory's ``rounds.jsonl`` (written by ``selfgen train srum``: round 0 is the base, then one record
per round with ``accuracy_<category>`` and ``accuracy_pooled`` / ``accuracy_pooled_se`` on the loop's evaluation
prompts) and draws one panel per category plus the pooled accuracy (its standard error as a band), every arm in every
panel. The issue's "plot of accuracy per category over rounds" for the reward ablations:

    python benchmarks/srum_ablation_plot.py docs/figures/srum_ablation_per_category.png \
        both=outputs/prev/gate-c/both-l0 global=outputs/abl/global-l0 local=outputs/abl/local-l0 \
        blind=outputs/prev/gate-c/blind-l0
"""
import json
import sys
from pathlib import Path

from selfgen.data.scenes import CATEGORIES
from selfgen.eval.plots import pyplot, save_figure


def read_rounds(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/rounds.jsonl``, in round order; refuses a run without per-round accuracy."""
    path = Path(run_dir) / "rounds.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a `selfgen train srum` output directory")
    records = sorted((json.loads(line) for line in path.read_text().splitlines() if line), key=lambda r: r["round"])
    if not records or "accuracy_pooled" not in records[0]:
        raise ValueError(f"{path} holds no per-round accuracy (accuracy_pooled)")
    return records


def plot_arms(arms: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """One panel per category of ``selfgen.data.scenes.CATEGORIES`` and one for the pooled accuracy (± s.e. band):
    accuracy against round for every arm (``{label: records}``)."""
    keys = [f"accuracy_{category}" for category in CATEGORIES] + ["accuracy_pooled"]
    figure, axes = pyplot().subplots(2, 4, figsize=(12, 5.4), sharex=True, sharey=True)
    for axis, key in zip(axes.flat, keys):
        for label, records in arms.items():
            rounds = [record["round"] for record in records]
            values = [record[key] for record in records]
            (line,) = axis.plot(rounds, values, marker="o", markersize=3, label=label)
            if key == "accuracy_pooled":
                se = [record["accuracy_pooled_se"] for record in records]
                low = [value - error for value, error in zip(values, se)]
                high = [value + error for value, error in zip(values, se)]
                axis.fill_between(rounds, low, high, color=line.get_color(), alpha=0.15)
        axis.set_title(key.removeprefix("accuracy_"))
        axis.set_ylim(0, 1.02)
        axis.set_xticks(sorted({record["round"] for records in arms.values() for record in records}))
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("round (0 = base)")
    axes[0][0].set_ylabel("validation accuracy")
    axes[1][0].set_ylabel("validation accuracy")
    legend_axis = axes.flat[len(keys)]
    legend_axis.axis("off")
    legend_axis.legend(*axes.flat[0].get_legend_handles_labels(), loc="center", title="reward")
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any("=" not in arg for arg in argv[1:]):
        raise SystemExit("usage: srum_ablation_plot.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]")
    arms = {label: read_rounds(run_dir) for label, run_dir in (arg.split("=", 1) for arg in argv[1:])}
    title = "SRUM at D1 (constraint_weight 0), seed-0 judged base, loop seed 0; 96 training-split prompts x 2 noises"
    print(plot_arms(arms, argv[0], title))


if __name__ == "__main__":
    main(sys.argv[1:])
