import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from PIL import Image

from selfgen import AutoPipeline, UnconditionalDiffusionPipeline


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
        norm_num_groups=4, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    ).eval()  # as from_pretrained returns it: train-mode CPU kernels round differently
    pipeline = UnconditionalDiffusionPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _sample(pipeline, **kwargs):
    return pipeline(batch_size=3, num_inference_steps=4, generator=torch.Generator().manual_seed(0), **kwargs).images


def test_output_types_shapes_and_ranges(pipe):
    array = _sample(pipe, output_type="np")
    assert array.shape == (3, 8, 8, 1) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() <= 1 and array.std() > 0
    tensor = _sample(pipe, output_type="pt")
    assert tensor.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=1e-6)
    pil = _sample(pipe, output_type="pil")
    assert len(pil) == 3 and isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    with pytest.raises(ValueError, match="output_type must be one of"):
        _sample(pipe, output_type="jpeg")


def test_generator_makes_sampling_reproducible(pipe):
    torch.testing.assert_close(_sample(pipe, output_type="np"), _sample(pipe, output_type="np"))
    other = pipe(batch_size=3, num_inference_steps=4, generator=torch.Generator().manual_seed(1), output_type="np")
    assert not np.array_equal(other.images, _sample(pipe, output_type="np"))


def test_save_reload_is_bit_exact_and_autopipeline_finds_the_class(pipe, tmp_path):
    before = _sample(pipe, output_type="np")
    pipe.save_pretrained(tmp_path / "pipe")
    index = (tmp_path / "pipe" / "model_index.json").read_text()
    assert '"UnconditionalDiffusionPipeline"' in index
    for loaded in (UnconditionalDiffusionPipeline.from_pretrained(tmp_path / "pipe"), AutoPipeline.from_pretrained(tmp_path / "pipe")):
        assert type(loaded) is UnconditionalDiffusionPipeline
        loaded.set_progress_bar_config(disable=True)
        torch.testing.assert_close(_sample(loaded, output_type="np"), before)


def test_autopipeline_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        AutoPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ValueError, match="not a selfgen pipeline"):
        AutoPipeline.from_pretrained(tmp_path)
    with pytest.raises(TypeError):
        AutoPipeline()


def test_callback_on_step_end_sees_every_step_and_can_edit_latents(pipe):
    seen = []

    def callback(pipeline, step_index, timestep, tensors):
        seen.append((step_index, int(timestep), tuple(tensors["latents"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    images = _sample(pipe, output_type="pt", callback_on_step_end=callback)
    assert [step for step, _, _ in seen] == [0, 1, 2, 3]
    assert seen[0][2] == (3, 1, 8, 8)
    torch.testing.assert_close(images, torch.full_like(images, 0.5))


def test_any_diffusers_scheduler_works(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = _sample(pipe, output_type="np")
    assert images.shape == (3, 8, 8, 1) and np.isfinite(images).all()


def _processor_names(pipe):
    return {type(module.processor).__name__ for module in pipe.unet.modules() if hasattr(module, "processor")}


def test_attention_backends_switch_diffusers_processors(pipe):
    reference = _sample(pipe, output_type="np")
    pipe.set_attention_backend("math")
    assert _processor_names(pipe) == {"AttnProcessor"}
    np.testing.assert_allclose(_sample(pipe, output_type="np"), reference, atol=1e-5)
    pipe.set_attention_backend("sdpa")
    assert _processor_names(pipe) == {"AttnProcessor2_0"}
    with pytest.raises(ValueError, match="attention backend must be one of"):
        pipe.set_attention_backend("nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_xformers_is_refused_with_a_clear_error_on_cpu(pipe):
    with pytest.raises((ValueError, ModuleNotFoundError), match="xformers|CUDA"):
        pipe.enable_xformers_memory_efficient_attention()
    with pytest.raises(ValueError, match="xformers"):
        pipe.set_attention_backend("xformers")


def test_denoise_from_a_later_step_visits_only_the_tail_of_the_schedule(pipe):
    """``first_step`` (img2img ``strength``) steps on exactly ``scheduler.timesteps[first_step:]``, reporting
    schedule indices; out-of-range values are refused."""
    seen = []

    def predict(latents, timestep):
        seen.append(int(timestep))
        return torch.zeros_like(latents)

    def callback(pipeline, step_index, timestep, tensors):
        seen.append(("step", step_index))
        return tensors

    pipe.denoise(torch.zeros(1, 1, 8, 8), 5, predict, callback_on_step_end=callback, first_step=3)
    tail = [int(t) for t in pipe.scheduler.timesteps[3:]]
    assert seen == [tail[0], ("step", 3), tail[1], ("step", 4)]
    for first_step in (-1, 5):
        with pytest.raises(ValueError, match="first_step must be in"):
            pipe.denoise(torch.zeros(1, 1, 8, 8), 5, predict, first_step=first_step)
