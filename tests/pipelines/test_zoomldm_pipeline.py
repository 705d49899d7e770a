from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler

from selfgen import ZoomLDMPipeline
from selfgen.pipelines.zoomldm import assemble_tiles, match_low_frequencies, split_tiles
from selfgen.eval.zoom import consistency_psnr, seam_score
from selfgen.models.zoomldm import ZoomEmbeddingDiffusion, ZoomLDMDenoiser, ZoomSSLEncoder

ASSET = Path(__file__).resolve().parents[2] / "assets" / "zoomldm-retina"


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    denoiser = ZoomLDMDenoiser(sample_size=8, hidden_size=32, depth=1, num_heads=2, ssl_dim=8, max_grid=2, num_levels=3,
                               summarizer_hidden=16, summarizer_depth=1, context_dim=16, image_patch_size=16)
    torch.nn.init.normal_(denoiser.proj_out.weight, std=0.1)
    cdm = ZoomEmbeddingDiffusion(ssl_dim=8, max_grid=2, num_levels=3, hidden_size=16, depth=1, num_heads=2)
    encoder = ZoomSSLEncoder(embed_dim=8, channels=(8, 8), projection_dim=8)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195)
    pipeline = ZoomLDMPipeline(vae=vae.eval(), denoiser=denoiser.eval(), ssl_encoder=encoder.eval(),
                               embedding_model=cdm.eval(), scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_unconditional_and_reference_sampling(pipe):
    images = pipe(magnification=2, num_images=3, num_inference_steps=3, generator=seeded(), output_type="np").images
    assert images.shape == (3, 16, 16, 3) and images.min() >= 0 and images.max() <= 1
    reference = np.random.default_rng(0).uniform(size=(2, 32, 32, 3))
    images = pipe(reference_images=reference, magnification=1, num_inference_steps=3, generator=seeded(), output_type="np").images
    assert images.shape == (2, 16, 16, 3)


def test_magnification_conditioning_changes_samples(pipe):
    reference = np.random.default_rng(0).uniform(size=(2, 64, 64, 3))
    low = pipe(reference_images=reference, magnification=2, num_inference_steps=3, generator=seeded(), output_type="np").images
    high = pipe(reference_images=reference, magnification=0, num_inference_steps=3, generator=seeded(), output_type="np").images
    assert np.abs(low - high).mean() > 1e-4


def test_reload_is_exact(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "zoom")
    reloaded = ZoomLDMPipeline.from_pretrained(tmp_path / "zoom")
    reloaded.set_progress_bar_config(disable=True)
    first = pipe(magnification=1, num_images=2, num_inference_steps=3, generator=seeded(3), output_type="np").images
    second = reloaded(magnification=1, num_images=2, num_inference_steps=3, generator=seeded(3), output_type="np").images
    np.testing.assert_array_equal(first, second)
    assert (tmp_path / "zoom" / "denoiser" / "diffusion_pytorch_model.safetensors").is_file()


def test_joint_sampling_output_size(pipe):
    for coupling in (True, False):
        output = pipe.generate_large_image(64, 64, coupling=coupling, num_inference_steps=3, generator=seeded(),
                                           output_type="np")
        assert output.images.shape == (1, 64, 64, 3) and np.isfinite(output.images).all()
        assert output.views.shape == (1, 16, 16, 3)


def test_coupling_removes_tile_seams():
    """The per-step coupling ``X + U(u - A(X))`` gives independently offset tiles one shared low-frequency image."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([torch.sin(3 * x), torch.cos(2 * y), x * y])[None] * 0.5
    tiles = split_tiles(smooth, 16) + torch.randn(16, 3, 1, 1) * 0.3  # incoherent tiles, as naive tiling makes
    naive = assemble_tiles(tiles, 4, 4)
    joint = match_low_frequencies(naive, torch.nn.functional.avg_pool2d(smooth, 4))
    as_np = lambda t: ((t[0].permute(1, 2, 0) + 1) / 2).numpy()  # noqa: E731
    assert seam_score(as_np(joint), 16) < 0.5 * seam_score(as_np(naive), 16)


def test_super_resolution_downsamples_to_its_input(pipe):
    low = np.random.default_rng(1).uniform(0.2, 0.8, size=(2, 8, 12, 3)).astype(np.float32)
    high = pipe.super_resolve(low, scale=4, num_inference_steps=3, generator=seeded(), output_type="np").images
    assert high.shape == (2, 32, 48, 3)
    assert consistency_psnr(high, low) > 30


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match="magnification must be one of the trained levels 0..2"):
        pipe(magnification=3, num_images=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe.super_resolve(np.zeros((1, 6, 6, 3)), scale=4)
    with pytest.raises(ValueError, match="height and width"):
        pipe.generate_large_image(48, 48)
    with pytest.raises(ValueError, match="reference_images"):
        pipe(reference_images=np.zeros((2, 16, 16)), magnification=0)


@pytest.mark.skipif(not ASSET.is_dir(), reason="bundled checkpoint not built")
def test_bundled_checkpoint():
    bundled = ZoomLDMPipeline.from_pretrained(ASSET)
    bundled.set_progress_bar_config(disable=True)
    images = bundled(magnification=2, num_images=2, num_inference_steps=5, generator=seeded(), output_type="np").images
    assert images.shape == (2, 32, 32, 3)
    seams = {
        coupling: seam_score(bundled.generate_large_image(64, 64, coupling=coupling, num_inference_steps=10,
                                                          generator=seeded(), output_type="np").images, 32)
        for coupling in (True, False)
    }
    assert seams[True] < seams[False]
