"""Saved pipelines name selfgen components as ["selfgen", ClassName] (DESIGN.md) and load back."""

import json
from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@pytest.mark.skipif(not (ASSETS / "tsdiff-co2").is_dir(), reason="bundled checkpoint not present")
def test_our_components_are_saved_under_the_selfgen_root(tmp_path):
    import selfgen
    from selfgen import AutoPipeline

    pipe = AutoPipeline.from_pretrained(ASSETS / "tsdiff-co2")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["model"] == ["selfgen", "TSDiffModel"]
    assert index["scheduler"][0] == "diffusers"
    assert selfgen.ModelMixin.__module__.startswith("diffusers")
    reloaded = AutoPipeline.from_pretrained(tmp_path)
    for expected, actual in zip(pipe.model.state_dict().values(), reloaded.model.state_dict().values()):
        assert torch.equal(expected, actual)
