import json
import re
import subprocess
import sys
import time
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


def error_line(argv, capsys) -> str:
    """The CLI's one-line error for ``argv`` (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("max_train_stepz: 3\n")
    assert "unknown config key 'max_train_stepz'" in error_line(["train", "ddpm", "--config", str(config)], capsys)
    assert "unknown config key 'bogus'" in error_line(["train", "ddpm", "--bogus", "1"], capsys)
    assert "unknown method 'nosuch'" in error_line(["train", "nosuch"], capsys)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("max_train_steps: [1, 2\n", r"c\.yaml: invalid YAML: line 2, column 1: expected ',' or ']'"),  # ParserError
        ("learning_rate: 1\n\tseed: 2\n", r"c\.yaml: invalid YAML: line 2, column 1: found character '\\t'"),  # Scanner
        ("seed: !!python/object:os.system 1\n", r"c\.yaml: invalid YAML: line 1, column 7: could not determine a constructor"),
        ("seed: \x07\n", r"c\.yaml: invalid YAML: unacceptable character #x0007"),  # ReaderError
        ("learning_rate: -1\n", "learning_rate must be a finite number > 0, got -1"),
        ("lr_scheduler: bogus\n", r"lr_scheduler must be one of \('linear', 'cosine'"),
    ],
)
def test_bad_yaml_and_values_are_one_line_naming_file_line_or_field(tmp_path, capsys, yaml_text, expected):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    assert re.search(expected, error_line(["train", "ddpm", "--config", str(config)], capsys))


def test_bad_overrides_and_a_bare_value_flag_are_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert "learning_rate must be a finite number > 0, got -1.0" in error_line(
        ["train", "ddpm", "--learning_rate", "-1e0"], capsys)
    assert "lr_scheduler must be one of" in error_line(["train", "ddpm", "--lr_scheduler", "bogus"], capsys)
    assert "--output_dir needs a value" in error_line(["train", "ddpm", "--output_dir"], capsys)
    assert "--output_dir needs a value" in error_line(["train", "ddpm", "--output_dir", "--max_train_steps", "1"], capsys)
    assert not (tmp_path / "true").exists() and not run.exists()


def test_float_notation_is_a_float_in_yaml_and_on_the_command_line(tmp_path):
    from selfgen.train.config import load_config, parse_overrides
    from selfgen.train.ddpm import DDPMConfig

    config_file = tmp_path / "c.yaml"
    config_file.write_text("learning_rate: 1e-4\nadam_epsilon: 1E-8\nmax_train_steps: 2e3\n")
    config = load_config(DDPMConfig, config_file, parse_overrides(["--ema_decay", "9.9e-1", "--max_grad_norm", "5e-1"]))
    assert (config.learning_rate, config.adam_epsilon, config.ema_decay, config.max_grad_norm) == (1e-4, 1e-8, 0.99, 0.5)
    assert config.max_train_steps == 2000 and isinstance(config.max_train_steps, int)
    with pytest.raises(ValueError, match="'max_train_steps' .* expects int, got 2.5"):
        load_config(DDPMConfig, None, parse_overrides(["--max_train_steps", "2.5"]))


def test_bad_model_folders_are_one_line_naming_the_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"--model {tmp_path / 'missing'}: no such folder" in error_line(
        ["generate", "ddpm", "--model", str(tmp_path / "missing")], capsys)
    assert f"--model {empty} is empty" in error_line(["eval", "ddpm", "--model", str(empty)], capsys)
    assert "holds a TSDiffPipeline, not a UnconditionalDiffusionPipeline" in error_line(
        ["generate", "ddpm", "--model", str(REPO / "assets" / "tsdiff-co2")], capsys)


def test_help_is_fast_and_lists_a_methods_fields():
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "selfgen.cli", "--help"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert completed.returncode == 0
    imported = subprocess.run([sys.executable, "-c", "import sys, selfgen.cli; print('torch' in sys.modules)"],
                              capture_output=True, text=True)
    assert imported.stdout.strip() == "False"  # the reason it is fast, independent of machine load
    assert seconds < 5.0, seconds

    completed = subprocess.run([sys.executable, "-m", "selfgen.cli", "train", "ddpm", "--help"],
                               capture_output=True, text=True)
    assert completed.returncode == 0
    assert re.search(r"--learning_rate float = 0\.0001 +AdamW peak learning rate", completed.stdout)
    assert re.search(r"--resolution int = 16", completed.stdout)


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
    assert "unknown option --colour" in error_line(
        ["generate", "ddpm", "--model", str(tmp_path / "assets" / "ddpm-digits"), "--colour", "red"], capsys)

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
