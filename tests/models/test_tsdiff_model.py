import pytest
import torch

from selfgen.models.tsdiff import S4DConvolution, TSDiffModel, compute_scaling, lagged_window


def tiny_model(**overrides) -> TSDiffModel:
    config = dict(
        context_length=12, prediction_length=4, lags_seq=[3], hidden_dim=16,
        num_residual_blocks=2, state_dim=8, step_embedding_dim=16,
    )
    config.update(overrides)
    torch.manual_seed(0)
    return TSDiffModel(**config)


def test_output_shape_and_channels():
    model = tiny_model()
    sample = torch.randn(3, 16, 2)
    assert model(sample, torch.tensor([0, 5, 99])).sample.shape == (3, 16, 2)
    assert model(sample, 7).sample.shape == (3, 16, 2)  # one step for the whole batch


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(batch, length, 2\)"):
        tiny_model()(torch.randn(3, 16, 1), 0)


def test_lagged_window_places_lagged_values():
    history = torch.arange(10.0)[None]  # max lag 3 + window 7
    window = lagged_window(history, [1, 3], 7)
    assert window.shape == (1, 7, 3)
    assert window[0, :, 0].tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert window[0, :, 1].tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert window[0, :, 2].tolist() == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="max\\(lags\\) \\+ window_length = 10"):
        lagged_window(history[:, 1:], [1, 3], 7)


def test_compute_scaling_mean_and_standard_ignore_unobserved():
    values = torch.tensor([[1.0, -3.0, 100.0, 2.0]])
    observed = torch.tensor([[True, True, False, True]])
    loc, scale = compute_scaling(values, observed, "mean")
    assert loc.item() == 0.0 and scale.item() == pytest.approx(2.0)
    loc, scale = compute_scaling(values, observed, "standard")
    assert loc.item() == pytest.approx(0.0)
    assert scale.item() == pytest.approx(torch.tensor([1.0, -3.0, 2.0]).std(unbiased=False).item())
    _, scale = compute_scaling(torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), "standard")
    assert scale.item() == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="scaling must be one of"):
        compute_scaling(values, observed, "max")


def test_s4d_matrix_is_the_bidirectional_convolution():
    torch.manual_seed(0)
    layer = S4DConvolution(4, 8)
    length = 7
    kernel, matrix = layer.kernel(length), layer.convolution_matrix(length)
    u = torch.randn(2, 4, length)
    expected = torch.zeros(2, 4, length)
    for i in range(length):
        for j in range(length):
            if i >= j:
                expected[:, :, i] += kernel[0, :, i - j] * u[:, :, j]
            if j >= i:
                expected[:, :, i] += kernel[1, :, j - i] * u[:, :, j]
    torch.testing.assert_close(torch.einsum("bhj,hij->bhi", u, matrix), expected, atol=1e-5, rtol=1e-5)


def test_denoiser_sees_past_and_future():
    model = tiny_model()
    sample = torch.randn(1, 16, 2, requires_grad=True)
    model(sample, 10).sample[0, 0, 0].backward()
    assert sample.grad[0, 8:].abs().sum() > 0  # the first step depends on later steps (bidirectional)


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = TSDiffModel.from_pretrained(tmp_path)
    sample = torch.randn(2, 16, 2)
    torch.testing.assert_close(model(sample, 3).sample, loaded(sample, 3).sample)
    assert loaded.lags == [3] and loaded.window_length == 16


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="lags_seq must hold positive"):
        tiny_model(lags_seq=[0])
    with pytest.raises(ValueError, match="scaling must be one of"):
        tiny_model(scaling="minmax")
