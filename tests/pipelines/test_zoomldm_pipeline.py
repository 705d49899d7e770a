import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, DDIMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config

from selfgen import ZoomLDMPipeline
from selfgen.pipelines.zoomldm import assemble_tiles, canvas_windows, diffusion_target, match_low_frequencies, split_tiles
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
    for coupling in ("guidance", "none"):
        for height, width in ((32, 32), (48, 80)):
            output = pipe.generate_large_image(height, width, coupling=coupling, num_inference_steps=2,
                                               generator=seeded(), output_type="np")
            assert output.images.shape == (1, height, width, 3) and np.isfinite(output.images).all()
            assert output.views.shape == (1, height // 2, width // 2, 3)


def test_window_conditioning_interpolates_between_cells(pipe):
    """An aligned level-1 window gets exactly its 2x2 sub-grid; a level-0 window half a tile off gets the mean of
    the two tiles it straddles (the official sampler interpolates between grid cells)."""
    field = torch.randn(8, 4, 6)
    tokens, mask = pipe.window_tokens(field, [(0, 8), (4, 4)], 1)  # latent offsets; a tile is 8 latent pixels
    torch.testing.assert_close(tokens[0, :4], field[:, 0:2, 2:4].permute(1, 2, 0).reshape(4, 8))
    assert mask[0].tolist() == [True] * 4
    tokens, _ = pipe.window_tokens(field, [(8, 4)], 0)
    torch.testing.assert_close(tokens[0, 0], (field[:, 1, 0] + field[:, 1, 1]) / 2)


def test_chunked_decoding_gradient_equals_unchunked(pipe):
    """The coupling gradient, taken a few windows at a time, equals autograd through the whole blended decode."""
    latents = torch.randn(1, 4, 16, 24)
    upstream = torch.randn(1, 3, 32, 48)
    chunked = pipe.decode_canvas_vjp(latents, upstream, 4, batch_size=2)
    with torch.enable_grad():
        whole = latents.clone().requires_grad_(True)
        (reference,) = torch.autograd.grad((pipe.decode_canvas(whole, 4, batch_size=100) * upstream).sum(), whole)
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pipe.decode_canvas(latents, 4, 1), pipe.decode_canvas(latents, 4, 100), atol=1e-5, rtol=1e-4)


def test_odd_window_stride_spreads_the_token_grid_artifact(pipe):
    """A denoiser whose every window carries the same 2-latent-pixel pattern (a patch-2 token grid): windows at even
    offsets (stride 4, or the official quarter window, 2) stack it on the same canvas columns; the default odd stride
    (3) alternates its phase between windows, so the average cancels most of it."""
    copied = copy.copy(pipe)

    def predict_noise(latents, timestep, context, guidance_scale):
        alpha = pipe.scheduler.alphas_cumprod[int(timestep)]
        clean = (torch.arange(latents.shape[-1]) % 2 == 0).float().expand_as(latents)
        return (latents - alpha.sqrt() * clean) / (1 - alpha).sqrt()

    copied.predict_noise = predict_noise
    latents, context = torch.zeros(1, 4, 8, 32), torch.zeros(32, 5, 16)
    assert pipe.odd_stride == 3 and pipe.check_window_stride(None, pipe.odd_stride) == 3
    ripple = {}
    for stride in (2, 3, 4):
        windows = canvas_windows((8, 32), 8, stride)
        row = copied.windowed_clean(latents, 500, windows, context, 1.0, 16)[0, 0, 0]
        ripple[stride] = row[8:24].diff().abs().mean().item()
    assert ripple[2] == pytest.approx(1.0) and ripple[4] == pytest.approx(1.0)
    assert ripple[3] < 0.5  # measured 0.22


def test_v_prediction_clean_estimate_is_exact_and_finite_at_zero_terminal_snr(pipe):
    """``to_clean`` / ``from_clean`` invert the scheduler's parametrisation (eps or v) for any ``a_t``, including the
    ``a_T = 0`` of a zero-terminal-SNR schedule, where an eps parametrisation has no x0."""
    v_scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction",
                                            rescale_betas_zero_snr=True, timestep_spacing="trailing")
    assert v_scheduler.alphas_cumprod[-1] == 0
    copied = copy.copy(pipe)
    clean, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for scheduler in (pipe.scheduler, v_scheduler):
        copied.scheduler = scheduler
        for t in (0, 500, 999):
            timesteps = torch.full((2,), t)
            alpha = scheduler.alphas_cumprod[t]
            noisy = scheduler.add_noise(clean, noise, timesteps)
            target = diffusion_target(scheduler, clean, noise, timesteps)
            if scheduler is pipe.scheduler or t < 999:
                torch.testing.assert_close(copied.to_clean(target, noisy, alpha), clean, atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(copied.from_clean(clean, noisy, alpha), target, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(diffusion_target(v_scheduler, clean, noise, torch.full((2,), 999)), -clean)
    copied.scheduler = v_scheduler  # a large image from t = T (trailing timesteps) stays finite under v-prediction
    output = copied.generate_large_image(32, 32, num_inference_steps=2, generator=seeded(), output_type="np")
    assert np.isfinite(output.images).all()


class FramedAutoencoder(ModelMixin, ConfigMixin):
    """A stand-in VAE whose decoder draws a dark frame around every window it decodes (what a small VAE trained on
    single patches does at its zero-padded borders) over a smooth image of the latent."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        frame = torch.zeros(16, 16)
        frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = 1, 1, 1, 1
        self.register_buffer("frame", frame)

    def encode(self, pixels):
        latents = torch.cat([F.avg_pool2d(pixels, 2), torch.zeros_like(pixels[:, :1, ::2, ::2])], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latents))

    def decode(self, latents):
        smooth = F.interpolate(0.2 * latents[:, :3], scale_factor=2, mode="bilinear", align_corners=False)
        return SimpleNamespace(sample=smooth - 0.5 * self.frame)


def stand_in(pipe, vae):
    swapped = ZoomLDMPipeline(vae=vae, denoiser=pipe.denoiser, ssl_encoder=pipe.ssl_encoder,
                              embedding_model=pipe.embedding_model, scheduler=pipe.scheduler)
    swapped.set_progress_bar_config(disable=True)
    return swapped


def test_overlapping_windows_remove_tile_frames(pipe):
    """Disjoint windows show every window's frame at the tile borders; overlapping windows (half a window apart)
    with averaged clean estimates and Gaussian-blended decoding weaken them (measured: seam score 2.35 -> 1.64;
    the official weight still gives a window's border about a fifth of its centre's weight)."""
    framed = stand_in(pipe, FramedAutoencoder())
    seams = {
        stride: seam_score(framed.generate_large_image(64, 64, window_stride=stride, num_inference_steps=3,
                                                       generator=seeded(), output_type="np").images, 16)
        for stride in (4, 8)
    }
    assert seams[8] > 2 and seams[4] < 0.75 * seams[8]


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
    """With disjoint windows every tile takes its own colour; the paper's guidance (gradient of
    ||A(D(z0_tiles)) - D(z0_view)||^2 through the decoder at every step) pulls them to the shared view: fewer seams,
    more consistency."""
    flat = stand_in(pipe, FlatTileAutoencoder())
    outputs = {
        coupling: flat.generate_large_image(64, 64, coupling=coupling, window_stride=8, num_inference_steps=4,
                                            generator=seeded(), output_type="np")
        for coupling in ("guidance", "none")
    }
    seams = {coupling: seam_score(output.images, 16) for coupling, output in outputs.items()}
    consistency = {coupling: consistency_psnr(output.images, output.views) for coupling, output in outputs.items()}
    assert seams["none"] > 2 and seams["guidance"] < 0.8 * seams["none"]  # measured 63 -> 44
    assert consistency["guidance"] > consistency["none"] + 6


def test_data_consistency_matches_low_frequencies():
    """The back-projection ``X <- clamp(X + U(y - A(X)))`` makes incoherent tiles consistent with ``y`` exactly."""
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
    low = np.random.default_rng(1).uniform(0.2, 0.8, size=(1, 16, 24, 3)).astype(np.float32)

    def run(**options):
        return pipe.super_resolve(low, scale=4, num_inference_steps=2, inversion_steps=2, generator=seeded(),
                                  output_type="np", **options).images

    high = run()
    assert high.shape == (1, 64, 96, 3)
    assert consistency_psnr(high, low) > 60  # data-consistency step: exact up to float error
    guided, unguided = run(data_consistency=False), run(data_consistency=False, coupling_scale=0.0)
    assert consistency_psnr(guided, low) > consistency_psnr(unguided, low) + 2  # the guidance alone pulls towards it


class NearestAutoencoder(ModelMixin, ConfigMixin):
    """A linear stand-in VAE: the encoder averages 2x2 blocks, the decoder repeats each latent pixel (so
    ``A(D(E(x))) = A(x)`` for area downsampling ``A`` by any multiple of 2)."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))  # diffusers reads the dtype off a parameter

    def encode(self, pixels):
        latents = torch.cat([F.avg_pool2d(pixels, 2), torch.zeros_like(pixels[:, :1, ::2, ::2])], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latents))

    def decode(self, latents):
        return SimpleNamespace(sample=self.gain * F.interpolate(latents[:, :3], scale_factor=2, mode="nearest"))


def test_noisy_projection_direction_makes_the_clean_estimate_consistent(pipe):
    """The official SR's correction ``E(X') - E(X)`` (``X = D(z0)``, ``X'`` its data-consistency projection) makes
    the decoded estimate consistent with the input in one step for a linear autoencoder; inside the sampler
    (``sr_guidance="noisy_projection"``: the correction is added to ``z_t`` and ``z0`` re-predicted) it pulls the
    output towards the input far more than no guidance, and the unknown option is a clear error."""
    linear = stand_in(pipe, NearestAutoencoder())
    torch.manual_seed(0)
    clean, target = torch.randn(1, 4, 16, 16) * 0.2, torch.rand(1, 3, 8, 8) * 0.6 - 0.3
    before = F.avg_pool2d(linear.decode_canvas(clean, 4, 16), 4)
    after = F.avg_pool2d(linear.decode_canvas(clean + linear.consistency_direction(clean, target, 4, 16), 4, 16), 4)
    assert F.mse_loss(before, target) > 0.01
    torch.testing.assert_close(after, target, atol=1e-4, rtol=0)
    low = np.random.default_rng(3).uniform(0.3, 0.7, size=(1, 16, 16, 3)).astype(np.float32)
    linear = stand_in(pipe, NearestAutoencoder(scaling_factor=10.0))  # unit latents decode inside [-1, 1]

    def run(sr_guidance):
        return linear.super_resolve(low, scale=4, num_inference_steps=3, inversion_steps=0, sr_guidance=sr_guidance,
                                    data_consistency=False, generator=seeded(), output_type="np").images

    assert consistency_psnr(run("noisy_projection"), low) > consistency_psnr(run("none"), low) + 10
    with pytest.raises(ValueError, match="sr_guidance must be one of"):
        linear.super_resolve(low, scale=4, num_inference_steps=2, sr_guidance="pixels")


def test_strength_starts_from_the_diffused_bicubic_estimate(pipe):
    """``strength < 1`` keeps the last ``int(strength * steps)`` timesteps and starts there from the noised encoding of
    the back-projected bicubic upsampling: with one step at t = 0 (and no guidance) the output is that estimate's
    autoencoder round trip, far closer to it than a draw from pure noise."""
    low = np.random.default_rng(2).uniform(0.2, 0.8, size=(1, 16, 16, 3)).astype(np.float32)
    vae = copy.deepcopy(pipe.vae)
    vae.register_to_config(scaling_factor=1.0)  # unit scale: the t = 0 noise (std 0.04) stays small in the decoder
    pipe = stand_in(pipe, vae)
    assert pipe.strength_first_step(10, 0.3) == 7  # the last 3 of 10 timesteps
    pipe.scheduler.set_timesteps(10)
    assert pipe.scheduler.timesteps[-1] == 0

    def run(strength):
        return pipe.super_resolve(low, scale=4, num_inference_steps=10, inversion_steps=0, strength=strength,
                                  coupling_scale=0.0, data_consistency=False, generator=seeded(),
                                  output_type="pt").images * 2 - 1

    pixels = torch.from_numpy(low).permute(0, 3, 1, 2) * 2 - 1
    bicubic = match_low_frequencies(F.interpolate(pixels, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1), pixels)
    start = pipe.decode_canvas(pipe.encode_canvas(bicubic), pipe.window // 2, 16).clamp(-1, 1)
    assert F.mse_loss(run(0.1), start) < 0.1 * F.mse_loss(run(1.0), start)
    for strength in (0.0, 1.5, 0.05):  # 0.05 * 10 steps rounds to no step
        with pytest.raises(ValueError, match="strength must be in"):
            pipe.super_resolve(low, scale=4, num_inference_steps=10, strength=strength)


def test_condition_inversion_reduces_the_low_resolution_mismatch(pipe):
    """Inverting the embedding field lowers the model's denoising loss on the low-resolution input's windows
    (measured on the same fixed noise and timesteps before and after)."""
    torch.manual_seed(0)
    low = torch.rand(1, 3, 16, 16) * 2 - 1
    latents, windows = pipe.encode_latents(low).float(), [(0, 0)]
    field = torch.randn(8, 4, 4)

    def mismatch(candidate):
        noise = torch.randn(16, *latents.shape[1:], generator=seeded(5))
        t = torch.linspace(50, 950, 16).long()
        tokens, mask = pipe.window_tokens(candidate, windows * 16, 2)
        context = pipe.context(tokens, mask, 2, 1.0)
        prediction = pipe.denoiser.denoise_with_context(pipe.scheduler.add_noise(latents.expand(16, -1, -1, -1), noise, t), t, context)
        return F.mse_loss(prediction, noise).item()

    inverted, losses = pipe.invert_condition(latents, field, 2, windows, steps=40, learning_rate=0.1, generator=seeded(1))
    assert len(losses) == 40 and not torch.equal(inverted, field)
    with torch.no_grad():
        assert mismatch(inverted) < 0.97 * mismatch(field)


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match="magnification must be one of the trained levels 0..2"):
        pipe(magnification=3, num_images=1)
    with pytest.raises(ValueError, match="multiples of 4 .* at least 16"):
        pipe.super_resolve(np.zeros((1, 6, 6, 3)), scale=4)
    with pytest.raises(ValueError, match="height and width must be multiples of 16"):
        pipe.generate_large_image(40, 40)
    with pytest.raises(ValueError, match="window_stride"):
        pipe.generate_large_image(32, 32, window_stride=9)
    with pytest.raises(ValueError, match="coupling must be one of"):
        pipe.generate_large_image(64, 64, coupling="joint")
    with pytest.raises(ValueError, match="reference_images"):
        pipe(reference_images=np.zeros((2, 16, 16)), magnification=0)


@pytest.mark.parametrize("asset, config_file", [("zoomldm-retina", "zoomldm_retina_patchae_vunet.yaml"),
                                                 ("zoomldm-ihc", "zoomldm_ihc_patchae_vunet.yaml")])
def test_bundled_checkpoint_is_what_its_config_builds_and_samples(asset, config_file):
    """Each bundled ZoomLDM checkpoint has the components its README config trains (patch autoencoder, diffusers
    UNet with the config's widths, prediction type, levels) and samples at its highest magnification."""
    from diffusers import UNet2DConditionModel

    from selfgen.models.zoomldm import ZoomAutoencoder
    from selfgen.train.config import load_config
    from selfgen.train.zoomldm import ZoomLDMConfig

    path = ASSET.parent / asset
    if not path.is_dir():
        pytest.skip(f"bundled checkpoint assets/{asset} not built")
    config = load_config(ZoomLDMConfig, Path(__file__).resolve().parents[2] / "configs" / config_file)
    bundled = ZoomLDMPipeline.from_pretrained(path)
    bundled.set_progress_bar_config(disable=True)
    assert isinstance(bundled.vae, ZoomAutoencoder) and bundled.vae.config.latent_channels == config.latent_channels
    assert isinstance(bundled.denoiser, UNet2DConditionModel)
    assert list(bundled.denoiser.config.block_out_channels) == list(config.unet_channels)
    assert bundled.scheduler.config.prediction_type == config.prediction_type
    assert bundled.conditioner.config.num_levels == config.num_levels
    assert not bundled.scheduler.config.clip_sample  # x0 estimates are latents, not [-1, 1] pixels
    images = bundled(magnification=config.num_levels - 1, num_images=2, num_inference_steps=5, generator=seeded(),
                     output_type="np").images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


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


def test_diffusers_unet_plugs_in_with_the_conditioner(pipe, tmp_path):
    """A Stable-Diffusion-style UNet2DConditionModel, cross-attending to the conditioner's tokens (magnification as
    a token), samples patches and a large image larger than one view, and survives save/load."""
    from diffusers import UNet2DConditionModel

    from selfgen.models.zoomldm import ZoomConditioner

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    )
    conditioner = ZoomConditioner(ssl_dim=8, hidden_size=16, context_dim=16, max_grid=2, num_levels=3, depth=1,
                                  num_heads=2, image_patch_size=16)
    plugged = ZoomLDMPipeline(vae=pipe.vae, denoiser=unet.eval(), ssl_encoder=pipe.ssl_encoder,
                              embedding_model=pipe.embedding_model, scheduler=pipe.scheduler, conditioner=conditioner.eval())
    plugged.set_progress_bar_config(disable=True)
    patches = plugged(magnification=1, num_images=2, num_inference_steps=2, generator=seeded(), output_type="np").images
    assert patches.shape == (2, 16, 16, 3)
    large = plugged.generate_large_image(48, 64, num_inference_steps=2, generator=seeded(), output_type="np")
    assert large.images.shape == (1, 48, 64, 3) and np.isfinite(large.images).all()
    plugged.save_pretrained(tmp_path / "unet")
    reloaded = ZoomLDMPipeline.from_pretrained(tmp_path / "unet")
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(magnification=1, num_images=2, num_inference_steps=2, generator=seeded(), output_type="np").images
    torch.testing.assert_close(again, patches)
    with pytest.raises(ValueError, match="needs conditioner"):
        ZoomLDMPipeline(vae=pipe.vae, denoiser=unet, ssl_encoder=pipe.ssl_encoder,
                        embedding_model=pipe.embedding_model, scheduler=pipe.scheduler)


def patch_autoencoder(latent_channels: int, pixels: torch.Tensor) -> "ZoomAutoencoder":
    """A ``ZoomAutoencoder`` at the test pipeline's latent factor (2), PCA-initialised on ``pixels``."""
    from selfgen.models.zoomldm import ZoomAutoencoder

    autoencoder = ZoomAutoencoder(latent_channels=latent_channels, factor=2, hidden=8, pixel_hidden=4)
    autoencoder.init_from_pca(pixels)
    return autoencoder.eval()


def test_shift_average_removes_the_patch_decoders_block_grid(pipe):
    """Cycle spinning through the autoencoder, ``mean_d S_-d D(E(S_d X))`` over the f^2 pixel shifts: an exact code
    returns any canvas unchanged; a lossy one turns a smooth ramp into a staircase with steps on every f-th line, and
    averaging over the phases spreads the steps over all lines. Default on for a ZoomAutoencoder only."""
    noise = torch.rand(8, 3, 16, 16, generator=seeded()) * 2 - 1
    exact = stand_in(pipe, patch_autoencoder(12, noise))  # every value of a 2x2x3 block
    lossy = stand_in(pipe, patch_autoencoder(3, F.interpolate(noise, scale_factor=2)))  # the block's mean colour
    assert exact.default_shift_average and not pipe.default_shift_average
    image = torch.rand(1, 3, 32, 48, generator=seeded()) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(exact.shift_average(image), image, atol=1e-4)
        ramp = torch.linspace(-0.8, 0.8, 48).expand(1, 3, 32, 48).contiguous()
        steps = {name: image.diff(dim=-1)[0, :, 4:-4, 4:-4].abs().mean((0, 1))
                 for name, image in (("decoded", lossy.decode_latents(lossy.encode_latents(ramp))),
                                     ("averaged", lossy.shift_average(ramp)))}
    within, across = steps["decoded"][0::2], steps["decoded"][1::2]  # inside the 2x2 blocks / on their borders
    assert within.max() < 1e-5 and across.min() > 0.05  # a staircase
    averaged = steps["averaged"]
    assert 0.8 < (averaged[1::2].mean() / averaged[0::2].mean()).item() < 1.25  # measured 1.00: the ramp again


def test_local_round_trip_equals_one_pass_for_the_patch_autoencoder(pipe):
    """The shift average's round trip, tile by tile with a margin above the ZoomAutoencoder's receptive field, equals
    one pass over the whole canvas (memory of one tile); a margin below it does not."""
    patch = stand_in(pipe, patch_autoencoder(3, torch.rand(8, 3, 16, 16, generator=seeded()) * 2 - 1))
    for module in (patch.vae.encode_residual, patch.vae.decode_residual, patch.vae.pixel_residual):
        torch.nn.init.normal_(module[-1].weight, std=0.3)  # non-zero residuals: a receptive field beyond one block
    canvas = torch.rand(1, 3, 48, 80, generator=seeded(1)) * 2 - 1
    with torch.no_grad():
        whole = patch.vae.decode(patch.vae.encode(canvas).latent_dist.mean).sample
        assert torch.allclose(patch.local_round_trip(canvas, 16, 32), whole, atol=1e-5)
        assert not torch.allclose(patch.local_round_trip(canvas, 16, 2), whole, atol=1e-3)
    with pytest.raises(ValueError, match="multiples of the latent factor 2"):
        patch.local_round_trip(canvas, 15, 32)
