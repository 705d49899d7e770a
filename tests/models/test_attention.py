import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from selfgen.models.attention import (
    ATTENTION_BACKENDS,
    Attention,
    AttentionBackendMixin,
    attention,
    check_attention_backend,
    math_attention,
)


def _qkv(batch=2, heads=3, query_len=5, key_len=7, head_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, query_len, head_dim, generator=generator)
    key = torch.randn(batch, heads, key_len, head_dim, generator=generator)
    value = torch.randn(batch, heads, key_len, head_dim, generator=generator)
    return query, key, value


def test_sdpa_matches_math_without_mask():
    query, key, value = _qkv()
    torch.testing.assert_close(attention(query, key, value, backend="sdpa"), math_attention(query, key, value))


def test_sdpa_matches_math_with_boolean_mask():
    query, key, value = _qkv()
    mask = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[..., 0] = True  # every query keeps at least one key
    mask[..., 3] = False  # nobody may look at key 3
    expected = math_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(attention(query, key, value, attn_mask=mask, backend="sdpa"), expected)
    changed_value = value.clone()
    changed_value[:, :, 3] += 100.0
    torch.testing.assert_close(attention(query, key, changed_value, attn_mask=mask, backend="sdpa"), expected)
    assert not torch.allclose(math_attention(query, key, value), expected)


def test_sdpa_matches_math_with_additive_mask_and_causal():
    query, key, value = _qkv(query_len=6, key_len=6)
    bias = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    for kwargs in ({"is_causal": True}, {"attn_mask": bias}, {"attn_mask": bias > 0, "is_causal": True}):
        if "attn_mask" in kwargs and kwargs["attn_mask"].dtype == torch.bool:
            kwargs["attn_mask"][..., 0] = True
        torch.testing.assert_close(
            attention(query, key, value, backend="sdpa", **kwargs), math_attention(query, key, value, **kwargs)
        )


def test_causal_attention_ignores_the_future():
    query, key, value = _qkv(query_len=4, key_len=4)
    output = math_attention(query, key, value, is_causal=True)
    changed = value.clone()
    changed[:, :, -1] += 10.0
    changed_output = math_attention(query, key, changed, is_causal=True)
    torch.testing.assert_close(output[:, :, :-1], changed_output[:, :, :-1])
    assert not torch.allclose(output[:, :, -1], changed_output[:, :, -1])


def test_math_matches_explicit_softmax_formula():
    query, key, value = _qkv(batch=1, heads=1, query_len=2, key_len=3, head_dim=4)
    weights = torch.softmax(query @ key.transpose(-1, -2) / 2.0, dim=-1)
    torch.testing.assert_close(math_attention(query, key, value), weights @ value)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="attention backend must be one of"):
        check_attention_backend("flash9")
    with pytest.raises(ValueError, match="attention backend must be one of"):
        attention(*_qkv(), backend="flash9")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_xformers_backend_is_refused_without_cuda():
    with pytest.raises(ValueError, match="xformers"):
        check_attention_backend("xformers")


class _TinyModel(AttentionBackendMixin, torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attention = Attention(16, num_heads=2)
        self.cross_attention = Attention(16, num_heads=4, context_dim=12)

    def forward(self, hidden_states, context):
        hidden_states = hidden_states + self.self_attention(hidden_states)
        return hidden_states + self.cross_attention(hidden_states, context)


def test_attention_module_backends_agree_and_switch():
    torch.manual_seed(0)
    model = _TinyModel()
    hidden_states, context = torch.randn(2, 5, 16), torch.randn(2, 3, 12)
    outputs = {}
    for backend in ("sdpa", "math"):
        model.set_attention_backend(backend)
        assert {model.self_attention.backend, model.cross_attention.backend} == {backend}
        outputs[backend] = model(hidden_states, context)
    assert outputs["sdpa"].shape == (2, 5, 16)
    torch.testing.assert_close(outputs["sdpa"], outputs["math"])
    assert set(ATTENTION_BACKENDS) == {"sdpa", "xformers", "math"}


def test_attention_dim_must_divide_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        Attention(10, num_heads=3)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 4),
    query_len=st.integers(1, 9),
    key_len=st.integers(1, 9),
    head_dim=st.sampled_from([4, 8, 16]),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sdpa_matches_math_on_random_shapes(batch, heads, query_len, key_len, head_dim, use_mask, seed):
    query, key, value = _qkv(batch, heads, query_len, key_len, head_dim, seed)
    mask = None
    if use_mask:
        mask = torch.rand(batch, 1, query_len, key_len, generator=torch.Generator().manual_seed(seed)) > 0.5
        mask[..., 0] = True
    torch.testing.assert_close(
        attention(query, key, value, attn_mask=mask, backend="sdpa"), math_attention(query, key, value, attn_mask=mask)
    )
