"""The wheel maps every top-level folder into the selfgen namespace (non-editable install)."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAPPED_FOLDERS = {"selfgen": "selfgen", "models": "selfgen.models", "pipelines": "selfgen.pipelines",
                  "train": "selfgen.train", "data": "selfgen.data", "eval": "selfgen.eval"}


def expected_modules() -> list[str]:
    modules = []
    for folder, package in MAPPED_FOLDERS.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / folder).parts
            modules.append(".".join((package, *relative)))
    return modules


def test_wheel_installs_and_imports_every_subpackage(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("selfgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "selfgen/models/attention.py" in names and "selfgen/train/trainer.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    modules = expected_modules()
    script = (
        "import importlib, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
        "print('imported', len(" + repr(modules) + "))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"imported {len(modules)}" in completed.stdout
    assert len(modules) >= 6
