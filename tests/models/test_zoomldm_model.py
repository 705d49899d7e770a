import pytest
import torch

from selfgen.models.zoomldm import (
    ZoomAutoencoder,
    ZoomEmbeddingDiffusion,
    ZoomLDMDenoiser,
    ZoomSSLEncoder,
    full_grid_to_tokens,
    tokens_to_full_grid,
)


def tiny_denoiser(**kwargs):
    torch.manual_seed(0)
    config = dict(sample_size=4, in_channels=4, hidden_size=32, depth=1, num_heads=2, ssl_dim=8, max_grid=2,
                  num_levels=3, summarizer_hidden=16, summarizer_depth=1, context_dim=16, image_patch_size=16)
    config.update(kwargs)
    model = ZoomLDMDenoiser(**config).eval()
    torch.nn.init.normal_(model.proj_out.weight, std=0.1)  # zero-initialised output would hide the conditioning
    for block in model.blocks:
        torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
    return model


def conditions(count, valid):
    tokens = torch.randn(count, 4, 8)
    mask = (torch.arange(4) < valid).expand(count, -1)
    return tokens, mask


def test_summarizer_handles_one_to_many_embeddings():
    model = tiny_denoiser()
    for valid, level in ((1, 0), (4, 1), (4, 2)):
        tokens, mask = conditions(3, valid)
        context = model.summarize(tokens, mask, torch.full((3,), level))
        assert context.shape == (3, 5, 16)
    tokens, mask = conditions(2, 1)
    padded = tokens.clone()
    padded[:, 1:] = 100.0  # masked-out tokens are replaced by the pad token: their values must not matter
    levels = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(model.summarize(tokens, mask, levels), model.summarize(padded, mask, levels))
    changed = tokens.clone()
    changed[:, 0] += 1
    assert not torch.allclose(model.summarize(tokens, mask, levels), model.summarize(changed, mask, levels))


def test_magnification_changes_the_prediction():
    model = tiny_denoiser()
    latents, (tokens, mask) = torch.randn(2, 4, 4, 4), conditions(2, 4)
    low = model(latents, 10, tokens, mask, torch.tensor([0, 0])).sample
    high = model(latents, 10, tokens, mask, torch.tensor([2, 2])).sample
    assert low.shape == latents.shape and (low - high).abs().mean() > 1e-4


def test_condition_dropout_uses_null_context():
    model = tiny_denoiser()
    latents, (tokens, mask) = torch.randn(2, 4, 4, 4), conditions(2, 4)
    drop = torch.tensor([True, True])
    first = model(latents, 5, tokens, mask, torch.tensor([1, 1]), drop).sample
    second = model(latents, 5, torch.randn_like(tokens), mask, torch.tensor([2, 2]), drop).sample
    torch.testing.assert_close(first, second)


def test_magnification_outside_trained_levels_is_an_error():
    model = tiny_denoiser()
    tokens, mask = conditions(1, 1)
    with pytest.raises(ValueError, match=r"trained level in \[0, 3\)"):
        model(torch.randn(1, 4, 4, 4), 1, tokens, mask, torch.tensor([3]))


def test_grid_round_trip_and_embedding_diffusion():
    tokens = torch.zeros(2, 16, 3)
    tokens[:, :4] = torch.randn(2, 4, 3)
    full = tokens_to_full_grid(tokens, level=1, max_grid=4)
    back, mask = full_grid_to_tokens(full, level=1, max_grid=4)
    torch.testing.assert_close(back, tokens)
    assert mask[0].tolist() == [True] * 4 + [False] * 12
    cdm = ZoomEmbeddingDiffusion(ssl_dim=3, max_grid=4, num_levels=2, hidden_size=16, depth=1, num_heads=2)
    assert cdm(full, torch.tensor([3, 7]), torch.tensor([0, 1])).sample.shape == (2, 16, 3)


def test_ssl_encoder_embeddings_are_normalised():
    encoder = ZoomSSLEncoder(embed_dim=8, channels=(8, 8), projection_dim=4)
    embeddings = encoder(torch.randn(5, 3, 16, 16))
    assert embeddings.shape == (5, 8) and encoder.project(embeddings).shape == (5, 4)
    torch.testing.assert_close(embeddings.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)


def test_patch_autoencoder_pca_code_is_exact_at_full_rank_and_keeps_shapes():
    torch.manual_seed(0)
    pixels = torch.rand(6, 3, 16, 16) * 2 - 1
    full = ZoomAutoencoder(latent_channels=48, factor=4, hidden=8).eval()
    full.init_from_pca(pixels)
    latents = full.encode(pixels).latent_dist.mean
    assert latents.shape == (6, 48, 4, 4)
    torch.testing.assert_close(full.decode(latents).sample, pixels, atol=1e-4, rtol=0)
    full.set_channel_scale(pixels)  # unit-scale channels, same reconstruction
    standardised = full.encode(pixels).latent_dist.mean
    torch.testing.assert_close(standardised.std((0, 2, 3)), torch.ones(48), atol=1e-4, rtol=0)
    torch.testing.assert_close(full.decode(standardised).sample, pixels, atol=1e-4, rtol=0)
    small = ZoomAutoencoder(latent_channels=4, factor=4, hidden=8).eval()
    small.init_from_pca(pixels)
    error = (small.decode(small.encode(pixels).latent_dist.mean).sample - pixels).pow(2).mean()
    assert 0 < error < pixels.var()  # a rank-4 code loses something but beats predicting the mean


def test_patch_autoencoder_latent_noise_floors_the_posterior_std_only():
    """``latent_noise`` is a floor on the posterior std in units of each channel's std (PCA init standardises the
    channels): samples carry at least that noise, the means (what the pipeline encodes) do not change."""
    torch.manual_seed(0)
    pixels = torch.rand(6, 3, 16, 16) * 2 - 1
    plain = ZoomAutoencoder(latent_channels=4, factor=4, hidden=8).eval()
    plain.init_from_pca(pixels)
    noisy = ZoomAutoencoder(latent_channels=4, factor=4, hidden=8, latent_noise=0.2).eval()
    noisy.load_state_dict(plain.state_dict())
    noisy.register_to_config(channel_scale=plain.config.channel_scale)
    exact, floored = plain.encode(pixels).latent_dist, noisy.encode(pixels).latent_dist
    torch.testing.assert_close(exact.mean.std((0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)  # standardised at init
    torch.testing.assert_close(floored.mean, exact.mean)
    assert exact.std.max() < 0.05 and floored.std.min() >= 0.2 - 1e-6
    spread = (floored.sample() - floored.mean).std()
    assert 0.15 < spread < 0.25
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latent_noise"):
            ZoomAutoencoder(latent_channels=4, factor=4, hidden=8, latent_noise=bad)


def test_patch_autoencoder_decoder_is_local():
    """No normalisation or attention: a window's decode equals the canvas decode away from its border."""
    torch.manual_seed(0)
    vae = ZoomAutoencoder(latent_channels=4, factor=2, hidden=8, pixel_hidden=4).eval()
    for module in (vae.decode_residual[-1], vae.pixel_residual[-1]):
        torch.nn.init.normal_(module.weight, std=0.3)
    canvas = torch.randn(1, 4, 16, 16)
    window = canvas[..., 2:14, 2:14].clone()  # 3 latent + 3 pixel 3x3 convs: pixels 9..14 of it see no padding
    canvas[..., :1, :] += 10.0  # far-away latents change strongly: must not reach the window's interior
    full, part = vae.decode(canvas).sample, vae.decode(window).sample
    torch.testing.assert_close(part[..., 9:15, 9:15], full[..., 13:19, 13:19], atol=1e-5, rtol=0)
    assert not torch.allclose(part[..., :2, :2], full[..., 4:6, 4:6], atol=1e-3)  # the border does see padding
