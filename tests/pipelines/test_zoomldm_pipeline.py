from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, DDIMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config

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
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False)
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
    torch.testing.assert_close(first, second)
    assert (tmp_path / "zoom" / "denoiser" / "diffusion_pytorch_model.safetensors").is_file()


def test_joint_sampling_output_size(pipe):
    for coupling in ("guidance", "projection", "none"):
        output = pipe.generate_large_image(32, 32, coupling=coupling, num_inference_steps=2, generator=seeded(),
                                           output_type="np")
        assert output.images.shape == (1, 32, 32, 3) and np.isfinite(output.images).all()
        assert output.views.shape == (1, 16, 16, 3)


class FlatTileAutoencoder(ModelMixin, ConfigMixin):
    """A differentiable stand-in for the VAE whose tiles are flat colours (the latent's mean) plus a texture that
    is continuous across tile borders, so that independently sampled tiles show seams and nothing else does."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        x = torch.arange(16) / 16
        self.texture = torch.nn.Parameter(0.05 * torch.cos(2 * torch.pi * x)[None, :] * torch.cos(2 * torch.pi * x)[:, None])

    def encode(self, pixels):
        latents = torch.cat([F.avg_pool2d(pixels, 2), torch.zeros_like(pixels[:, :1, ::2, ::2])], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latents))

    def decode(self, latents):
        colour = 0.3 * latents[:, :3].mean(dim=(2, 3), keepdim=True)
        return SimpleNamespace(sample=colour + self.texture)


def test_gradient_guided_joint_sampling_removes_seams(pipe):
    """Naive tiling gives every tile its own colour; the paper's guidance (gradient of ||A(D(z0_tiles)) - D(z0_view)||^2
    through the decoder and the denoiser at every step) pulls them to the shared view: fewer seams, more consistency."""
    flat = ZoomLDMPipeline(vae=FlatTileAutoencoder(), denoiser=pipe.denoiser, ssl_encoder=pipe.ssl_encoder,
                           embedding_model=pipe.embedding_model, scheduler=pipe.scheduler)
    flat.set_progress_bar_config(disable=True)
    outputs = {
        coupling: flat.generate_large_image(64, 64, coupling=coupling, num_inference_steps=4, generator=seeded(),
                                            output_type="np")
        for coupling in ("guidance", "none")
    }
    seams = {coupling: seam_score(output.images, 16) for coupling, output in outputs.items()}
    consistency = {coupling: consistency_psnr(output.images, output.views) for coupling, output in outputs.items()}
    assert seams["none"] > 2 and seams["guidance"] < 0.6 * seams["none"]
    assert consistency["guidance"] > consistency["none"] + 6


def test_projection_ablation_matches_low_frequencies():
    """The ablation's per-step projection ``X <- clamp(X + U(u - A(X)))`` makes incoherent tiles consistent exactly."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([torch.sin(3 * x), torch.cos(2 * y), x * y])[None] * 0.5
    tiles = split_tiles(smooth, 16) + torch.randn(16, 3, 1, 1) * 0.3  # incoherent tiles, as naive tiling makes
    naive = assemble_tiles(tiles, 4, 4)
    target = F.avg_pool2d(smooth, 4)
    joint = match_low_frequencies(naive, target)
    as_np = lambda t: ((t[0].permute(1, 2, 0) + 1) / 2).numpy()  # noqa: E731
    assert seam_score(as_np(joint), 16) < 0.5 * seam_score(as_np(naive), 16)
    torch.testing.assert_close(F.avg_pool2d(joint, 4), target, atol=1e-4, rtol=0)


def test_super_resolution_downsamples_to_its_input(pipe):
    low = np.random.default_rng(1).uniform(0.2, 0.8, size=(1, 4, 8, 3)).astype(np.float32)

    def run(**options):
        return pipe.super_resolve(low, scale=4, num_inference_steps=2, generator=seeded(), output_type="np", **options).images

    high = run()
    assert high.shape == (1, 16, 32, 3)
    assert consistency_psnr(high, low) > 60  # data-consistency step: exact up to float error
    guided, unguided = run(data_consistency=False), run(data_consistency=False, coupling_scale=0.0)
    assert consistency_psnr(guided, low) > consistency_psnr(unguided, low) + 2  # the guidance alone pulls towards it


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match="magnification must be one of the trained levels 0..2"):
        pipe(magnification=3, num_images=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe.super_resolve(np.zeros((1, 6, 6, 3)), scale=4)
    with pytest.raises(ValueError, match="height and width"):
        pipe.generate_large_image(48, 48)
    with pytest.raises(ValueError, match="coupling must be one of"):
        pipe.generate_large_image(64, 64, coupling="joint")
    with pytest.raises(ValueError, match="reference_images"):
        pipe(reference_images=np.zeros((2, 16, 16)), magnification=0)


@pytest.mark.skipif(not ASSET.is_dir(), reason="bundled checkpoint not built")
def test_bundled_checkpoint():
    bundled = ZoomLDMPipeline.from_pretrained(ASSET)
    bundled.set_progress_bar_config(disable=True)
    assert not bundled.scheduler.config.clip_sample  # x0 estimates are latents, not [-1, 1] pixels
    images = bundled(magnification=2, num_images=2, num_inference_steps=5, generator=seeded(), output_type="np").images
    assert images.shape == (2, 32, 32, 3)


@pytest.mark.parametrize(
    "low, steps, message",
    [
        (np.full((1, 4, 4, 3), np.nan, np.float32), 2, "low_res contains 48 NaN or infinite values"),
        (np.full((1, 4, 4, 3), 200.0, np.float32), 2, r"low_res must be .* in \[0, 1\].*divide by 255"),
        (np.zeros((0, 4, 4, 3), np.float32), 2, "low_res is an empty batch"),
        (np.zeros((1, 4, 4, 3), np.float32), 0, "num_inference_steps must be an integer >= 1, got 0"),
    ],
)
def test_super_resolve_refuses_nan_0_255_empty_and_zero_steps(pipe, low, steps, message):
    with pytest.raises(ValueError, match=message):
        pipe.super_resolve(low, scale=4, num_inference_steps=steps)
