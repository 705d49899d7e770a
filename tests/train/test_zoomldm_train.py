from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from selfgen import ZoomLDMPipeline
from selfgen.cli import main
from selfgen.data.zoom import PatchIndex
from selfgen.train.zoomldm import ZoomLDMConfig, held_out_regions, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = dict(
    patch_size=16, num_levels=3, max_grid=2, train_batch_size=8, max_train_steps=4, vae_steps=3, ssl_steps=3,
    cdm_steps=3, logging_steps=1, checkpointing_steps=0, report_to=None, vae_channels=[16, 16], latent_channels=4,
    ssl_dim=8, ssl_channels=[8, 8], hidden_size=32, depth=1, num_heads=2, summarizer_hidden=16, summarizer_depth=1,
    context_dim=16, cdm_hidden=16, cdm_depth=1, learning_rate=1e-3,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoom")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    Image.fromarray(rng.integers(0, 256, (256, 272, 3), dtype=np.uint8)).save(root / "images" / "slide.png")
    config = ZoomLDMConfig(output_dir=str(root / "run"), data=str(root / "images"), **TINY)
    return root, train(config)


def test_all_stages_train_and_export_a_loadable_pipeline(trained):
    root, result = trained
    assert result.global_step == 3 and result.pipeline_dir == root / "run" / "pipeline"
    for stage in ("autoencoder", "ssl", "ldm", "cdm"):
        assert (root / "run" / stage / "logs" / "metrics.jsonl").is_file()
    pipe = ZoomLDMPipeline.from_pretrained(result.pipeline_dir)
    assert type(pipe.vae).__name__ == "ZoomAutoencoder" and pipe.vae.config.factor == 2  # f = 2^(len(vae_channels) - 1)
    assert pipe.vae.config.scaling_factor != 0.18215  # set from the latents' std
    assert not pipe.scheduler.config.clip_sample  # DDIM must not clip unit-variance latent estimates to [-1, 1]
    assert pipe(magnification=2, num_images=2, num_inference_steps=2, output_type="np").images.shape == (2, 16, 16, 3)


def test_unet_denoiser_option_trains_and_exports_a_plug_in_pipeline(tmp_path):
    """``denoiser: unet`` trains a diffusers UNet2DConditionModel cross-attending to a ZoomConditioner's tokens with
    v-prediction, and exports a pipeline that reloads it through the plug-in path and samples."""
    from diffusers import UNet2DConditionModel

    from selfgen.models.zoomldm import ZoomConditioner

    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    Image.fromarray(rng.integers(0, 256, (256, 272, 3), dtype=np.uint8)).save(tmp_path / "images" / "slide.png")
    config = ZoomLDMConfig(output_dir=str(tmp_path / "run"), data=str(tmp_path / "images"), denoiser="unet",
                           unet_channels=[16, 16], prediction_type="v_prediction", **(TINY | {"max_train_steps": 2}))
    result = train(config)
    pipe = ZoomLDMPipeline.from_pretrained(result.pipeline_dir)
    assert isinstance(pipe.denoiser, UNet2DConditionModel) and isinstance(pipe.conditioner, ZoomConditioner)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    images = pipe(magnification=1, num_images=2, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    with pytest.raises(ValueError, match="denoiser must be 'dit' or 'unet'"):
        ZoomLDMConfig(denoiser="mlp")


def test_cli_generate_writes_a_large_png(trained, tmp_path):
    _, result = trained
    main(["generate", "zoomldm", "--model", str(result.pipeline_dir), "--output", str(tmp_path), "--large", "64x64",
          "--num-inference-steps", "2"])
    with Image.open(tmp_path / "large.png") as image:
        assert image.size == (64, 64)


def test_bundled_config_is_valid_and_exports_under_its_output_dir():
    from selfgen.train.config import load_config

    config = load_config(ZoomLDMConfig, CONFIGS / "zoomldm_retina.yaml")
    assert config.pipeline_dir == Path(config.output_dir) / "pipeline" and config.images == ["retina"]  # assets/ only via --export_dir
    assert yaml.safe_load((CONFIGS / "zoomldm_retina_single.yaml").read_text())["levels"] == [0]
    unet = load_config(ZoomLDMConfig, CONFIGS / "zoomldm_retina_patchae_vunet.yaml")
    assert (unet.denoiser, unet.prediction_type, unet.latent_noise) == ("unet", "v_prediction", 0.2)


def test_ihc_vunet_config_is_the_ihc_patchae_config_plus_the_retina_vunet_changes():
    """configs/zoomldm_ihc_patchae_vunet.yaml = zoomldm_ihc_patchae.yaml + exactly what the retina vunet config
    changes over zoomldm_retina_patchae.yaml (output_dir aside)."""

    def load(name: str) -> dict:
        return yaml.safe_load((CONFIGS / name).read_text())

    def changes(before: dict, after: dict) -> dict:
        keys = (set(before) | set(after)) - {"output_dir"}
        return {key: (before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)}

    retina = changes(load("zoomldm_retina_patchae.yaml"), load("zoomldm_retina_patchae_vunet.yaml"))
    ihc = changes(load("zoomldm_ihc_patchae.yaml"), load("zoomldm_ihc_patchae_vunet.yaml"))
    assert {key: after for key, (_, after) in ihc.items()} == {
        key: after for key, (_, after) in retina.items() if key != "max_train_steps"  # IHC patchae: already 1500
    }
    assert load("zoomldm_ihc_patchae_vunet.yaml")["max_train_steps"] == load("zoomldm_retina_patchae_vunet.yaml")["max_train_steps"]
    assert set(retina) >= {"denoiser", "prediction_type", "latent_noise", "unet_channels"}


def test_config_errors():
    with pytest.raises(ValueError, match="patch_size"):
        ZoomLDMConfig(patch_size=30, vae_channels=[8, 8, 8])
    with pytest.raises(ValueError, match="autoencoder"):
        ZoomLDMConfig(autoencoder="vq")
    with pytest.raises(ValueError, match="condition_dropout"):
        ZoomLDMConfig(condition_dropout=1.5)
    with pytest.raises(ValueError, match="prediction_type"):
        ZoomLDMConfig(prediction_type="sample")
    with pytest.raises(ValueError, match="rescale_betas_zero_snr needs prediction_type: v_prediction"):
        ZoomLDMConfig(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="--large"):
        from selfgen.train.zoomldm import parse_size

        parse_size("big")


def test_zero_terminal_snr_schedule_samples_from_t_max_with_v_prediction():
    from selfgen.train.zoomldm import build_noise_scheduler

    default = build_noise_scheduler(ZoomLDMConfig())
    assert default.config.prediction_type == "epsilon" and 1e-4 < float(default.alphas_cumprod[-1]) < 2e-4  # LDM's 1.4e-4
    rescaled = build_noise_scheduler(ZoomLDMConfig(prediction_type="v_prediction", rescale_betas_zero_snr=True))
    assert float(rescaled.alphas_cumprod[-1]) == 0.0 and rescaled.config.prediction_type == "v_prediction"
    rescaled.set_timesteps(15)
    assert int(rescaled.timesteps[0]) == 999  # trailing: the first step is at T, not the leading spacing's 924


def test_validation_regions_share_no_pixel_with_the_test_regions():
    grid = [PatchIndex(0, 2, top, left) for top in range(0, 640, 64) for left in range(0, 256, 64)]
    dataset = type("Index", (), {"index": grid})()
    test, validation = (held_out_regions(dataset, 4, 128, split) for split in ("test", "validation"))
    assert len(test) == len(validation) == 4 and test[0] == grid[0] and test[-1] == grid[-1]
    assert all(abs(v.top - t.top) >= 128 or abs(v.left - t.left) >= 128 for v in validation for t in test)
    with pytest.raises(ValueError, match="split must be 'test' or 'validation'"):
        held_out_regions(dataset, 4, 128, "train")
    with pytest.raises(ValueError, match="no validation region of 128 px"):
        held_out_regions(dataset, 40, 128, "validation")
