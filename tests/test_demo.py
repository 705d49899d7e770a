"""``selfgen demo``: summary.json merges runs (``--only X`` keeps the others), the lm demo leaves no empty folders."""

import json

from selfgen.demo import run_demos
from selfgen.train.llm import lm
from selfgen.train.registry import Method


def fake_method(name, value):
    def demo(asset_dir, output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "picture.png").write_bytes(b"")
        return {"score": value}

    return Method(name=name, summary=name, config_class=object, train=None, demo=demo, demo_asset=f"{name}-asset")


def assets(tmp_path, *names):
    for name in names:
        (tmp_path / "assets" / f"{name}-asset").mkdir(parents=True)
        (tmp_path / "assets" / f"{name}-asset" / "model_index.json").write_text('{"_class_name": "X"}')
    return tmp_path / "assets"


def test_only_one_method_merges_into_the_summary(tmp_path):
    root = tmp_path / "demo"
    assets_dir = assets(tmp_path, "a", "b")
    run_demos({"a": fake_method("a", 1), "b": fake_method("b", 2)}, assets_dir, root)
    run_demos({"b": fake_method("b", 3)}, assets_dir, root)  # selfgen demo --only b
    summary = json.loads((root / "summary.json").read_text())
    assert {name: entry["metrics"] for name, entry in summary.items()} == {"a": {"score": 1}, "b": {"score": 3}}
    assert json.loads((root / "b" / "metrics.json").read_text()) == {"score": 3}


def test_a_corrupt_summary_is_replaced_not_a_crash(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    (root / "summary.json").write_text("{not json")
    run_demos({"a": fake_method("a", 1)}, assets(tmp_path, "a"), root)
    assert set(json.loads((root / "summary.json").read_text())) == {"a"}


def test_lm_demo_leaves_no_empty_folders(tmp_path, monkeypatch):
    def fake_evaluate(model_path, output_dir, task, num_problems):
        output_dir.mkdir(parents=True, exist_ok=True)
        return {"accuracy": 0.5}

    monkeypatch.setattr(lm, "evaluate", fake_evaluate)
    assert lm.demo(tmp_path / "asset", tmp_path / "out") == {"add": 0.5, "mul": 0.5, "countdown": 0.5}
    assert [path for path in (tmp_path / "out").rglob("*") if path.is_dir()] == []
