"""benchmarks/srum_ablation_plot.py: the per-category-over-rounds figure of the SRUM reward ablations."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfgen.data.scenes import CATEGORIES


def write_run(run_dir: Path, rounds: list[int]) -> Path:
    run_dir.mkdir()
    records = [
        {"round": r, "accuracy_pooled": 0.5 - 0.1 * r, "accuracy_pooled_se": 0.04,
         **{f"accuracy_{category}": 0.6 - 0.05 * r for category in CATEGORIES}}
        for r in rounds
    ]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return run_dir


def test_reads_rounds_in_order_and_draws_every_arm(tmp_path, benchmark_module):
    bench = benchmark_module("srum_ablation_plot")
    records = bench.read_rounds(write_run(tmp_path / "a", [2, 0, 3, 1]))
    assert [record["round"] for record in records] == [0, 1, 2, 3]
    assert records[3]["accuracy_pooled"] == pytest.approx(0.2)
    arms = {"both": records, "blind": bench.read_rounds(write_run(tmp_path / "b", [0, 1]))}
    path = bench.plot_arms(arms, tmp_path / "fig" / "plot.png", title="t")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert (image.std(axis=(0, 1)) > 0).all()  # something drawn, not a blank canvas


def test_refuses_a_directory_without_per_round_accuracy(tmp_path, benchmark_module):
    bench = benchmark_module("srum_ablation_plot")
    with pytest.raises(FileNotFoundError, match="rounds.jsonl"):
        bench.read_rounds(tmp_path)
    (tmp_path / "rounds.jsonl").write_text(json.dumps({"round": 0, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="accuracy_pooled"):
        bench.read_rounds(tmp_path)
