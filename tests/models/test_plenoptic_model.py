import pytest
import torch

from selfgen.models.plenoptic import PlenopticTransformer

K = torch.tensor([[[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]]])


def _model() -> PlenopticTransformer:
    torch.manual_seed(0)
    model = PlenopticTransformer(sample_size=16, num_frames=3, patch_size=8, hidden_size=32, depth=2, num_heads=2)
    with torch.no_grad():  # the output head is zero-initialised (adaLN-zero); give it weights to see differences
        model.proj_out.weight.normal_(std=0.2)
        for block in model.blocks:
            block.modulation[-1].weight.normal_(std=0.05)
    return model.eval()


def _cameras(shift: float, frames: int = 3) -> torch.Tensor:
    cameras = torch.eye(4).repeat(1, frames, 1, 1)
    cameras[..., 0, 3] = shift
    return cameras


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 3, 3, 16, 16, generator=generator)
    conditions = torch.randn(1, 2, 3, 3, 16, 16, generator=generator)
    return sample, conditions, torch.stack([_cameras(0.0)[0], _cameras(0.5)[0]])[None]


@torch.no_grad()
def test_target_camera_and_condition_videos_change_the_prediction():
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    base = model(sample, 500, _cameras(1.0), K, conditions, condition_cameras).sample
    assert base.shape == sample.shape
    moved = model(sample, 500, _cameras(-1.0), K, conditions, condition_cameras).sample
    other_context = model(sample, 500, _cameras(1.0), K, conditions.flip(-1), condition_cameras).sample
    assert (base - moved).abs().mean() > 1e-5
    assert (base - other_context).abs().mean() > 1e-5
    no_context = model(sample, 500, _cameras(1.0), K).sample
    assert no_context.shape == sample.shape and (base - no_context).abs().mean() > 1e-5


@torch.no_grad()
def test_per_frame_timesteps_and_condition_order_invariance():
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    shared = model(sample, 400, _cameras(1.0), K, conditions, condition_cameras).sample
    per_frame = model(sample, torch.full((1, 3), 400.0), _cameras(1.0), K, conditions, condition_cameras).sample
    assert torch.allclose(shared, per_frame, atol=1e-6)
    clean_first = model(sample, torch.tensor([[0.0, 400.0, 400.0]]), _cameras(1.0), K, conditions, condition_cameras).sample
    assert (clean_first - shared).abs().mean() > 1e-4
    # conditions form a set: swapping two conditioning videos (with their cameras) changes nothing
    swapped = model(sample, 400, _cameras(1.0), K, conditions.flip(1), condition_cameras.flip(1)).sample
    assert torch.allclose(shared, swapped, atol=1e-5)


@torch.no_grad()
def test_velocity_is_implied_by_the_denoised_prediction():
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    out = model(sample, torch.tensor([[0.0, 250.0, 800.0]]), _cameras(0.4), K, conditions, condition_cameras)
    for frame, sigma in ((1, 0.25), (2, 0.8)):
        expected = (sample[:, frame] - out.denoised[:, frame]) / sigma
        assert torch.allclose(out.sample[:, frame], expected, atol=1e-5)
    assert torch.isfinite(out.sample[:, 0]).all()  # a clean frame (t = 0) stays finite


@torch.no_grad()
def test_attention_backends_agree_and_mismatched_condition_cameras_are_an_error():
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    sdpa = model(sample, 300, _cameras(0.2), K, conditions, condition_cameras).sample
    model.set_attention_backend("math")
    assert torch.allclose(model(sample, 300, _cameras(0.2), K, conditions, condition_cameras).sample, sdpa, atol=1e-5)
    with pytest.raises(ValueError, match="condition_cameras"):
        model(sample, 300, _cameras(0.2), K, conditions, condition_cameras[:, :1])


@torch.no_grad()
def test_save_and_reload_is_exact(tmp_path):
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    model.save_pretrained(tmp_path)
    reloaded = PlenopticTransformer.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_frames == 3
    expected = model(sample, 250, _cameras(0.3), K, conditions, condition_cameras).sample
    torch.testing.assert_close(reloaded(sample, 250, _cameras(0.3), K, conditions, condition_cameras).sample, expected)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()


def test_patch_size_must_divide_the_sample_size():
    with pytest.raises(ValueError, match="patch_size"):
        PlenopticTransformer(sample_size=16, patch_size=5)


def test_positions_are_a_fixed_3d_sincos_code_as_strong_as_the_other_embeddings():
    model = PlenopticTransformer(sample_size=16, num_frames=3, patch_size=8, hidden_size=32, depth=1, num_heads=2)
    assert "position" not in model.state_dict() and model.position.shape == (3, 4, 32)  # fixed, not learned
    norms = model.position.norm(dim=-1)  # sqrt(D / 2) for every token (a learned std-0.02 table had ~0.1)
    torch.testing.assert_close(norms, torch.full_like(norms, 4.0), atol=1e-4, rtol=0)
    flat = model.position.reshape(12, 32)
    distances = torch.cdist(flat, flat) + torch.eye(12) * 100
    assert distances.min() > 0.5  # every (frame, row, column) has its own code
    with pytest.raises(ValueError, match="hidden_size must be divisible by 16"):
        PlenopticTransformer(sample_size=16, patch_size=8, hidden_size=40)
    with pytest.raises(ValueError, match="frames"):
        model(torch.randn(1, 4, 3, 16, 16), 500, _cameras(0.0, frames=4), K)


@torch.no_grad()
def test_condition_intrinsics_are_per_video_and_default_to_the_targets():
    model = _model()
    sample, conditions, condition_cameras = _inputs()
    shared = model(sample, 300, _cameras(0.2), K, conditions, condition_cameras).sample
    explicit = model(sample, 300, _cameras(0.2), K, conditions, condition_cameras, K[:, None].expand(1, 2, 3, 3)).sample
    torch.testing.assert_close(explicit, shared)
    wide = K[:, None].repeat(1, 2, 1, 1)
    wide[:, 1, 0, 0] = wide[:, 1, 1, 1] = 8.0  # the second condition was filmed with half the focal length
    assert (model(sample, 300, _cameras(0.2), K, conditions, condition_cameras, wide).sample - shared).abs().mean() > 1e-5


@torch.no_grad()
def test_warp_input_starts_at_zero_then_moves_the_prediction_and_is_checked():
    """The warp projection is zero-initialised: the warp-conditioned model equals the model without it
    until the projection learns; a trained projection makes the warp change the target."""
    plain = _model()
    torch.manual_seed(0)
    warped = PlenopticTransformer(sample_size=16, num_frames=3, patch_size=8, hidden_size=32, depth=2, num_heads=2, warp_conditioning=True)
    warped.load_state_dict(plain.state_dict(), strict=False)
    sample, conditions, condition_cameras = _inputs()
    args = (sample, torch.tensor([500.0]), _cameras(0.0), K, conditions, condition_cameras)
    warp = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    reference = plain(*args).denoised
    torch.testing.assert_close(warped(*args, warp=warp).denoised, reference, rtol=1e-5, atol=1e-6)
    warped.warp_embed.weight.normal_(std=0.2)
    assert (warped(*args, warp=warp).denoised - reference).abs().mean() > 1e-3
    torch.testing.assert_close(warped(*args).denoised, warped(*args, warp=torch.zeros_like(warp)).denoised)  # None = empty warp
    with pytest.raises(ValueError, match="warp must be"):
        warped(*args, warp=warp[:, :, :3])
    with pytest.raises(ValueError, match="warp_conditioning=False"):
        plain(*args, warp=warp)


@torch.no_grad()
def test_pixel_refiner_starts_at_zero_then_reads_the_warp_per_pixel():
    """The refiner's last convolution is zero-initialised (the model equals the model without it); once it is
    trained, a one-pixel change of the warp changes the estimate at that pixel and the pixels within 3 of it
    (receptive field 7x7 through three 3x3 convolutions), not across the whole 8x8 patch as the linear head does."""
    torch.manual_seed(0)
    plain = PlenopticTransformer(sample_size=16, num_frames=3, patch_size=8, hidden_size=32, depth=2, num_heads=2, warp_conditioning=True)
    refined = PlenopticTransformer(
        sample_size=16, num_frames=3, patch_size=8, hidden_size=32, depth=2, num_heads=2, warp_conditioning=True, refiner_width=8
    )
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("refiner.") for key in missing)
    sample, conditions, condition_cameras = _inputs()
    args = (sample, torch.tensor([500.0]), _cameras(0.0), K, conditions, condition_cameras)
    warp = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(refined(*args, warp=warp).denoised, plain(*args, warp=warp).denoised, rtol=1e-5, atol=1e-6)
    refined.refiner.convs[-1].weight.normal_(std=0.2)
    poked = warp.clone()
    poked[0, 1, :3, 4, 4] += 1.0  # one warp pixel of frame 1; with the warp projection at zero only the refiner sees it
    refined.warp_embed.weight.zero_()
    refined.warp_embed.bias.zero_()
    before = refined(*args, warp=warp).denoised
    change = (refined(*args, warp=poked).denoised - before).abs().sum(dim=2)[0]  # (F, H, W)
    assert change[1, 4, 4] > 1e-4
    assert change[1, 1:8, 1:8].sum() == pytest.approx(change.sum().item(), rel=1e-6)  # nothing beyond 3 pixels (7x7 field)
    assert change[1, 0].max() < 1e-6  # row 0 of the same 8x8 patch is 4 pixels away: unchanged
    assert change[0].max() < 1e-6 and change[2].max() < 1e-6  # frames are refined independently
    velocity = refined(*args, warp=warp)
    sigma = 0.5
    torch.testing.assert_close(velocity.sample, (sample - velocity.denoised) / sigma)  # the velocity is the refined estimate's
