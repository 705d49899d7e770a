import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selfgen.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "8", "--block_out_channels", "[8, 16]", "--norm_num_groups", "4", "--train_batch_size", "16",
        "--report_to", "null", "--logging_steps", "5"]


def test_help_lists_the_commands():
    completed = subprocess.run([sys.executable, "-m", "selfgen.cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    for command in ("list", "train", "generate", "eval", "demo"):
        assert command in completed.stdout


def test_list_shows_methods(capsys, tmp_path):
    main(["list", "--assets", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ddpm" in out and "none found" in out


def test_unknown_config_key_is_an_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("max_train_stepz: 3\n")
    with pytest.raises(SystemExit, match="unknown config key 'max_train_stepz'"):
        main(["train", "ddpm", "--config", str(config)])
    with pytest.raises(SystemExit, match="unknown config key 'bogus'"):
        main(["train", "ddpm", "--bogus", "1"])
    with pytest.raises(SystemExit, match="unknown method 'nosuch'"):
        main(["train", "nosuch"])


def test_train_20_steps_then_generate_and_demo(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "ddpm", "--config", str(REPO / "configs" / "ddpm_digits.yaml"), *TINY, "--max_train_steps", "20",
          "--output_dir", str(run), "--export_dir", str(tmp_path / "assets" / "ddpm-digits"), "--mixed_precision", "no"])
    assert "trained ddpm for 20 steps" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [5, 10, 15, 20]

    main(["generate", "ddpm", "--model", str(tmp_path / "assets" / "ddpm-digits"), "--output", str(tmp_path / "gen"),
          "--num_samples", "4", "--num_inference_steps", "3"])
    samples = np.load(tmp_path / "gen" / "samples.npy")
    assert samples.shape == (4, 8, 8, 1) and (tmp_path / "gen" / "samples.png").is_file()
    with pytest.raises(SystemExit, match="generate ddpm: unknown option --colour"):
        main(["generate", "ddpm", "--model", str(tmp_path / "assets" / "ddpm-digits"), "--colour", "red"])

    capsys.readouterr()
    main(["eval", "ddpm", "--model", str(tmp_path / "assets" / "ddpm-digits"), "--output", str(tmp_path / "eval"),
          "--num_samples", "4", "--num_inference_steps", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == printed  # the CLI saves what eval returned

    main(["demo", "--only", "ddpm", "--assets", str(tmp_path / "assets"), "--output", str(tmp_path / "demo")])
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary) == {"ddpm"} and (tmp_path / "demo" / "ddpm" / "samples.png").is_file()
    metrics = json.loads((tmp_path / "demo" / "ddpm" / "metrics.json").read_text())
    assert metrics["samples"]["frechet_distance"] > 0


def test_a_broken_method_module_is_named_and_the_rest_still_work(tmp_path, monkeypatch):
    import selfgen.train as train_package
    from selfgen.train.registry import discover_methods

    broken = tmp_path / "broken_method_for_test.py"
    broken.write_text("import a_module_that_does_not_exist\n")
    monkeypatch.setattr(train_package, "__path__", [*train_package.__path__, str(tmp_path)])
    with pytest.warns(RuntimeWarning, match="broken_method_for_test.*ModuleNotFoundError"):
        methods = discover_methods()
    assert "ddpm" in methods
