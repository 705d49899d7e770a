"""Tora2 in miniature: a video diffusion transformer customised by each entity's path and appearance.

Papers: Zhang et al., "Tora: Trajectory-oriented Diffusion Transformer for Video Generation" (CVPR 2025)
and "Tora2: Motion and Appearance Customized Diffusion Transformer for Multi-Entity Video Generation"
(2025). Our own implementation at toy scale (pixel space, 8 x 32 x 32 videos), read top to bottom:

1. **Video DiT.** Spatio-temporal patches (``temporal_patch_size x patch_size x patch_size`` pixels) become
   tokens with fixed 3-D sin-cos positions (CogVideoX's ``get_3d_sincos_pos_embed``; a learned table
   initialised at std 0.02 left the tokens nearly position-blind for thousands of steps and sampled
   mosaics); a small BERT (``transformers.BertModel``) trained with the model encodes the prompt, tokenized
   by a WordPiece tokenizer trained on our captions (the pipeline's ``tokenizer``); text and video tokens attend
   jointly (as in CogVideoX, Tora's base) in blocks with adaLN-Zero timestep conditioning. The model
   predicts the clean video ``x0`` from ``x_sigma = (1 - sigma) x0 + sigma eps`` (x-prediction); the pipeline
   turns it into the rectified-flow velocity ``v = (x_sigma - x0) / sigma = eps - x0``.
2. **Trajectory extractor (Tora).** Each entity's path becomes dense per-frame maps: its displacement
   ``(dx, dy)`` to the next frame, Gaussian-splatted around its position, plus the Gaussian itself
   (:func:`trajectory_maps`). A small spatio-temporal conv encoder turns the maps into one motion token
   per video token.
3. **Motion-guidance fuser (Tora, adaptive norm).** In every block the video tokens become
   ``h + norm(h) * gamma(m) + beta(m)`` with ``gamma, beta`` zero-initialised projections of the motion
   tokens ``m`` (the sum over entities).
4. **Decoupled personalization extractor (Tora2).** From each reference image, a detail branch (shallow,
   full-resolution conv -> spatial tokens) and a semantic branch (deep strided conv -> one global token)
   are fused by learned queries (a Q-Former-style cross-attention) into ``num_appearance_tokens`` tokens.
5. **Gated self-attention (Tora2).** Per entity and appearance token, ``MLP([motion; text; appearance])``
   binds the entity's trajectory embedding, its text-entity embedding and its appearance; the bound
   entity tokens and the video tokens attend jointly and the result enters the video tokens through
   ``tanh(alpha)`` with ``alpha = 0`` at initialisation (GLIGEN-style). With ``entity_binding="positional"``
   the trajectory embedding is taken per temporal token (the entity's motion tokens along its path in
   those frames, as Tora2 binds motion patches rather than one vector per path) and the bound token
   carries the video tokens' sin-cos code at the entity's position there, so a video token can find "the
   entity passing here" by ``q . k`` (GLIGEN likewise binds each grounding token to its box by a Fourier
   code of the box). ``"pooled"``: one trajectory embedding per entity for its whole path.
6. **Entity routing (ours, ``entity_routing=True``).** Each block also adds a zero-initialised projection of
   every entity's bound token at the video tokens the entity passes through, weighted by its Gaussian
   (:meth:`Tora2Transformer.routed_entities`), as Tora's fuser adds motion tokens where the motion is. Without
   it, 400 steps left the sigma = 1 clean estimate path-blind (binding 0.47 on 16 held-out videos); with it,
   0.72 at the same budget (``docs/tora2.md``). A full-resolution conv head (:class:`PixelRefiner`) after the
   patch head sharpens the coarse patch estimate next to the noisy input.
7. **Reference canvas (ours, ``reference_canvas=True``).** Each entity's reference image is pasted at 1:1 scale
   centred on its path in every frame (:func:`reference_canvas`) and given to the patch embedding (a
   zero-initialised projection) and to the refiner (zero weights on its new input channels), so the model starts
   equal to one without it. Routing and the gated attention carry one bound token per entity and temporal token;
   at our budget that token steered colour but hardly shape: re-drawing an entity's reference with another shape
   moved the pass-5 model's sigma = 1 estimate near the entity by 0.04, a fifth of what the references themselves
   change (0.21), and its samples were blobs (``docs/tora2.md``, pass 6). The canvas is the pixel-level
   counterpart of routing: it puts the reference's pixels where the paper's attention would have to fetch them.
   Where entities overlap the canvas holds the sum of their references (``canvas_compositing="sum"``, the pass 6-9
   asset, whose samples blend overlapping sprites) or, with ``"over"`` (the asset from pass 10), only the front
   one's: the entities are composited in slot order, each later one in front of the earlier ones, by its
   reference's entity mask.

Modes (``mode``): ``"tora2"`` (all of the above), ``"tora1"`` (trajectory only: no appearance path, no
entity tokens), ``"no_gate"`` (the same entity tokens simply concatenated into each block's joint
attention, no separate gated attention), and ``"dit"`` (the same DiT with neither path: the reference for
the cost of customisation in ``benchmarks/tora2.py``).

The forward pass also returns, per entity, the *motion embedding* (the final video features pooled along
the entity's path, weighted by its Gaussian) and the *appearance embedding* (its pooled personalization
tokens), both projected for Tora2's contrastive loss.

Departures from the papers (also in ``docs/tora2.md``): pixel space instead of a 3D-VAE latent, hence
x-prediction (a 192-value pixel patch embedded in 64 channels cannot carry the noise that v- or
eps-prediction must reproduce; Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"); the
trajectory maps carry a third (presence) channel so the first frame's position is encoded too; the motion
tokens come from a 3D conv encoder at token resolution instead of a VAE + ResNet stack; MGF uses linear
(not conv) projections; the personalization branches are small convnets trained from scratch (the paper
uses pretrained image encoders); the motion embedding of the contrastive loss is our reading of the paper
(features sampled along the entity's path); the sin-cos position code added to the positional entity tokens
is ours (the paper does not say how its entity tokens are aligned with the video tokens); entity routing and
the pixel refiner are ours (6.), and so is the reference canvas (7.; it assumes a reference shows the entity at
its scale in the video); the text encoder is a small BERT trained here instead of a frozen T5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import (
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed,
    get_3d_sincos_pos_embed,
    get_timestep_embedding,
)
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import Attention, AttentionBackendMixin

MODES = ("tora2", "tora1", "no_gate", "dit")
ENTITY_BINDINGS = ("positional", "pooled")
CANVAS_COMPOSITING = ("sum", "over")


@dataclass
class Tora2TransformerOutput(BaseOutput):
    """``sample``: predicted clean video ``x0`` ``(B, F, 3, H, W)``; ``motion_embeddings`` / ``appearance_embeddings``:
    ``(B, K, contrastive_dim)`` per entity slot (``None`` in ``tora1`` mode)."""

    sample: torch.Tensor
    motion_embeddings: torch.Tensor | None = None
    appearance_embeddings: torch.Tensor | None = None


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(approximate="tanh"), nn.Linear(hidden_dim, out_dim))


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


# ----------------------------------------------------------------------------- trajectories


def trajectory_maps(trajectories: torch.Tensor, size: int, sigma: float, displacement_scale: float) -> torch.Tensor:
    """Dense per-frame maps of each entity's path (Tora's trajectory -> flow visualisation, in miniature).

    ``trajectories``: ``(..., F, 2)`` normalised ``(x, y)``. Returns ``(..., 3, F, size, size)``: channels
    ``g * dx, g * dy, g`` with ``g = exp(-|pixel - p_f|^2 / (2 sigma^2))`` a Gaussian around the frame's
    position ``p_f`` (pixels) and ``(dx, dy) = displacement_scale * (p_{f+1} - p_f)`` in normalised units
    (the last frame repeats the previous displacement).
    """
    displacement = trajectories[..., 1:, :] - trajectories[..., :-1, :]
    displacement = torch.cat([displacement, displacement[..., -1:, :]], dim=-2) * displacement_scale
    centres = torch.arange(size, device=trajectories.device, dtype=trajectories.dtype) + 0.5
    points = trajectories * size
    gauss_x = torch.exp(-((centres - points[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., F, W)
    gauss_y = torch.exp(-((centres - points[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., F, H)
    gauss = gauss_y[..., :, None] * gauss_x[..., None, :]  # (..., F, H, W)
    maps = torch.stack([gauss * displacement[..., 0, None, None], gauss * displacement[..., 1, None, None], gauss])
    return maps.movedim(0, -4)


def fourier_features(values: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """``[sin(2^k pi v), cos(2^k pi v)]_k`` over the last dimension (GLIGEN's box embedding), flattened."""
    frequencies = 2.0 ** torch.arange(num_frequencies, device=values.device, dtype=values.dtype) * math.pi
    angles = values[..., None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def sincos_position_code(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin-cos code of continuous token-grid positions ``(..., 3)`` = ``(t, row, column)`` -> ``(..., dim)``.

    ``[PE_t (dim/4); PE_column (3 dim/8); PE_row (3 dim/8)]`` with ``PE(p)_i = [sin(p w_i), cos(p w_i)]``,
    ``w_i = 10000^(-2i/d)`` (Vaswani et al.): the layout of diffusers' ``get_3d_sincos_pos_embed`` (CogVideoX),
    so a point at integer grid coordinates gets exactly the code of the video token there.
    """
    spatial = 3 * dim // 8
    axes = ((positions[..., 0], dim // 4), (positions[..., 2], spatial), (positions[..., 1], spatial))
    codes = [get_1d_sincos_pos_embed_from_grid(width, axis.reshape(-1)) for axis, width in axes]
    return torch.cat(codes, dim=-1).to(positions.dtype).reshape(*positions.shape[:-1], dim)


class ResidualConv3d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(min(8, channels), channels),
            nn.SiLU(),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.GroupNorm(min(8, channels), channels),
            nn.SiLU(),
            nn.Conv3d(channels, channels, 3, padding=1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.block(hidden)


class TrajectoryExtractor(nn.Module):
    """Trajectory maps ``(N, 3, F, H, W)`` -> motion tokens ``(N, tokens, motion_dim)`` on the video token grid.

    The maps are cut into the same spatio-temporal patches as the video (Tora patchifies its motion
    latents the same way) and refined by residual 3D convolutions.
    """

    def __init__(self, patch: tuple[int, int, int], motion_dim: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.conv_in = nn.Conv3d(3 * patch[0] * patch[1] * patch[2], motion_dim, 1)
        self.blocks = nn.Sequential(*[ResidualConv3d(motion_dim) for _ in range(num_blocks)])

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch
        batch, channels, frames, height, width = maps.shape
        patches = maps.reshape(batch, channels, frames // pt, pt, height // ph, ph, width // pw, pw)
        patches = patches.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(
            batch, channels * pt * ph * pw, frames // pt, height // ph, width // pw
        )
        features = self.blocks(self.conv_in(patches))
        return features.flatten(2).transpose(1, 2)


def reference_alpha(reference_images: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Where a reference shows its entity: ``(B, K, 1, r, r)``, 1 where a pixel differs from the reference's plain
    background (the median colour of its border pixels) by more than ``threshold`` in some channel (``[-1, 1]``
    units), else 0. A reference is taken to be the entity alone on a plain background (the sprites' grey)."""
    border = torch.cat(
        [reference_images[..., 0, :], reference_images[..., -1, :], reference_images[..., 0], reference_images[..., -1]],
        dim=-1,
    )
    background = border.median(dim=-1).values[..., None, None]  # (B, K, C, 1, 1)
    return ((reference_images - background).abs().amax(2, keepdim=True) > threshold).to(reference_images.dtype)


def reference_canvas(
    reference_images: torch.Tensor,
    trajectories: torch.Tensor,
    weights: torch.Tensor,
    size: int,
    compositing: str = "sum",
) -> torch.Tensor:
    """Each entity's reference image pasted, at 1:1 scale, centred on its path in every frame (ours, see the
    module docstring, 7.).

    ``compositing="sum"``: ``C_f(p) = sum_k w_kf [R_k(q_kf); 1_k(q_kf)]`` with ``q_kf = p - p_kf + r/2``, so where
    two entities overlap the canvas holds the sum of their references. ``"over"``: the entities are composited in
    slot order, each later one in front (the sprite renderer's painter order), ``C <- w_kf (alpha_k R_k)(q_kf) + (1 - a_k)
    C`` with ``a_k = w_kf alpha_k(q_kf)``, ``alpha_k`` the reference's entity mask (:func:`reference_alpha`) and the
    colour premultiplied by it before the bilinear paste, so the overlap shows the front entity only and a lone entity
    on the sprites' grey background (0) is pasted exactly as by ``"sum"``; the footprint channel is the same in both.

    ``reference_images`` ``(B, K, 3, r, r)`` in ``[-1, 1]``, ``trajectories`` ``(B, K, F, 2)`` normalised, ``weights``
    ``(B, K, F)`` (0 for empty slots and frames out of view). Returns ``(B, F, 4, size, size)``: the pasted
    references (bilinear, 0 outside them) and their footprint (1 inside a reference's square, clipped at 1 where
    entities overlap). A reference is taken to show the entity at the scale it has in the video.
    """
    if compositing not in CANVAS_COMPOSITING:
        raise ValueError(f"compositing must be one of {CANVAS_COMPOSITING}, got {compositing!r}")
    batch, slots, channels, ref_size = reference_images.shape[:4]
    frames = trajectories.shape[2]
    centres = torch.arange(size, device=trajectories.device, dtype=trajectories.dtype) + 0.5
    points = trajectories * size  # (B, K, F, 2) pixels
    grid_x = 2 * (centres - points[..., 0:1]) / ref_size  # (B, K, F, W), grid_sample's [-1, 1], align_corners=False
    grid_y = 2 * (centres - points[..., 1:2]) / ref_size  # (B, K, F, H)
    grid = torch.stack(
        [grid_x[..., None, :].expand(-1, -1, -1, size, -1), grid_y[..., :, None].expand(-1, -1, -1, -1, size)], dim=-1
    )
    layers = [reference_images, reference_images.new_ones(batch, slots, 1, ref_size, ref_size)]
    if compositing == "over":  # premultiplied colour a R and the mask a, so bilinear edges composite correctly
        alpha = reference_alpha(reference_images)
        layers = [reference_images * alpha, layers[1], alpha]
    source = torch.cat(layers, dim=2)
    source = source[:, :, None].expand(-1, -1, frames, -1, -1, -1).flatten(0, 2)
    pasted = F.grid_sample(source, grid.flatten(0, 2).to(source.dtype), align_corners=False)
    pasted = pasted.unflatten(0, (batch, slots, frames))
    weights = weights[..., None, None, None].to(source.dtype)
    footprint = (pasted[:, :, :, channels : channels + 1] * weights).sum(1).clamp(max=1)
    if compositing == "sum":
        colour = (pasted[:, :, :, :channels] * weights).sum(1)
    else:
        colour = torch.zeros_like(pasted[:, 0, :, :channels])
        for slot in range(slots):  # slot order: each later entity in front
            alpha = pasted[:, slot, :, channels + 1 :] * weights[:, slot]
            colour = pasted[:, slot, :, :channels] * weights[:, slot] + (1 - alpha) * colour
    return torch.cat([colour, footprint], dim=2)


class PixelRefiner(nn.Module):
    """Full-resolution conv head: ``x0_hat = x0_coarse + R([x_sigma; x0_coarse; sigma; canvas])`` per frame.

    The DiT's linear head emits one flat patch per token, so a sprite edge inside a patch can only be drawn
    if a token's ``dim`` channels carry every pixel of it; the refiner (three 3x3 convs, the last zero-initialised
    so it starts as the identity on ``x0_coarse``) sharpens the coarse estimate with the noisy input beside it,
    in the role of the latent decoder a latent video DiT has (our departure: pixel space, no VAE). With
    ``canvas_channels > 0`` it also sees the :func:`reference_canvas`; the first conv's weights on those channels
    start at zero, so the refiner starts equal to one without them.
    """

    def __init__(self, channels: int, width: int, canvas_channels: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels + 1 + canvas_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        if canvas_channels:
            with torch.no_grad():
                self.net[0].weight[:, 2 * channels + 1 :].zero_()

    def forward(
        self, sample: torch.Tensor, coarse: torch.Tensor, sigma: torch.Tensor, canvas: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sample``, ``coarse``: ``(B, F, C, H, W)``; ``sigma``: ``(B,)``; ``canvas``: ``(B, F, C', H, W)`` when the
        refiner was built with ``canvas_channels = C'`` -> refined ``(B, F, C, H, W)``."""
        frames = sample.shape[1]
        sigma_map = sigma.to(coarse.dtype).view(-1, 1, 1, 1, 1).expand(-1, frames, 1, *coarse.shape[-2:])
        parts = [sample.to(coarse.dtype), coarse, sigma_map] + ([canvas.to(coarse.dtype)] if canvas is not None else [])
        inputs = torch.cat(parts, dim=2).flatten(0, 1)
        return coarse + self.net(inputs).unflatten(0, (coarse.shape[0], frames))


class MotionGuidanceFuser(nn.Module):
    """Tora's adaptive-norm MGF: ``h + norm(h) * gamma(m) + beta(m)``, ``gamma, beta`` zero-initialised."""

    def __init__(self, dim: int, motion_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.to_gamma = zero_linear(motion_dim, dim)
        self.to_beta = zero_linear(motion_dim, dim)

    def forward(self, video: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return video + self.norm(video) * self.to_gamma(motion) + self.to_beta(motion)


# ----------------------------------------------------------------------------- appearance


class PersonalizationExtractor(nn.Module):
    """Tora2's decoupled personalization extractor: reference image ``(N, 3, h, w)`` in ``[-1, 1]``
    -> ``(N, num_tokens, dim)``.

    Detail branch: one full-resolution conv and a 2x2 patch conv keep fine texture as spatial tokens (with
    fixed 2-D sin-cos positions).
    Semantic branch: three stride-2 convs and global pooling give one token for the identity. Learned
    queries cross-attend to ``[detail tokens; semantic token]`` (Q-Former-style fusion) and an MLP follows.
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, reference_size: int, width: int = 32) -> None:
        super().__init__()
        self.detail = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, dim, 2, stride=2)
        )
        detail_pos = get_2d_sincos_pos_embed(dim, reference_size // 2, base_size=reference_size // 2)
        self.register_buffer("detail_pos", detail_pos[None].float(), persistent=False)
        self.semantic = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, dim, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(dim, dim),
        )
        self.queries = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.norm_context = nn.LayerNorm(dim)
        self.fuse = Attention(dim, num_heads)
        self.norm_out = nn.LayerNorm(dim)
        self.mlp = mlp(dim, 2 * dim, dim)

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        detail = self.detail(reference).flatten(2).transpose(1, 2) + self.detail_pos
        semantic = self.semantic(reference)[:, None]
        context = self.norm_context(torch.cat([detail, semantic], dim=1))
        tokens = self.queries.expand(reference.shape[0], -1, -1)
        tokens = tokens + self.fuse(tokens, context=context)
        return tokens + self.mlp(self.norm_out(tokens))


# ----------------------------------------------------------------------------- transformer blocks


class GatedSelfAttention(nn.Module):
    """Tora2's gated self-attention: ``v + tanh(alpha) * SelfAttn(LN([v; e]))[:len(v)]`` with ``alpha = 0`` at init."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, video: torch.Tensor, entities: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(torch.cat([video, entities], dim=1))
        keys_valid = torch.cat([entity_mask.new_ones(video.shape[:2]), entity_mask], dim=1)
        attended = self.attn(tokens, attn_mask=keys_valid[:, None, None, :])
        return video + torch.tanh(self.alpha) * attended[:, : video.shape[1]]


class Tora2Block(nn.Module):
    """DiT block over ``[text; (entities); video]`` with adaLN-Zero, then MGF and (tora2) gated attention."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, motion_dim: int, gated: bool, routed: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = mlp(dim, int(dim * mlp_ratio), dim)
        self.modulation = zero_linear(dim, 6 * dim)
        self.fuser = MotionGuidanceFuser(dim, motion_dim) if motion_dim > 0 else None
        self.gated_attn = GatedSelfAttention(dim, num_heads) if gated else None
        self.router = zero_linear(dim, dim) if routed else None

    def forward(
        self,
        hidden: torch.Tensor,
        time_embedding: torch.Tensor,
        key_mask: torch.Tensor,
        num_video: int,
        motion: torch.Tensor | None,
        entities: torch.Tensor | None,
        entity_mask: torch.Tensor | None,
        routed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(time_embedding)[:, None].chunk(6, dim=-1)
        normed = self.norm1(hidden) * (1 + scale1) + shift1
        hidden = hidden + gate1 * self.attn(normed, attn_mask=key_mask[:, None, None, :])
        context, video = hidden[:, :-num_video], hidden[:, -num_video:]
        if self.fuser is not None:
            video = self.fuser(video, motion)
        if self.router is not None and routed is not None:
            video = video + self.router(routed)
        if self.gated_attn is not None and entities is not None:
            video = self.gated_attn(video, entities, entity_mask)
        hidden = torch.cat([context, video], dim=1)
        normed = self.norm2(hidden) * (1 + scale2) + shift2
        return hidden + gate2 * self.mlp(normed)


class TextEncoder(nn.Module):
    """A small BERT (``transformers.BertModel``, no pooler, no dropout) over the caption tokenizer's ids,
    trained with the DiT (CogVideoX uses a frozen pretrained T5; nothing may be downloaded here)."""

    def __init__(self, vocab_size: int, max_length: int, dim: int, num_heads: int, num_layers: int, pad_token_id: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.pad_token_id = pad_token_id
        self.max_length = max_length
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=dim,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=2 * dim,
            max_position_embeddings=max_length,
            type_vocab_size=1,
            pad_token_id=pad_token_id,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids (B, L)`` -> ``(tokens (B, L, dim), valid (B, L) bool)``; an all-pad row still attends to its first token."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text has {ids.shape[1]} tokens; the text encoder takes at most {self.max_length}")
        valid = ids != self.pad_token_id
        keys = valid.clone()
        keys[:, 0] = True
        return self.bert(input_ids=ids, attention_mask=keys.long()).last_hidden_state, valid


# ----------------------------------------------------------------------------- the model


class Tora2Transformer(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """Video DiT with Tora's trajectory path and Tora2's personalization path (see the module docstring).

    Args:
        vocab_size, pad_token_id, max_text_length, max_entity_text_length, text_layers: the caption
            tokenizer's vocabulary and pad id, the longest prompt / entity description in tokens, and the
            depth of the BERT text encoder.
        sample_size, num_frames, in_channels, patch_size, temporal_patch_size: the video and its patches.
        dim, num_layers, num_heads, mlp_ratio: the DiT trunk.
        motion_dim: channels of the trajectory extractor; trajectory_sigma (pixels) and
            displacement_scale: the Gaussian splat of :func:`trajectory_maps`.
        reference_size: side of the reference images; num_appearance_tokens: personalization tokens per entity.
        max_entities: entity slots; contrastive_dim: width of the contrastive embeddings.
        mode: ``"tora2"``, ``"tora1"``, ``"no_gate"`` or ``"dit"``.
        entity_binding: ``"positional"`` (one trajectory embedding per entity and temporal token, carrying the
            entity's position there in the video tokens' sin-cos code) or ``"pooled"`` (one embedding per
            entity from its whole path; the earlier design, kept for the ablation in ``docs/tora2.md``).
        refiner_width: channels of the full-resolution :class:`PixelRefiner` after the patch head (0: none).
        entity_routing: also add each entity's bound tokens to the video tokens it passes through
            (:meth:`routed_entities`, a zero-initialised projection per block; modes ``tora2`` and ``no_gate``).
        reference_canvas: also give the patch embedding (a zero-initialised projection) and the refiner (zero
            weights on its new input channels) each entity's reference pasted along its path
            (:func:`reference_canvas`; modes ``tora2`` and ``no_gate``).
        canvas_compositing: how the canvas combines overlapping entities: ``"sum"`` of their references (the
            pass 6-9 asset) or ``"over"``, each later entity drawn in front (:func:`reference_canvas`; the asset).
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 256,
        pad_token_id: int = 0,
        max_text_length: int = 24,
        max_entity_text_length: int = 8,
        text_layers: int = 1,
        sample_size: int = 32,
        num_frames: int = 8,
        in_channels: int = 3,
        patch_size: int = 4,
        temporal_patch_size: int = 2,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
        motion_dim: int = 32,
        trajectory_sigma: float = 1.5,
        displacement_scale: float = 8.0,
        reference_size: int = 16,
        num_appearance_tokens: int = 4,
        max_entities: int = 3,
        contrastive_dim: int = 64,
        mode: str = "tora2",
        entity_binding: str = "positional",
        refiner_width: int = 0,
        entity_routing: bool = False,
        reference_canvas: bool = False,
        canvas_compositing: str = "sum",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if entity_binding not in ENTITY_BINDINGS:
            raise ValueError(f"entity_binding must be one of {ENTITY_BINDINGS}, got {entity_binding!r}")
        if canvas_compositing not in CANVAS_COMPOSITING:
            raise ValueError(f"canvas_compositing must be one of {CANVAS_COMPOSITING}, got {canvas_compositing!r}")
        if dim % 16:
            raise ValueError(f"dim must be divisible by 16 (3-D sin-cos positions), got {dim}")
        if sample_size % patch_size or num_frames % temporal_patch_size:
            raise ValueError(
                f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size}) and num_frames "
                f"({num_frames}) by temporal_patch_size ({temporal_patch_size})"
            )
        self.patch = (temporal_patch_size, patch_size, patch_size)
        self.grid = (num_frames // temporal_patch_size, sample_size // patch_size)
        self.num_video_tokens = self.grid[0] * self.grid[1] ** 2
        patch_dim = in_channels * temporal_patch_size * patch_size**2
        self.text_encoder = TextEncoder(vocab_size, max_text_length, dim, num_heads, text_layers, pad_token_id)
        self.patch_embed = nn.Linear(patch_dim, dim)
        video_pos = get_3d_sincos_pos_embed(dim, self.grid[1], self.grid[0]).flatten(0, 1)
        self.register_buffer("video_pos", video_pos[None].float(), persistent=False)
        self.time_embed = mlp(dim, dim, dim)
        motion_channels = 0 if mode == "dit" else motion_dim
        if mode != "dit":
            self.trajectory_extractor = TrajectoryExtractor(self.patch, motion_dim)
        self.blocks = nn.ModuleList(
            [
                Tora2Block(
                    dim,
                    num_heads,
                    mlp_ratio,
                    motion_channels,
                    gated=mode == "tora2",
                    routed=entity_routing and mode in ("tora2", "no_gate"),
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False)
        self.out_modulation = zero_linear(dim, 2 * dim)
        self.prediction_head = zero_linear(dim, patch_dim)
        canvas = reference_canvas and mode in ("tora2", "no_gate")
        self.canvas_embed = zero_linear((in_channels + 1) * temporal_patch_size * patch_size**2, dim) if canvas else None
        canvas_channels = in_channels + 1 if canvas else 0
        self.refiner = PixelRefiner(in_channels, refiner_width, canvas_channels) if refiner_width > 0 else None
        if mode in ("tora2", "no_gate"):
            self.personalization = PersonalizationExtractor(dim, num_heads, num_appearance_tokens, reference_size)
            frames_per_embedding = temporal_patch_size if entity_binding == "positional" else num_frames
            self.trajectory_embed = mlp(motion_dim + 4 * 2 * 2 * frames_per_embedding, dim, dim)
            self.entity_binder = mlp(3 * dim, dim, dim)
            self.motion_projection = nn.Linear(dim, contrastive_dim)
            self.appearance_projection = nn.Linear(dim, contrastive_dim)

    # ------------------------------------------------------------------ patches

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, F, C, H, W)`` -> ``(B, tokens, C * pt * p * p)``, tokens ordered (time, row, column)."""
        pt, ph, pw = self.patch
        batch, frames, channels, height, width = video.shape
        patches = video.reshape(batch, frames // pt, pt, channels, height // ph, ph, width // pw, pw)
        patches = patches.permute(0, 1, 4, 6, 3, 2, 5, 7)
        return patches.reshape(batch, self.num_video_tokens, channels * pt * ph * pw)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch
        config = self.config
        grid_t, grid = config.num_frames // pt, config.sample_size // ph
        batch = patches.shape[0]
        video = patches.reshape(batch, grid_t, grid, grid, config.in_channels, pt, ph, pw)
        video = video.permute(0, 1, 5, 4, 2, 6, 3, 7)
        return video.reshape(batch, config.num_frames, config.in_channels, config.sample_size, config.sample_size)

    # ------------------------------------------------------------------ conditions

    def encode_trajectories(
        self, trajectories: torch.Tensor, entity_mask: torch.Tensor, visibility: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Per-entity motion tokens ``(B, K, tokens, motion_dim)`` (zeroed for empty slots) and each entity's
        presence weights on the token grid ``(B, K, tokens)`` (its Gaussian, pooled per patch, summing to 1).
        ``visibility`` ``(B, K, F)`` zeroes the maps of frames where an entity is out of view (and the
        displacement of a frame whose next frame is out of view)."""
        config = self.config
        batch, slots = trajectories.shape[:2]
        maps = trajectory_maps(
            trajectories.float(), config.sample_size, config.trajectory_sigma, config.displacement_scale
        )
        if visibility is not None:  # presence where visible; displacement where this and the next frame are
            seen = visibility.float()
            moving = seen * torch.cat([seen[..., 1:], seen[..., -2:-1]], dim=-1)
            maps = maps * torch.stack([moving, moving, seen], dim=2)[..., None, None]
        maps = maps.to(self.video_pos.dtype)
        flat_maps = maps.flatten(0, 1)
        motion = self.trajectory_extractor(flat_maps).unflatten(0, (batch, slots))
        presence = F.avg_pool3d(flat_maps[:, 2:3], self.patch).flatten(1).unflatten(0, (batch, slots))
        presence = presence / presence.sum(-1, keepdim=True).clamp_min(1e-6)
        return motion * entity_mask[..., None, None], presence

    def trajectory_embeddings(
        self, trajectories: torch.Tensor, motion: torch.Tensor, presence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each entity's trajectory embedding ``(B, K, S, dim)`` = ``MLP([motion tokens pooled along its path;
        Fourier features of its points])`` and, for ``"positional"`` binding, the sin-cos position code
        ``(B, K, S, dim)`` of where it is.

        ``"positional"``: ``S`` = temporal tokens; embedding ``s`` pools the motion tokens of temporal token
        ``s`` along the entity's Gaussian and encodes that token's frames, and its code is the video tokens'
        code (:func:`sincos_position_code`) at the entity's mean position over those frames, so that in the
        attention ``q . k`` can match a video token to the entity passing through it. ``"pooled"``: ``S = 1``,
        the whole path in one embedding, no code.
        """
        config = self.config
        if config.entity_binding == "pooled":
            pooled = (motion * presence[..., None]).sum(2)[:, :, None]
            points = trajectories.flatten(2)[:, :, None]
            return self.trajectory_embed(torch.cat([pooled, fourier_features(points, 4)], dim=-1)), None
        grid_t, grid = self.grid
        slot_presence = presence.unflatten(2, (grid_t, -1))
        slot_presence = slot_presence / slot_presence.sum(-1, keepdim=True).clamp_min(1e-6)
        pooled = torch.einsum("bkts,bktsd->bktd", slot_presence, motion.unflatten(2, (grid_t, -1)))
        slot_points = trajectories.unflatten(2, (grid_t, -1))  # (B, K, S, pt, 2)
        embedding = self.trajectory_embed(torch.cat([pooled, fourier_features(slot_points.flatten(3), 4)], dim=-1))
        centre = slot_points.mean(3) * grid - 0.5  # token-grid (column, row) of the entity's mean position
        times = torch.arange(grid_t, device=centre.device, dtype=centre.dtype).expand(centre.shape[:3])
        code = sincos_position_code(torch.stack([times, centre[..., 1], centre[..., 0]], dim=-1), config.dim)
        return embedding, code

    def entity_tokens(
        self,
        trajectories: torch.Tensor,
        motion: torch.Tensor,
        presence: torch.Tensor,
        entity_ids: torch.Tensor,
        reference_images: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bound entity tokens ``(B, K, S * A, dim)`` = ``MLP([trajectory emb_s; text-entity emb; appearance
        token_a]) (+ position code_s)`` for each of the ``S`` trajectory embeddings (:meth:`trajectory_embeddings`)
        and ``A`` appearance tokens, and the appearance tokens ``(B, K, A, dim)``."""
        batch, slots = trajectories.shape[:2]
        trajectory_embedding, code = self.trajectory_embeddings(trajectories.to(motion.dtype), motion, presence)
        words, words_valid = self.text_encoder(entity_ids.flatten(0, 1))
        weights = words_valid[..., None].to(words.dtype)
        text_embedding = ((words * weights).sum(1) / weights.sum(1).clamp_min(1)).unflatten(0, (batch, slots))
        appearance = self.personalization(reference_images.flatten(0, 1).to(words.dtype)).unflatten(0, (batch, slots))
        num_embeddings, num_tokens = trajectory_embedding.shape[2], appearance.shape[2]
        shape = (-1, -1, num_embeddings, num_tokens, -1)
        bound = self.entity_binder(
            torch.cat(
                [
                    trajectory_embedding[:, :, :, None].expand(shape),
                    text_embedding[:, :, None, None].expand(shape),
                    appearance[:, :, None].expand(shape),
                ],
                dim=-1,
            )
        )
        if code is not None:
            bound = bound + code[:, :, :, None].to(bound.dtype)
        return bound.flatten(2, 3), appearance

    def routed_entities(self, entities: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Entity tokens routed to where each entity is: ``r_n = sum_k w_kn * mean_a e_{k,s(n),a}`` ``(B, tokens, dim)``.

        ``entities`` ``(B, K, S * A, dim)`` are the bound tokens of :meth:`entity_tokens`, ``presence`` ``(B, K,
        tokens)`` each entity's Gaussian per token; ``w_kn`` is that presence divided by its maximum within the
        token's temporal slot (1 at the token the entity's centre is in, 0 where it is absent or out of view),
        and ``s(n)`` the token's temporal slot (``S = 1``, pooled binding: the same token for every slot). Like
        Tora's fuser adds motion tokens where the motion is, this adds an entity's appearance-and-path token
        where that entity is, so binding does not wait for attention to learn to match position codes.
        """
        grid_t = self.grid[0]
        batch, slots = presence.shape[:2]
        weights = presence.unflatten(2, (grid_t, -1))
        weights = weights / weights.amax(-1, keepdim=True).clamp_min(1e-6)
        tokens = entities.unflatten(2, (-1, self.config.num_appearance_tokens)).mean(3)  # (B, K, S, dim)
        tokens = tokens.expand(-1, -1, grid_t, -1)
        return torch.einsum("bkts,bktd->btsd", weights.to(tokens.dtype), tokens).flatten(1, 2)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        prompt_ids: torch.Tensor,
        trajectories: torch.Tensor,
        entity_mask: torch.Tensor,
        reference_images: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        visibility: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Tora2TransformerOutput | tuple:
        """Clean-video prediction ``x0_hat`` for noisy videos.

        Args:
            sample: ``(B, F, 3, H, W)`` noisy video ``x_sigma``; timestep: ``(B,)`` or scalar, ``1000 sigma``.
            prompt_ids: ``(B, L)`` word ids of the prompt.
            trajectories: ``(B, K, F, 2)`` normalised centres; entity_mask: ``(B, K)`` bool, valid slots.
            reference_images: ``(B, K, 3, r, r)`` in ``[-1, 1]``; entity_ids: ``(B, K, Le)`` word ids of
                each entity's description (both required in modes ``tora2`` and ``no_gate``).
            visibility: optional ``(B, K, F)``, 0 where an entity is out of view (its maps are zeroed there).
            In mode ``dit`` the trajectories are ignored.
        """
        config = self.config
        dtype = self.video_pos.dtype
        entity_mask = entity_mask.bool()
        text, text_valid = self.text_encoder(prompt_ids)
        batch = sample.shape[0]
        timestep = timestep.expand(batch) if timestep.ndim == 0 else timestep
        time_embedding = self.time_embed(get_timestep_embedding(timestep, config.dim, flip_sin_to_cos=True).to(dtype))
        video = self.patch_embed(self.patchify(sample.to(dtype))) + self.video_pos
        motion = entities = appearance = entity_token_mask = routed = canvas = None
        if config.mode != "dit":
            entity_motion, presence = self.encode_trajectories(trajectories, entity_mask, visibility)
            motion = entity_motion.sum(1)
        if config.mode in ("tora2", "no_gate"):
            if reference_images is None or entity_ids is None:
                raise ValueError(f"mode {config.mode!r} needs reference_images and entity_ids")
            entities, appearance = self.entity_tokens(trajectories, entity_motion, presence, entity_ids, reference_images)
            if self.canvas_embed is not None:
                seen = entity_mask[..., None].to(dtype) if visibility is None else visibility.to(dtype) * entity_mask[..., None]
                canvas = reference_canvas(
                    reference_images.to(dtype), trajectories.to(dtype), seen, config.sample_size, config.canvas_compositing
                )
                video = video + self.canvas_embed(self.patchify(canvas))
            if config.entity_routing:
                routed = self.routed_entities(entities * entity_mask[..., None, None], presence)
            entity_token_mask = entity_mask[..., None].expand(entities.shape[:3]).flatten(1)
            entities = entities.flatten(1, 2)
        context, context_valid = text, text_valid | (torch.arange(text.shape[1], device=text.device) == 0)
        if config.mode == "no_gate":
            context = torch.cat([context, entities], dim=1)
            context_valid = torch.cat([context_valid, entity_token_mask], dim=1)
        hidden = torch.cat([context, video], dim=1)
        key_mask = torch.cat([context_valid, context_valid.new_ones(batch, video.shape[1])], dim=1)
        for block in self.blocks:
            hidden = block(
                hidden, time_embedding, key_mask, video.shape[1], motion, entities, entity_token_mask, routed
            )
        video = hidden[:, -video.shape[1] :]
        shift, scale = self.out_modulation(time_embedding)[:, None].chunk(2, dim=-1)
        prediction = self.unpatchify(self.prediction_head(self.norm_out(video) * (1 + scale) + shift))
        if self.refiner is not None:
            prediction = self.refiner(sample, prediction, timestep / 1000, canvas)
        motion_embeddings = appearance_embeddings = None
        if appearance is not None:
            along_path = torch.einsum("bkn,bnd->bkd", presence.to(video.dtype), video)
            motion_embeddings = self.motion_projection(along_path)
            appearance_embeddings = self.appearance_projection(appearance.mean(2))
        if not return_dict:
            return (prediction, motion_embeddings, appearance_embeddings)
        return Tora2TransformerOutput(prediction, motion_embeddings, appearance_embeddings)
