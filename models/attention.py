"""One attention function for every selfgen model, with switchable backends.

Backends
--------
``sdpa``      ``torch.nn.functional.scaled_dot_product_attention`` (default; flash / memory-efficient
              kernels on CUDA, fused kernels on CPU).
``xformers``  ``xformers.ops.memory_efficient_attention`` (needs ``pip install selfgen[xformers]`` and CUDA tensors).
``math``      the reference ``softmax(Q K^T / sqrt(d) + bias) V`` written out in PyTorch.

All backends take tensors laid out as ``(batch, heads, seq_len, head_dim)`` and an optional mask
that is either boolean (``True`` = may attend) or additive float, broadcastable to
``(batch, heads, query_len, key_len)``.

Models pick a backend per :class:`Attention` module; ``model.set_attention_backend(name)`` (from
:class:`AttentionBackendMixin`) switches every attention module of a model, and the diffusers
``enable_xformers_memory_efficient_attention()`` call reaches our modules through
:meth:`Attention.set_use_memory_efficient_attention_xformers`.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_BACKENDS = ("sdpa", "xformers", "math")
DEFAULT_ATTENTION_BACKEND = "sdpa"


def xformers_is_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def check_attention_backend(backend: str) -> str:
    """Validate ``backend`` and return it, raising a clear error when it cannot run here."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "xformers":
        if not xformers_is_installed():
            raise ValueError(
                "attention backend 'xformers' requested but xformers is not installed: "
                "`pip install selfgen[xformers]` (its kernels need a CUDA GPU)"
            )
        if not torch.cuda.is_available():
            raise ValueError(
                "attention backend 'xformers' requested but no CUDA device is available: xformers kernels "
                "run only on CUDA; use backend 'sdpa' on CPU"
            )
    return backend


def _to_additive_bias(attn_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
        return bias.masked_fill(~attn_mask, float("-inf"))
    return attn_mask.to(dtype)


def _causal_bias(query_len: int, key_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Upper-left aligned causal mask, as ``scaled_dot_product_attention(is_causal=True)`` uses."""
    allowed = torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril()
    return _to_additive_bias(allowed, dtype)


def math_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference attention: ``softmax(Q K^T * scale + bias) V`` computed in float32."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = torch.matmul(query.float(), key.float().transpose(-2, -1)) * scale
    if is_causal:
        scores = scores + _causal_bias(query.shape[-2], key.shape[-2], scores.dtype, scores.device)
    if attn_mask is not None:
        scores = scores + _to_additive_bias(attn_mask, scores.dtype)
    return torch.matmul(scores.softmax(dim=-1), value.float()).to(query.dtype)


def _xformers_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None,
) -> torch.Tensor:
    import xformers.ops as xops

    if not query.is_cuda:
        raise ValueError("attention backend 'xformers' needs CUDA tensors; got tensors on " f"{query.device}")
    batch, heads, query_len, _ = query.shape
    key_len = key.shape[-2]
    bias = None
    if is_causal:
        bias = _causal_bias(query_len, key_len, query.dtype, query.device)
    if attn_mask is not None:
        mask_bias = _to_additive_bias(attn_mask, query.dtype)
        bias = mask_bias if bias is None else bias + mask_bias
    if bias is not None:
        bias = bias.expand(batch, heads, query_len, key_len)
    # xformers expects (batch, seq_len, heads, head_dim).
    output = xops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias, scale=scale
    )
    return output.transpose(1, 2)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    backend: str = DEFAULT_ATTENTION_BACKEND,
) -> torch.Tensor:
    """Scaled dot-product attention ``softmax(Q K^T / sqrt(d)) V`` on the chosen backend.

    Args:
        query, key, value: ``(batch, heads, seq_len, head_dim)``.
        attn_mask: boolean (``True`` = attend) or additive float mask, broadcastable to
            ``(batch, heads, query_len, key_len)``.
        is_causal: apply an upper-left aligned causal mask (combined with ``attn_mask`` if both are given).
        scale: logit scale, ``1/sqrt(head_dim)`` by default.
        backend: one of :data:`ATTENTION_BACKENDS`.
    """
    if backend == "sdpa":
        if is_causal and attn_mask is not None:
            attn_mask = _to_additive_bias(attn_mask, query.dtype) + _causal_bias(
                query.shape[-2], key.shape[-2], query.dtype, query.device
            )
            is_causal = False
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    if backend == "math":
        return math_attention(query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    if backend == "xformers":
        return _xformers_attention(query, key, value, attn_mask, is_causal, scale)
    raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")


class Attention(nn.Module):
    """Multi-head self- or cross-attention with q/k/v/out projections.

    ``forward(hidden_states, context=None, attn_mask=None)``: keys and values come from ``context``
    when given (cross-attention) and from ``hidden_states`` otherwise. Inputs are ``(batch, seq, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        is_causal: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim ({dim}) must be divisible by num_heads ({num_heads})")
        context_dim = dim if context_dim is None else context_dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.is_causal = is_causal
        self.backend = DEFAULT_ATTENTION_BACKEND
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.norm_q = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.norm_k = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)

    def _split_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        batch, seq_len, _ = tensor.shape
        return tensor.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = hidden_states if context is None else context
        query = self.norm_q(self._split_heads(self.to_q(hidden_states)))
        key = self.norm_k(self._split_heads(self.to_k(context)))
        value = self._split_heads(self.to_v(context))
        output = attention(query, key, value, attn_mask=attn_mask, is_causal=self.is_causal, backend=self.backend)
        batch, _, seq_len, _ = output.shape
        return self.to_out(output.transpose(1, 2).reshape(batch, seq_len, -1))

    def set_attention_backend(self, backend: str) -> None:
        self.backend = check_attention_backend(backend)

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op=None) -> None:
        """Hook called by diffusers' ``enable/disable_xformers_memory_efficient_attention``."""
        self.set_attention_backend("xformers" if valid else DEFAULT_ATTENTION_BACKEND)


class AttentionBackendMixin:
    """Adds ``set_attention_backend(name)`` to a model: switches every :class:`Attention` inside it.

    List it before ``ModelMixin`` in the bases so it takes precedence over diffusers' own
    ``set_attention_backend``, which only knows diffusers' attention classes.
    """

    def set_attention_backend(self, backend: str) -> None:
        check_attention_backend(backend)
        for module in self.modules():
            if isinstance(module, Attention):
                module.set_attention_backend(backend)
