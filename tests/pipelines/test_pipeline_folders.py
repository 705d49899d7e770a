"""A missing, empty, truncated or wrong-type folder is one clear error from ``from_pretrained``."""
import json
import shutil

import pytest
from diffusers import DDPMScheduler, UNet2DModel

from selfgen import AutoPipeline, UnconditionalDiffusionPipeline
from selfgen.pipelines.tsdiff import TSDiffPipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "ddpm"
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    UnconditionalDiffusionPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(folder)
    return folder


def _copy(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "copy")


def test_a_complete_folder_loads(saved):
    assert isinstance(AutoPipeline.from_pretrained(saved), UnconditionalDiffusionPipeline)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model folder {tmp_path / 'nope'} does not exist"):
        UnconditionalDiffusionPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"model folder {tmp_path / 'empty'} has no model_index.json \(the folder is empty\)"):
        UnconditionalDiffusionPipeline.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="the folder is empty"):
        AutoPipeline.from_pretrained(tmp_path / "empty")


def test_truncated_files_are_named(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(ValueError, match=f"{weights} is damaged or truncated"):
        UnconditionalDiffusionPipeline.from_pretrained(folder)
    index = folder / "model_index.json"
    index.write_text(index.read_text()[:20])
    with pytest.raises(ValueError, match=f"{index} is not valid JSON"):
        AutoPipeline.from_pretrained(folder)


def test_missing_component_is_named(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(FileNotFoundError, match=f"{folder / 'scheduler'} is missing or empty"):
        UnconditionalDiffusionPipeline.from_pretrained(folder)


def test_wrong_pipeline_class_names_the_class_the_folder_holds(saved):
    with pytest.raises(ValueError, match="holds a UnconditionalDiffusionPipeline, not a TSDiffPipeline: load it with"):
        TSDiffPipeline.from_pretrained(saved)


def test_auto_pipeline_reads_a_list_class_name(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = ["selfgen", "UnconditionalDiffusionPipeline"]  # diffusers' form for custom pipelines
    (folder / "model_index.json").write_text(json.dumps(index))
    assert AutoPipeline.pipeline_class(folder) is UnconditionalDiffusionPipeline
