import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from selfgen import DDAEPipeline, DDAETransformer2DModel, UnconditionalDiffusionPipeline
from selfgen.data.digits import load_digits_arrays
from selfgen.eval import probe


def test_linear_probe_separates_separable_features_and_not_random_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = rng.normal(size=(300, 5)) + 4 * np.eye(3, 5)[labels]
    assert probe.linear_probe(features[:200], labels[:200], features[200:], labels[200:]) > 0.95
    shuffled = rng.permutation(labels)
    assert probe.linear_probe(features[:200], shuffled[:200], features[200:], shuffled[200:]) < 0.6
    with pytest.raises(ValueError, match="same length"):
        probe.linear_probe(features[:10], labels[:9], features, labels)


def test_classifier_frechet_distance_is_small_for_real_digits_and_large_for_noise():
    real, _ = load_digits_arrays("test", 16)
    train, _ = load_digits_arrays("train", 16)
    as_numpy = ((train[:300].permute(0, 2, 3, 1) + 1) / 2).numpy()
    noise = np.random.default_rng(0).random(as_numpy.shape).astype(np.float32)
    real_metrics, noise_metrics = probe.generation_metrics(as_numpy, real), probe.generation_metrics(noise, real)
    assert real_metrics["classifier_fd"] < 0.1 * noise_metrics["classifier_fd"]
    assert real_metrics["class_coverage"] == 10 and real_metrics["classifier_confidence"] > 0.8


def test_digits_classifier_checks_its_input_and_missing_weights():
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        probe.DigitsClassifier().features(torch.zeros(2, 1, 8, 8))
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        probe.load_digits_classifier("nowhere.safetensors")


def small_digits(count: int):
    images, labels = load_digits_arrays("train", 8)
    return images[:count], labels[:count]


def test_probe_sweep_on_a_ddae_pipeline_and_a_unet_baseline():
    torch.manual_seed(0)
    transformer = DDAETransformer2DModel(sample_size=8, hidden_size=16, depth=2, num_heads=2, feature_timestep=10)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16], norm_num_groups=4,
                       layers_per_block=1, down_block_types=["DownBlock2D"] * 2, up_block_types=["UpBlock2D"] * 2)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    train, test = small_digits(120), small_digits(60)
    ddae = probe.probe_sweep(DDAEPipeline(transformer, scheduler), train, test, timesteps=[0, 10], layers=[1, 2])
    assert set(ddae["accuracy"]) == {"t=0,layer=1", "t=0,layer=2", "t=10,layer=1", "t=10,layer=2"}
    assert ddae["default"]["timestep"] == 10 and ddae["default"]["layer"] == 1
    assert ddae["default"]["accuracy"] == ddae["accuracy"]["t=10,layer=1"]
    baseline = probe.probe_sweep(UnconditionalDiffusionPipeline(unet, scheduler), train, test, timesteps=[10])
    assert set(baseline["accuracy"]) == {f"t=10,layer={layer}" for layer in range(1, 6)}
    assert 0 <= baseline["best"]["accuracy"] <= 1
