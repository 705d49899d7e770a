import pytest
import torch

from selfgen import DDAETransformer2DModel

TINY = dict(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2)


def randomised(**overrides) -> DDAETransformer2DModel:
    """A tiny model with every weight random (adaLN-Zero would otherwise make the output identically zero)."""
    torch.manual_seed(0)
    model = DDAETransformer2DModel(**{**TINY, **overrides})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model.eval()


def inputs(batch: int = 3, channels: int = 1, size: int = 8):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, channels, size, size, generator=generator), torch.tensor([10, 400, 900][:batch])


def test_self_conditioning_path_is_the_only_difference_from_the_ablation():
    with_sc = randomised(self_conditioning=True)
    without = DDAETransformer2DModel(**TINY, self_conditioning=False).eval()
    shared = {k: v for k, v in with_sc.state_dict().items() if not k.startswith("self_condition_embed")}
    without.load_state_dict(shared)  # strict: the ablation has exactly the other weights
    sample, timesteps = inputs()
    with torch.no_grad():
        out_sc, out_plain = with_sc(sample, timesteps).sample, without(sample, timesteps).sample
        assert not torch.allclose(out_sc, out_plain, atol=1e-3)
        with_sc.self_condition_embed[1].weight.zero_()
        with_sc.self_condition_embed[1].bias.zero_()
        torch.testing.assert_close(with_sc(sample, timesteps).sample, out_plain)


def test_injection_starts_at_zero_so_the_model_equals_its_ablation():
    torch.manual_seed(0)
    model = DDAETransformer2DModel(**TINY, self_conditioning=True).eval()
    projection = model.self_condition_embed[1]
    assert not projection.weight.any() and not projection.bias.any()  # initialised to exact zeros
    with torch.no_grad():  # every other weight random, so the comparison is not the trivial 0 == 0 of adaLN-Zero
        for name, parameter in model.named_parameters():
            if not name.startswith("self_condition_embed.1"):
                parameter.normal_(0, 0.2)
    ablation = DDAETransformer2DModel(**TINY, self_conditioning=False).eval()
    ablation.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("self_condition_embed")})
    sample, timesteps = inputs()
    with torch.no_grad():
        output = model(sample, timesteps)
        assert output.sample.abs().mean() > 0.1
        torch.testing.assert_close(output.sample, ablation(sample, timesteps).sample)
        torch.testing.assert_close(output.injection, torch.zeros(3, 32))
        assert ablation(sample, timesteps).injection is None


def test_trained_projection_makes_the_decoder_depend_on_the_pooled_semantics():
    """From the zero start, a few denoising steps grow W_s, and the decoder's output then differs from the
    ablation with the same other weights by more than float tolerance."""
    torch.manual_seed(0)
    model = DDAETransformer2DModel(**TINY, self_conditioning=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(2)
    for _ in range(15):
        clean = torch.randn(8, 1, 8, 8, generator=generator)
        noise = torch.randn(8, 1, 8, 8, generator=generator)
        timesteps = torch.randint(0, 1000, (8,), generator=generator)
        loss = (model(clean + noise, timesteps).sample - noise).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert model.self_condition_embed[1].weight.abs().max() > 1e-3
    ablation = DDAETransformer2DModel(**TINY, self_conditioning=False).eval()
    ablation.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("self_condition_embed")})
    sample, timesteps = inputs()
    with torch.no_grad():
        difference = (model(sample, timesteps).sample - ablation(sample, timesteps).sample).abs().max()
    assert difference > 1e-3


def test_self_condition_embedding_receives_gradient_and_semantic_is_the_pooled_encoder_output():
    model = randomised(self_condition_layer=2)
    sample, timesteps = inputs()
    output = model(sample, timesteps)
    output.sample.square().mean().backward()
    assert model.self_condition_embed[1].weight.grad.abs().sum() > 0
    assert output.semantic.requires_grad  # no stop-gradient on z
    pooled = model.pooled_features(sample, timesteps, (2, 4))
    torch.testing.assert_close(pooled[2], output.semantic.detach())
    assert pooled[4].shape == (3, 32)


def test_shapes_and_timestep_forms():
    model = randomised()
    sample, _ = inputs()
    with torch.no_grad():
        scalar = model(sample, 400).sample
        vector = model(sample, torch.full((3,), 400)).sample
    assert scalar.shape == sample.shape
    torch.testing.assert_close(scalar, vector)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 1, 16, 16), (1, 8, 8)])
def test_wrong_image_size_or_channels_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"sample must have shape \(batch, 1, 8, 8\)"):
        randomised()(torch.zeros(shape), 10)


def test_class_conditional_labels_change_the_output_and_null_label_is_default():
    model = randomised(num_classes=3)
    sample, timesteps = inputs()
    with torch.no_grad():
        zero = model(sample, timesteps, torch.tensor([0, 0, 0])).sample
        two = model(sample, timesteps, torch.tensor([2, 2, 2])).sample
        null = model(sample, timesteps, torch.tensor([3, 3, 3])).sample
        default = model(sample, timesteps).sample
    assert not torch.allclose(zero, two)
    torch.testing.assert_close(null, default)
    with pytest.raises(ValueError, match="unconditional"):
        randomised()(sample, timesteps, torch.tensor([0, 0, 0]))


def test_bad_config_and_layers_are_clear_errors():
    with pytest.raises(ValueError, match="self_condition_layer"):
        DDAETransformer2DModel(**TINY, self_condition_layer=4)
    with pytest.raises(ValueError, match="patch_size"):
        DDAETransformer2DModel(**{**TINY, "patch_size": 3})
    with pytest.raises(ValueError, match="layers"):
        randomised().pooled_features(inputs()[0], 10, (5,))
    with pytest.raises(ValueError, match="projection_dim"):
        randomised().project(torch.zeros(2, 32))


def test_save_and_reload_is_exact(tmp_path):
    model = randomised(projection_dim=8)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = DDAETransformer2DModel.from_pretrained(tmp_path).eval()
    sample, timesteps = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(sample, timesteps).sample, reloaded(sample, timesteps).sample)
        assert reloaded.project(model(sample, timesteps).semantic).shape == (3, 8)


def test_attention_backends_agree():
    model = randomised()
    sample, timesteps = inputs()
    with torch.no_grad():
        reference = model(sample, timesteps).sample
        model.set_attention_backend("math")
        torch.testing.assert_close(model(sample, timesteps).sample, reference, atol=1e-5, rtol=1e-4)


def random_except_option(prefix: str, **option) -> DDAETransformer2DModel:
    """A tiny model built with ``option`` whose weights are random except the option's own (named ``prefix*``),
    checked to equal the plain model (the same weights without the option), which it returns beside it."""
    torch.manual_seed(0)
    model = DDAETransformer2DModel(**TINY, **option).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith(prefix):
                parameter.normal_(0, 0.2)
    plain = DDAETransformer2DModel(**TINY).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(prefix)})
    sample, timesteps = inputs()
    with torch.no_grad():
        output = model(sample, timesteps).sample
        assert output.abs().mean() > 0.1
        torch.testing.assert_close(output, plain(sample, timesteps).sample)
    return model


def test_long_skips_start_as_no_ops_and_connect_mirrored_blocks():
    """U-ViT long skips: block i < L feeds block depth + 1 - i; W_skip = [I | 0] makes the model equal to the
    one without skips (every other weight random), and a non-zero skip half changes the output."""
    assert DDAETransformer2DModel(**{**TINY, "depth": 6}, self_condition_layer=3, long_skips=True).skip_sources == {
        6: 1, 5: 2
    }
    model = random_except_option("skip_linears", long_skips=True)
    sample, timesteps = inputs()
    with torch.no_grad():
        output = model(sample, timesteps).sample
        model.skip_linears["4"].weight[:, 32:].normal_(0, 0.2)
        assert not torch.allclose(model(sample, timesteps).sample, output, atol=1e-3)


def test_final_conv_starts_as_the_identity_and_mixes_neighbouring_patches_once_trained():
    """U-ViT's output 3x3 conv: freshly built, the prediction is 0 (zero final linear) with or without it; with every
    other weight random, the Dirac start makes the model equal to the one without the conv; a trained (non-identity)
    kernel changes the output, and a pixel's prediction then depends on the neighbouring patch's tokens."""
    fresh = DDAETransformer2DModel(**TINY, final_conv=True).eval()
    sample, timesteps = inputs()
    with torch.no_grad():
        assert not fresh(sample, timesteps).sample.any()
    model = random_except_option("output_conv", final_conv=True)
    with torch.no_grad():
        output = model(sample, timesteps).sample
        model.output_conv.weight.fill_(1 / 9)  # a box blur: pixels now mix across patch borders
        blurred = model(sample, timesteps).sample
        torch.testing.assert_close(blurred, torch.nn.functional.avg_pool2d(output, 3, 1, 1, count_include_pad=True))
        assert not torch.allclose(blurred, output, atol=1e-3)
    assert sum(p.numel() for p in model.output_conv.parameters()) == 10  # 1 -> 1 channel, 3x3 + bias
    uvit = DDAETransformer2DModel(**TINY, final_conv=True, final_conv_init="uvit").eval()  # U-ViT's random kernel
    assert (uvit.output_conv.weight.flatten() != torch.nn.init.dirac_(torch.empty(1, 1, 3, 3)).flatten()).all()
    with torch.no_grad():
        assert not uvit(sample, timesteps).sample.any()  # still 0 at step 0: zero final linear, zero bias
    with pytest.raises(ValueError, match="final_conv_init"):
        DDAETransformer2DModel(**TINY, final_conv=True, final_conv_init="dirac")


def test_centering_starts_at_zero_tracks_bucket_means_and_injects_only_the_per_image_part():
    """self_condition_centering=K: W_s still starts at zero (the model equals its ablation); in training mode
    each visited t-bucket's running mean starts at that batch's mean of LN(z) and then moves by the momentum;
    in eval mode the buffers are read, not updated, and an input whose LN(z) equals its bucket's mean gets a
    zero injection's worth of W_s (only the bias), i.e. the shared part of LN(z) is removed."""
    torch.manual_seed(0)
    model = DDAETransformer2DModel(**TINY, self_condition_centering=4, centering_momentum=0.5)
    ablation = DDAETransformer2DModel(**TINY, self_conditioning=False)
    ablation.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("self_condition_embed", "semantic_mean"))})
    sample = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    timesteps = torch.tensor([10, 20, 600, 999])  # buckets 0, 0, 2, 3
    with torch.no_grad():
        torch.testing.assert_close(model(sample, timesteps).sample, ablation(sample, timesteps).sample)
        normalized = model.self_condition_embed[0](model(sample, timesteps).semantic)
    assert model.semantic_mean_seen.tolist() == [True, False, True, True]
    torch.testing.assert_close(model.semantic_mean[0], normalized[:2].mean(0))  # first visit: the batch mean
    torch.testing.assert_close(model.semantic_mean[3], normalized[3])
    assert not model.semantic_mean[1].any()
    shifted = torch.full_like(normalized[3], 2.0)
    model.semantic_mean[3] = shifted
    with torch.no_grad():
        model(sample[3:], timesteps[3:])
    torch.testing.assert_close(model.semantic_mean[3], 0.5 * shifted + 0.5 * normalized[3])  # momentum 0.5
    model.eval()
    frozen = model.semantic_mean.clone()
    with torch.no_grad():
        model.self_condition_embed[1].weight.normal_(0, 0.5)
        model.semantic_mean[2] = normalized[2]
        injection = model(sample[2:3], timesteps[2:3]).injection  # LN(z) equals its bucket mean
        torch.testing.assert_close(injection[0], model.self_condition_embed[1].bias)
        assert torch.equal(model.semantic_mean, torch.cat([frozen[:2], normalized[2:3], frozen[3:]]))
        moved = model(sample[:1], timesteps[2:3]).injection  # another image in the same bucket
        assert (moved - injection).abs().max() > 1e-2
    with pytest.raises(ValueError, match="self_condition_centering"):
        DDAETransformer2DModel(**TINY, self_conditioning=False, self_condition_centering=4)
    with pytest.raises(ValueError, match="centering_momentum"):
        DDAETransformer2DModel(**TINY, self_condition_centering=4, centering_momentum=1.0)
