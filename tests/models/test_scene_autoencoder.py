import random

import numpy as np
import pytest
import torch

from selfgen.data.scenes import parse_prompt, render_scene, sample_scene, to_pixels
from selfgen.models.scene_autoencoder import (
    decode_latents,
    encode_latents,
    scene_autoencoder,
    set_latent_normalisation,
)
from selfgen.train.scene_autoencoder import AutoencoderObjective, SceneAutoencoderConfig, SceneRenders, train


def _scenes(count: int, seed: int = 0) -> torch.Tensor:
    rng = random.Random(seed)
    return torch.stack([to_pixels(render_scene(sample_scene(parse_prompt("a red circle"), rng))) for _ in range(count)])


def test_latents_are_8x8x4_normalised_and_decode_back_through_the_same_normalisation():
    torch.manual_seed(0)
    autoencoder = scene_autoencoder((8, 16, 16)).eval()
    pixels = _scenes(16)
    shift, scale = set_latent_normalisation(autoencoder, pixels)
    assert (autoencoder.config.shift_factor, autoencoder.config.scaling_factor) == (shift, scale)
    with torch.no_grad():
        latents = encode_latents(autoencoder, pixels)
        assert latents.shape == (16, 4, 8, 8)
        assert float(latents.mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(latents.std()) == pytest.approx(1.0, abs=1e-3)
        raw = autoencoder.decode(autoencoder.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
        torch.testing.assert_close(decode_latents(autoencoder, latents), raw, atol=1e-5, rtol=1e-4)


def test_bad_autoencoder_shapes_are_refused():
    with pytest.raises(ValueError, match="at least two levels"):
        scene_autoencoder((16,))
    with pytest.raises(ValueError, match="divide by 8"):
        scene_autoencoder((12, 16))
    with pytest.raises(ValueError, match="kl_weight"):
        SceneAutoencoderConfig(kl_weight=-1.0)


def test_the_objective_learns_to_reconstruct_scenes():
    """A round trip that could fail: a few steps on 8 scenes must cut the reconstruction error by half."""
    torch.manual_seed(0)
    autoencoder = scene_autoencoder((8, 16, 16))
    batch = {"pixel_values": torch.stack([SceneRenders(8)[i]["pixel_values"] for i in range(8)])}
    objective, optimizer = AutoencoderObjective(kl_weight=1e-4), torch.optim.Adam(autoencoder.parameters(), lr=3e-3)
    errors = []
    for _ in range(40):
        loss, logs = objective.compute_loss(autoencoder, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(logs["mse"])
    assert errors[-1] < 0.5 * errors[0], errors[::10]


def test_training_exports_a_normalised_autoencoder(tmp_path):
    config = SceneAutoencoderConfig(
        output_dir=str(tmp_path / "run"), max_train_steps=2, train_batch_size=4, block_out_channels=[8, 8, 8],
        num_train_scenes=8, normalisation_scenes=8, checkpointing_steps=0, report_to=None,
    )
    train(config)
    from diffusers import AutoencoderKL

    exported = AutoencoderKL.from_pretrained(tmp_path / "run" / "pipeline")
    pixels = torch.stack([SceneRenders(8, seed=1)[i]["pixel_values"] for i in range(8)])
    with torch.no_grad():
        latents = encode_latents(exported, pixels)
    assert exported.config.scaling_factor != 1.0 and np.isclose(float(latents.std()), 1.0, atol=1e-3)
