"""DDAE++ (Xiang et al., 2025): a self-conditioned diffusion transformer (DiT backbone).

The backbone is a DiT (Peebles & Xie, 2023): patchify ``x_t`` into ``N`` tokens, add fixed 2-D sin-cos
positions, run ``depth`` adaLN-Zero blocks conditioned on ``c = emb(t) [+ emb(y)]``, then an adaLN
final layer that un-patchifies the noise prediction ``eps_theta(x_t, t)``. Each block computes::

    (a1, b1, g1, a2, b2, g2) = W_mod SiLU(c)                      (W_mod zero-initialised)
    h <- h + g1 * Attn(LN(h) * (1 + a1) + b1)
    h <- h + g2 * MLP(LN(h) * (1 + a2) + b2)

**Self-conditioning** (DDAE++): the blocks are split into an encoder (blocks ``1..L``) and a decoder
(blocks ``L+1..depth`` and the final layer), ``L = self_condition_layer`` (default ``depth // 2``, the
layer where a plain DiT's linear probe peaks). The encoder's output tokens are globally average pooled
into a semantic vector ``z``, which is embedded and added to the condition of every decoding layer::

    z  = mean_n h_L[n]                         (global average pooling over tokens)
    c' = c + W_s LN(z)                          (no stop-gradient: the decoder's loss trains the encoder through z)
    h_l = Block_l(h_{l-1}, c')  for l > L,      eps = Final(h_depth, c')

so the decoder is conditioned on semantics the network reads from its own input. The extra cost is
one pooling and one ``hidden x hidden`` linear per sample (about 1% of a forward pass).
``W_s`` (weight and bias) starts at zero, so at step 0 ``c' = c`` and the self-conditioned model computes
exactly what the ablation computes; the semantic term grows only as far as the loss asks for it.
(Without this, ``W_s LN(z)`` started about 3x larger than ``emb(t)``. Measured with it, the term still
grows to the size of ``emb(t)`` within ~100 steps and stays over 97% shared by all images, because the
pooled ``LN(z)`` itself varies little between images at this scale; see docs/ddae.md.)
``self_conditioning=False`` gives the plain DiT with otherwise identical weights (the ablation).

``self_condition_centering=K > 0`` (a departure, off by default) injects only what differs from the mean at ``t``::

    c' = c + W_s (LN(z) - mu_k),   mu_k = running mean of LN(z) over training inputs whose t is in bucket k

(``K`` equal buckets of ``[0, 1000)``; ``mu_k`` a buffer, not a parameter, updated with momentum
``centering_momentum`` in training mode, without gradient). Measured cause it addresses: ``LN(z)`` is 92% one
vector shared by all images (textures, validation crops), so the gradient of the zero-initialised ``W_s``,
``sum_b g_b LN(z_b)^T``, is nearly rank one along that shared vector; ``W_s`` trained that way is 96-99% one
singular direction (cosine 0.90-0.95 with the mean ``LN(z)``) and passes the per-image part of ``LN(z)`` at
a sixth to an eighth of the gain of the shared part, so the injection becomes a timestep code. Centering removes the shared
and timestep-dependent parts before ``W_s``; ``W_s`` still starts at zero (``c' = c`` at step 0).

``long_skips=True`` adds U-ViT's long skip connections (Bao et al., 2023; DDAE++ uses U-ViT for pixel-space
models): block ``i < L`` hands its tokens to block ``depth + 1 - i``, which first mixes them in,
``h <- W_skip [h ; h_i]`` (U-ViT's concatenation + linear), so fine detail from the first blocks reaches the
last ones without passing through the bottleneck ``L`` (U-ViT's middle block). Departure: ``W_skip`` starts
at ``[I | 0]`` (U-ViT: random), so at step 0 the model equals the DiT without skips.
``final_conv=True`` adds U-ViT's output convolution (``conv=True``, the default of ``UViT`` in the official
libs/uvit.py): a ``C -> C`` 3x3 convolution (padding 1) on the un-patchified prediction, ``eps = Conv3x3(unpatchify(Final(h, c')))``,
so pixels of neighbouring patches are mixed (the per-token linear alone never smooths across a patch border).
The bias starts at 0 (U-ViT: PyTorch's default random bias), so with the zero-initialised final linear the prediction
is 0 at step 0 whatever the kernel. The kernel: ``final_conv_init="identity"`` (default; a departure) starts it as the
identity (Dirac: centre tap 1 per channel, 0 elsewhere), which also makes the first gradients equal to the model's
without the convolution; ``"uvit"`` keeps PyTorch's default (Kaiming-uniform) kernel, as U-ViT does.
With ``num_classes > 0`` the model is class-conditional, ``c = emb(t) + E[y]``, where label
``num_classes`` is the null class used for classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import Attention, AttentionBackendMixin

FINAL_CONV_INITS = ("identity", "uvit")  # the output conv's kernel: Dirac, or PyTorch's default as in U-ViT
PERTURBATIONS = ("attention", "skip")  # self-guidance's degraded branch: identity attention map (PAG) or skipped block (SLG)


@dataclass
class DDAETransformerOutput(BaseOutput):
    """``sample``: the noise prediction ``(B, C, H, W)``; ``semantic``: the pooled encoder features ``z`` ``(B, D)``
    at ``self_condition_layer`` (computed with or without self-conditioning; the contrastive term uses it);
    ``injection``: the term ``W_s LN(z)`` added to the decoder's condition ``(B, D)`` (``None`` for the ablation)."""

    sample: torch.Tensor
    semantic: torch.Tensor | None = None
    injection: torch.Tensor | None = None


def modulate(hidden: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``h * (1 + scale) + shift`` with per-sample ``(B, D)`` shift and scale."""
    return hidden * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning (see the module docstring)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qk_norm=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        inner = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden_size)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, hidden: torch.Tensor, cond: torch.Tensor, perturbation: str | None = None) -> torch.Tensor:
        """The block; ``perturbation`` (one of :data:`PERTURBATIONS`, for self-guidance's degraded branch)
        replaces the attention map by the identity (``"attention"``: ``Attn(x) = W_o W_v x``, PAG) or
        skips the whole block (``"skip"``: ``h -> h``, SLG)."""
        if perturbation == "skip":
            return hidden
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).chunk(6, dim=-1)
        attended = modulate(self.norm1(hidden), shift1, scale1)
        if perturbation == "attention":  # each token attends only to itself: softmax(QK^T) -> I
            attended = self.attn.to_out(self.attn.to_v(attended))
        else:
            attended = self.attn(attended)
        hidden = hidden + gate1[:, None] * attended
        return hidden + gate2[:, None] * self.mlp(modulate(self.norm2(hidden), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a linear map from each token to its ``patch x patch x C`` pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, hidden: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(hidden), shift, scale))


class DDAETransformer2DModel(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """Self-conditioned DiT for ``(B, in_channels, sample_size, sample_size)`` images.

    Args:
        sample_size, patch_size, in_channels: image side, patch side (must divide it), channels.
        hidden_size, depth, num_heads, mlp_ratio: transformer width, number of blocks, heads, MLP ratio.
        self_conditioning: route pooled encoder features into the decoder's condition (DDAE++).
        self_condition_layer: ``L``, the last encoder block (1-based); default ``depth // 2``.
        num_classes: ``0`` for unconditional; else class-conditional with a null label for CFG.
        projection_dim: ``> 0`` adds the projection head used by contrastive self-distillation.
        feature_layer, feature_timestep: defaults of ``DDAEPipeline.extract_features`` (layer ``None``
            means ``self_condition_layer``).
        self_condition_centering: ``K > 0`` subtracts the running mean of ``LN(z)`` in ``K`` timestep buckets
            of ``[0, 1000)`` before ``W_s`` (see the module docstring); ``0`` injects ``W_s LN(z)``.
        centering_momentum: ``mu_k <- m mu_k + (1 - m) mean_batch`` per visit of bucket ``k`` (first visit: copy).
        final_conv: U-ViT's 3x3 output convolution on the un-patchified prediction (see the module docstring).
        final_conv_init: its kernel's start, ``"identity"`` (Dirac) or ``"uvit"`` (PyTorch's default, as U-ViT).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 1,
        hidden_size: int = 96,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        self_conditioning: bool = True,
        self_condition_layer: int | None = None,
        num_classes: int = 0,
        projection_dim: int = 0,
        feature_layer: int | None = None,
        feature_timestep: int = 0,
        long_skips: bool = False,
        self_condition_centering: int = 0,
        centering_momentum: float = 0.95,
        final_conv: bool = False,
        final_conv_init: str = "identity",
    ) -> None:
        super().__init__()
        if sample_size % patch_size != 0:
            raise ValueError(f"patch_size ({patch_size}) must divide sample_size ({sample_size})")
        self.self_condition_layer = depth // 2 if self_condition_layer is None else self_condition_layer
        if not 1 <= self.self_condition_layer < depth:
            raise ValueError(
                f"self_condition_layer must be in [1, depth - 1] = [1, {depth - 1}], got {self_condition_layer}"
            )
        if self_condition_centering < 0 or (self_condition_centering and not self_conditioning):
            raise ValueError(
                f"self_condition_centering must be 0, or > 0 with self_conditioning=True, got {self_condition_centering}"
            )
        if final_conv_init not in FINAL_CONV_INITS:
            raise ValueError(f"final_conv_init must be one of {FINAL_CONV_INITS}, got {final_conv_init!r}")
        if not 0.0 <= centering_momentum < 1.0:
            raise ValueError(f"centering_momentum must be in [0, 1), got {centering_momentum}")
        self.feature_layer = self.self_condition_layer if feature_layer is None else feature_layer
        if not 1 <= self.feature_layer <= depth:
            raise ValueError(f"feature_layer must be in [1, depth] = [1, {depth}], got {feature_layer}")
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        grid = sample_size // patch_size
        pos = get_2d_sincos_pos_embed(hidden_size, grid, base_size=grid, output_type="pt")
        self.register_buffer("pos_embed", pos.float()[None], persistent=False)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, hidden_size)
        self.class_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.self_condition_embed = (
            nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, hidden_size)) if self_conditioning else None
        )
        if self_condition_centering:
            self.register_buffer("semantic_mean", torch.zeros(self_condition_centering, hidden_size))
            self.register_buffer("semantic_mean_seen", torch.zeros(self_condition_centering, dtype=torch.bool))
        self.skip_sources = (
            {depth + 1 - i: i for i in range(1, self.self_condition_layer) if depth + 1 - i > self.self_condition_layer}
            if long_skips
            else {}
        )
        self.skip_linears = nn.ModuleDict({str(j): nn.Linear(2 * hidden_size, hidden_size) for j in self.skip_sources})
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        self.output_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1) if final_conv else None
        self.projection_head = (
            nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, projection_dim))
            if projection_dim > 0
            else None
        )
        self._zero_init_modulations()

    def _zero_init_modulations(self) -> None:
        """adaLN-Zero: every block starts as the identity and the output as zero (DiT's initialisation); the
        self-conditioning projection ``W_s`` starts at zero too; the long skips start as ``[I | 0]`` and the optional
        output convolution with a zero bias (and, by default, an identity kernel)."""
        for module in [*(block.modulation for block in self.blocks), self.final_layer.modulation]:
            nn.init.zeros_(module[-1].weight)
            nn.init.zeros_(module[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.self_condition_embed is not None:  # the injection starts at zero: c' = c at step 0
            nn.init.zeros_(self.self_condition_embed[-1].weight)
            nn.init.zeros_(self.self_condition_embed[-1].bias)
        for skip in self.skip_linears.values():  # [I | 0]: the long skips start as no-ops
            width = skip.out_features
            with torch.no_grad():
                skip.weight.copy_(torch.cat([torch.eye(width), torch.zeros(width, width)], dim=1))
            nn.init.zeros_(skip.bias)
        if self.output_conv is not None:  # zero bias: the output is 0 at step 0; identity (Dirac) or default kernel
            nn.init.zeros_(self.output_conv.bias)
            if self.config.final_conv_init == "identity":
                nn.init.dirac_(self.output_conv.weight)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def check_sample(self, sample: torch.Tensor, name: str = "sample") -> None:
        """Raise a ``ValueError`` naming ``name`` unless it is ``(B, in_channels, sample_size, sample_size)``."""
        config = self.config
        expected = (config.in_channels, config.sample_size, config.sample_size)
        if sample.ndim != 4 or tuple(sample.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, expected))}), got {tuple(sample.shape)}")

    def check_perturbation(self, perturbed_layers, perturbation: str) -> None:
        """Refuse a degraded branch that names no valid block or an unknown kind."""
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
        layers = list(perturbed_layers)
        if any(not isinstance(layer, int) or not 1 <= layer <= self.config.depth for layer in layers):
            raise ValueError(f"perturbed_layers must be block indices in [1, {self.config.depth}], got {layers}")

    def _timesteps(self, timestep: torch.Tensor | float, batch: int) -> torch.Tensor:
        return torch.as_tensor(timestep, device=self.pos_embed.device).reshape(-1).expand(batch)

    def _condition(self, timestep: torch.Tensor | float, class_labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``c = emb(t) [+ E[y]]``; missing labels of a class-conditional model mean the null class."""
        timestep = self._timesteps(timestep, batch)
        cond = self.time_embed(self.time_proj(timestep).to(self.pos_embed.dtype))
        if self.class_embed is None:
            if class_labels is not None:
                raise ValueError("class_labels given to an unconditional model (num_classes=0)")
            return cond
        if class_labels is None:
            class_labels = torch.full((batch,), self.null_class, device=cond.device, dtype=torch.long)
        return cond + self.class_embed(class_labels.reshape(-1).expand(batch))

    def _embed(self, sample: torch.Tensor) -> torch.Tensor:
        self.check_sample(sample)
        return self.patch_embed(sample).flatten(2).transpose(1, 2) + self.pos_embed.to(sample.dtype)

    def _semantic_mean(self, normalized: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``mu_k`` of each row's timestep bucket ``k``; in training mode the visited buckets first move toward
        this batch's bucket means of ``normalized`` (no gradient)."""
        buckets_count = self.config.self_condition_centering
        buckets = (timesteps.float() * buckets_count / 1000).long().clamp(0, buckets_count - 1)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(buckets, minlength=buckets_count)
                sums = torch.zeros_like(self.semantic_mean).index_add_(0, buckets, normalized.detach().float())
                visited = counts > 0
                batch_mean = sums[visited] / counts[visited, None]
                moved = torch.lerp(batch_mean, self.semantic_mean[visited], self.config.centering_momentum)
                self.semantic_mean[visited] = torch.where(self.semantic_mean_seen[visited, None], moved, batch_mean)
                self.semantic_mean_seen[visited] = True
        return self.semantic_mean[buckets].to(normalized.dtype)

    def _self_condition(self, semantic: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``W_s LN(z)``, or ``W_s (LN(z) - mu_k)`` with centering."""
        if not self.config.self_condition_centering:
            return self.self_condition_embed(semantic)
        norm, linear = self.self_condition_embed
        normalized = norm(semantic)
        return linear(normalized - self._semantic_mean(normalized, timesteps))

    def _run_blocks(
        self,
        hidden: torch.Tensor,
        cond: torch.Tensor,
        timesteps: torch.Tensor,
        keep_layers: tuple[int, ...] = (),
        last_layer: int | None = None,
        perturbed_layers: tuple[int, ...] = (),
        perturbation: str = "attention",
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor], torch.Tensor | None]:
        """Blocks ``1..last_layer`` (those in ``perturbed_layers`` degraded by ``perturbation``); returns the tokens, the (self-conditioned) condition, the pooled tokens
        ``mean_n h_l[n]`` of every layer ``l`` in ``keep_layers`` and of ``self_condition_layer``, and the
        injected term ``W_s LN(z)`` (``None`` without self-conditioning or before layer ``L``)."""
        pooled: dict[int, torch.Tensor] = {}
        skips: dict[int, torch.Tensor] = {}
        injection = None
        wanted = set(keep_layers) | {self.self_condition_layer}
        for index, block in enumerate(self.blocks[:last_layer], start=1):
            if index in self.skip_sources:
                hidden = self.skip_linears[str(index)](torch.cat([hidden, skips[self.skip_sources[index]]], dim=-1))
            hidden = block(hidden, cond, perturbation if index in perturbed_layers else None)
            if index in self.skip_sources.values():
                skips[index] = hidden
            if index in wanted:
                pooled[index] = hidden.mean(dim=1)
            if index == self.self_condition_layer and self.self_condition_embed is not None:
                injection = self._self_condition(pooled[index], timesteps)
                cond = cond + injection
        return hidden, cond, pooled, injection

    def _unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        config = self.config
        patch, grid = config.patch_size, config.sample_size // config.patch_size
        tokens = tokens.reshape(-1, grid, grid, patch, patch, config.in_channels)
        return tokens.permute(0, 5, 1, 3, 2, 4).reshape(-1, config.in_channels, grid * patch, grid * patch)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
        perturbed_layers: tuple[int, ...] = (),
        perturbation: str = "attention",
    ) -> DDAETransformerOutput | tuple:
        """Predict the noise of ``sample`` ``(B, C, H, W)`` at ``timestep`` (scalar or ``(B,)``).

        ``perturbed_layers`` (1-based blocks, default none) runs a degraded copy of the network for
        self-guidance (see :class:`~selfgen.pipelines.ddae.DDAEPipeline`): in those blocks the attention map
        is the identity (``perturbation="attention"``, PAG) or the block is skipped (``"skip"``, SLG)."""
        self.check_perturbation(perturbed_layers, perturbation)
        hidden = self._embed(sample)
        cond = self._condition(timestep, class_labels, hidden.shape[0])
        timesteps = self._timesteps(timestep, hidden.shape[0])
        hidden, cond, pooled, injection = self._run_blocks(
            hidden, cond, timesteps, perturbed_layers=tuple(perturbed_layers), perturbation=perturbation
        )
        prediction = self._unpatchify(self.final_layer(hidden, cond))
        if self.output_conv is not None:
            prediction = self.output_conv(prediction)
        semantic = pooled[self.self_condition_layer]
        if not return_dict:
            return (prediction, semantic, injection)
        return DDAETransformerOutput(sample=prediction, semantic=semantic, injection=injection)

    def pooled_features(
        self, sample: torch.Tensor, timestep: torch.Tensor | float, layers: tuple[int, ...], class_labels=None
    ) -> dict[int, torch.Tensor]:
        """``{l: mean_n h_l[n]}`` ``(B, hidden_size)`` for each block ``l`` in ``layers`` (1-based), running
        only the blocks needed. Used for linear probing."""
        bad = [layer for layer in layers if not 1 <= layer <= self.config.depth]
        if bad or not layers:
            raise ValueError(f"layers must be non-empty, each in [1, {self.config.depth}], got {list(layers)}")
        hidden = self._embed(sample)
        cond = self._condition(timestep, class_labels, hidden.shape[0])
        timesteps = self._timesteps(timestep, hidden.shape[0])
        _, _, pooled, _ = self._run_blocks(hidden, cond, timesteps, tuple(layers), last_layer=max(layers))
        return {layer: pooled[layer] for layer in layers}

    def project(self, semantic: torch.Tensor) -> torch.Tensor:
        """The contrastive projection head ``g(z)``; needs ``projection_dim > 0``."""
        if self.projection_head is None:
            raise ValueError("this model has no projection head: build it with projection_dim > 0")
        return self.projection_head(semantic)
