"""benchmarks/srum_offline_pair.py: a round's samples drawn once and reused, unchanged, by another arm."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import VOCAB
from selfgen.models.scene_autoencoder import scene_autoencoder
from selfgen.train.srum import SRUMConfig
from selfgen.train.srum_shapes import shapes_trainer
from selfgen.train.unified import build_pipeline


def test_a_pairs_samples_are_saved_once_and_another_arm_rescores_the_same_ones(benchmark_module, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "benchmarks"))
    pair = benchmark_module("srum_offline_pair")
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, generation_patch_size=1,
                               generation_latent_channels=4, generation_latent_size=8)
    pipe = build_pipeline(model, scene_autoencoder((8, 8, 8)).eval().requires_grad_(False))
    pipe.set_progress_bar_config(disable=True)
    config = SRUMConfig(pretrained=None, output_dir=str(tmp_path / "run"), prompts_per_round=2, samples_per_prompt=2,
                        num_inference_steps=2, reward="oracle", report_to=None)
    cache = tmp_path / "samples.pt"
    prompts, images, latents, _, _ = pair.round_samples(shapes_trainer(pipe, config), cache)
    assert cache.exists() and len(prompts) == 4 and tuple(latents.shape[:2]) == (4, 4)

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached round must not generate again")

    pipe.generate = no_drawing
    again, images_again, latents_again, rewards, seconds = pair.round_samples(
        shapes_trainer(pipe, dataclasses.replace(config, reward="both")), cache
    )
    assert again == prompts and torch.equal(latents_again, latents) and seconds["seconds_generate"] == 0.0
    np.testing.assert_array_equal(images_again, images)
    assert rewards.reward_maps.shape == (4, *images.shape[1:3])  # scored by this arm's reward, the model's own judge
    with pytest.raises(ValueError, match="was drawn with"):
        pair.round_samples(shapes_trainer(pipe, dataclasses.replace(config, guidance_scale=1.0)), cache)
