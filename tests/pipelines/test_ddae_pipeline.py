import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from selfgen import AutoPipeline, DDAEPipeline, DDAETransformer2DModel
from selfgen.pipelines.pipeline_utils import use_scheduler


def tiny_pipeline(channels: int = 1, num_classes: int = 0) -> DDAEPipeline:
    torch.manual_seed(0)
    transformer = DDAETransformer2DModel(
        sample_size=8, patch_size=2, in_channels=channels, hidden_size=32, depth=2, num_heads=2, num_classes=num_classes,
        feature_timestep=20,
    )
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0, 0.1)
    pipe = DDAEPipeline(transformer=transformer, scheduler=DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, **options):
    return pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0), **options).images


@pytest.mark.parametrize("scheduler", ["ddpm", "dpm"])
def test_reload_reproduces_samples_bit_for_bit(tmp_path, scheduler):
    pipe = tiny_pipeline()
    use_scheduler(pipe, scheduler)
    before = sample(pipe, output_type="np")
    pipe.save_pretrained(tmp_path)
    for reloaded in (DDAEPipeline.from_pretrained(tmp_path), AutoPipeline.from_pretrained(tmp_path)):
        assert isinstance(reloaded, DDAEPipeline)
        reloaded.set_progress_bar_config(disable=True)
        assert type(reloaded.scheduler) is type(pipe.scheduler)
        torch.testing.assert_close(sample(reloaded, output_type="np"), before)


def test_output_types():
    pipe = tiny_pipeline()
    images = sample(pipe, output_type="np")
    assert images.shape == (2, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
    assert sample(pipe, output_type="pt").shape == (2, 1, 8, 8)
    assert all(isinstance(image, Image.Image) for image in sample(pipe, output_type="pil"))
    with pytest.raises(ValueError, match="output_type"):
        sample(pipe, output_type="latent")


def test_classifier_free_guidance():
    pipe = tiny_pipeline(num_classes=3)
    plain = sample(pipe, output_type="np", class_labels=1)
    guided = sample(pipe, output_type="np", class_labels=[1, 2], guidance_scale=3.0)
    assert guided.shape == plain.shape and not np.allclose(guided[0], plain[0])
    with pytest.raises(ValueError, match="class_labels"):
        sample(pipe, class_labels=[5, 0])
    with pytest.raises(ValueError, match="unconditional"):
        sample(tiny_pipeline(), class_labels=0)


def test_extract_features_accepts_numpy_pil_and_torch():
    pipe = tiny_pipeline(channels=3)
    generator = torch.Generator().manual_seed(0)
    as_torch = torch.rand(5, 3, 8, 8, generator=generator) * 2 - 1
    as_numpy = ((as_torch.permute(0, 2, 3, 1) + 1) / 2).numpy()
    as_pil = [Image.fromarray((image * 255).round().astype(np.uint8)) for image in as_numpy]
    from_torch = pipe.extract_features(as_torch)
    assert from_torch.shape == (5, 32) and from_torch.dtype == torch.float32
    torch.testing.assert_close(pipe.extract_features(as_numpy), from_torch, atol=1e-5, rtol=1e-5)
    assert pipe.extract_features(as_pil).shape == (5, 32)
    torch.testing.assert_close(pipe.extract_features(as_pil), from_torch, atol=0.05, rtol=0.05)
    assert pipe.extract_features(as_torch, timestep=50, layer=2).shape == (5, 32)
    assert not torch.allclose(pipe.extract_features(as_torch, layer=2), from_torch)


def test_extract_features_defaults_are_deterministic_and_batch_independent():
    pipe = tiny_pipeline()
    images = torch.rand(7, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(pipe.extract_features(images), pipe.extract_features(images, batch_size=3))


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(2, 3, 8, 8),
        torch.zeros(2, 1, 16, 16),
        np.zeros((2, 8, 8, 3), dtype=np.float32),
        np.zeros((2, 8, 8), dtype=np.float32),
        [Image.new("RGB", (8, 8))],
        [Image.new("L", (16, 16))],
    ],
)
def test_wrong_image_size_or_channels_is_a_clear_error(images):
    with pytest.raises(ValueError, match=r"8x8 with 1 channel|\(N, H, W, C\)"):
        tiny_pipeline().extract_features(images)


def test_bad_timestep_and_latents_are_clear_errors():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="timestep"):
        pipe.extract_features(torch.zeros(2, 1, 8, 8), timestep=100)
    with pytest.raises(ValueError, match="latents"):
        pipe(batch_size=2, num_inference_steps=2, latents=torch.zeros(2, 1, 4, 4))


@pytest.mark.slow
@pytest.mark.parametrize("asset", ["ddae-digits", "ddae-digits-noselfcond"])
def test_bundled_checkpoint_api_contract(asset):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "assets" / asset
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"{folder} not built")
    pipe = DDAEPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    imgs = pipe(batch_size=8, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert imgs.shape == (8, 16, 16, 1) and 0 <= imgs.min() and imgs.max() <= 1
    feats = pipe.extract_features(imgs)
    assert feats.shape == (8, pipe.transformer.config.hidden_size) and torch.isfinite(feats).all()


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((2, 8, 8, 1), np.nan, np.float32), "images contains 128 NaN or infinite values"),
        (np.full((2, 8, 8, 1), 128.0, np.float32), r"values in \[0, 1\]; got values in \[128, 128\].*divide by 255"),
        (np.full((2, 8, 8, 1), 128, np.uint8), r"as floats in \[0, 1\]; got a uint8 array"),
        (torch.full((2, 1, 8, 8), 128.0), r"torch \(N, C, H, W\) with values in \[-1, 1\]"),
        (np.zeros((0, 8, 8, 1), np.float32), "images is an empty batch"),
    ],
)
def test_extract_features_refuses_nan_0_255_and_empty_batches(images, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline().extract_features(images)


def test_zero_steps_and_batch_size_are_errors_not_defaults():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1, got 0"):
        pipe(batch_size=1, num_inference_steps=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        pipe.extract_features(np.zeros((2, 8, 8, 1), np.float32), batch_size=0)


def test_self_guidance_off_is_the_unguided_path():
    """At w = 1 the pipeline takes the unguided path (one network call a step, not two) and gives its output."""
    pipe = tiny_pipeline()
    calls = []
    pipe.transformer.register_forward_hook(lambda module, args, output: calls.append(1))
    plain = sample(pipe, output_type="np")
    assert len(calls) == 4  # num_inference_steps
    for options in ({"perturbed_layers": [1]}, {}):
        calls.clear()
        off = sample(pipe, output_type="np", perturbed_guidance_scale=1.0, **options)
        assert len(calls) == 4
        np.testing.assert_allclose(off, plain, rtol=0, atol=1e-6)
    calls.clear()
    guided = sample(pipe, output_type="np", perturbed_guidance_scale=3.0, perturbed_layers=[1])
    assert len(calls) == 8 and guided.shape == plain.shape and np.abs(guided - plain).max() > 1e-3


@pytest.mark.parametrize("perturbation", ["attention", "skip"])
def test_self_guidance_combines_the_full_and_degraded_network_as_the_equation_says(perturbation):
    pipe = tiny_pipeline()
    latents, timestep = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor(50)
    full = pipe.transformer(latents, timestep).sample
    bad = pipe.transformer(latents, timestep, perturbed_layers=(2,), perturbation=perturbation).sample
    assert (full - bad).abs().max() > 1e-3  # the degraded branch is another network
    for scale in (1.0, 2.5):
        guided = pipe._self_guided_noise(latents, timestep, None, scale, (2,), perturbation)
        torch.testing.assert_close(guided, bad + scale * (full - bad))
    torch.testing.assert_close(pipe._self_guided_noise(latents, timestep, None, 1.0, (2,), perturbation), full)


def test_identity_attention_is_attention_when_all_tokens_are_equal_and_skip_is_the_identity():
    block = tiny_pipeline().transformer.blocks[0]
    cond = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    equal = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(3)).expand(2, 5, 32)
    torch.testing.assert_close(block(equal, cond, "attention"), block(equal, cond))  # softmax rows average equal values
    distinct = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(4))
    assert (block(distinct, cond, "attention") - block(distinct, cond)).abs().max() > 1e-3
    torch.testing.assert_close(block(distinct, cond, "skip"), distinct)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(perturbed_guidance_scale=0.5, perturbed_layers=[1]), "perturbed_guidance_scale"),
        (dict(perturbed_guidance_scale="2", perturbed_layers=[1]), "perturbed_guidance_scale"),
        (dict(perturbed_guidance_scale=2.0), "perturbed_layers"),
        (dict(perturbed_guidance_scale=2.0, perturbed_layers=[0]), "perturbed_layers"),
        (dict(perturbed_guidance_scale=2.0, perturbed_layers=[3]), "perturbed_layers"),
        (dict(perturbed_guidance_scale=2.0, perturbed_layers=[1], perturbation="noise"), "perturbation"),
    ],
)
def test_bad_self_guidance_arguments_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        sample(tiny_pipeline(), **options)


def test_self_guidance_with_classifier_free_guidance_is_refused():
    with pytest.raises(ValueError, match="classifier-free"):
        sample(tiny_pipeline(num_classes=3), class_labels=1, guidance_scale=2.0, perturbed_guidance_scale=2.0, perturbed_layers=[1])
