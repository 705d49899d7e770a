"""A run writes only under its ``--output_dir``: the README's own commands never touch ``assets/``.

The quick, own-data and LoRA commands are read from README.md (so the test follows the README), run
with tiny step counts in a scratch copy of the repository layout, and ``git status`` of ``assets/``
must stay clean there.
"""
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from selfgen.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--max_train_steps", "2", "--train_batch_size", "4", "--report_to", "null", "--logging_steps", "1",
        "--mixed_precision", "no"]
TINY_ARCHITECTURE = ["--resolution", "8", "--block_out_channels", "[8, 16]", "--norm_num_groups", "4"]


def readme_ddpm_commands() -> list[list[str]]:
    """The README's quick (``--output_dir``) and own-data (``--data``) ``selfgen train ddpm`` lines."""
    commands = []
    for line in (REPO / "README.md").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("selfgen train ddpm ") and ("--output_dir" in line or "--data" in line):
            commands.append(shlex.split(line)[1:])
    return commands


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_readme_train_commands_never_write_into_assets(tmp_path, monkeypatch):
    commands = readme_ddpm_commands()
    assert len(commands) == 3, commands  # quick, own data, LoRA fine-tune of the bundled checkpoint
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "ddpm_digits.yaml", tmp_path / "configs")
    shutil.copytree(REPO / "assets" / "ddpm-digits", tmp_path / "assets" / "ddpm-digits")
    images = tmp_path / "path" / "to" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{index}.png")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "assets")
    git(tmp_path, "commit", "-q", "-m", "assets")
    monkeypatch.chdir(tmp_path)

    for command in commands:
        tiny = TINY if "--pretrained" in command else TINY + TINY_ARCHITECTURE
        main([*command, *tiny])
        assert git(tmp_path, "status", "--porcelain", "--untracked-files=all", "assets") == "", command
    assert (tmp_path / "outputs" / "quick" / "pipeline" / "model_index.json").is_file()
    assert (tmp_path / "outputs" / "ddpm-digits" / "pipeline" / "model_index.json").is_file()
