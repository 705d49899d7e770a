"""A small unified multimodal model: one transformer over text and image tokens that both
understands (image + question -> answer token) and generates (prompt -> image by flow matching).

BAGEL-like in miniature (Deng et al. 2025, "Emerging properties in unified multimodal pretraining"):
a Mixture-of-Transformer-experts (MoT) trunk. Every layer has two experts, ``und`` (text tokens and
clean image tokens) and ``gen`` (noisy image tokens being generated), each with its own norms, q/k/v/out
projections and MLP; both experts' tokens meet in one shared self-attention over the joint sequence.
Generation and understanding therefore read the same context but write through separate weights, so
the generation path can be trained (e.g. by SRUM) while the understanding path stays frozen.

Image tokens are patches of a 32x32 RGB image with fixed 2-D sin-cos positions, cut separately for each
path, as BAGEL encodes images for understanding (ViT) and for generation (VAE) with separate encoders:
``patch_size`` for understanding, ``generation_patch_size`` (default: the same) for generation, and with
``generation_conv_channels > 0`` a 3x3 conv stem before the generation patches and a 3x3 conv head after
them (zero-initialised, so the velocity starts at 0). Ours, not BAGEL's (whose VAE does this work): without
the conv stem/head the generation path at 4x4 patches drew independent 4x4 colour tiles (a patch mosaic).
``understanding_conv_channels > 0`` puts a 3x3 conv stem before the understanding patches too (ours: a
stand-in for BAGEL's pretrained ViT encoder, which we do not have; see ``docs/srum.md``, eighth pass).
``learned_understanding_positions`` makes the understanding tokens' position table a trained parameter,
initialised to the same sin-cos table (so the model is unchanged at step 0), as a ViT learns its position
embeddings: on a 4x4 token grid at ``dim=128`` the fixed table's positions are 0.93 cosine-similar to each
other and a fifth of the content's norm, and the judge did not read position (``docs/srum.md``, ninth pass).
``generation_adaln`` (ours, not BAGEL's: BAGEL adds the timestep embedding to the VAE tokens and nothing else, as
this model does without it) adaLN-modulates the ``gen`` expert's sub-layers and output norm by the timestep
embedding, with ``generation_adaln_prompt`` plus a pooled prompt (DiT's adaLN, SD3's pooled text vector), from
zero-initialised projections, so a checkpoint without it computes the same function at step 0
(``docs/srum.md``, twelfth pass).
``generation_conv_blocks > 0`` (with ``generation_conv_channels``) adds that many timestep-conditioned residual conv
blocks at full resolution after the conv stem and as many before the conv head (diffusers' ``ResnetBlock2D``, the
UNet's block: GroupNorm, SiLU, 3x3 conv, + projected timestep embedding, GroupNorm, SiLU, 3x3 conv, residual), each
block's last conv zero-initialised so that every block is the identity at step 0. Ours, not BAGEL's (its frozen VAE
encoder/decoder is not timestep-conditioned): a reference UNet of the same data, objective and sampler put one
compact object in each single-object image after 198 steps while this path at 4x4 patches with one conv layer a side
scattered fragments after 1473 (``docs/srum.md``, thirteenth pass).
``generation_latent_channels > 0`` is BAGEL's own generation space: the generation path reads and writes the
``generation_latent_channels x generation_latent_size^2`` latents of a FROZEN autoencoder
(:mod:`selfgen.models.scene_autoencoder`; BAGEL's is FLUX's VAE) instead of pixels; with ``generation_patch_size: 1``
and no conv stem, ``gen_patch_embed`` is BAGEL's ``vae2llm`` and ``velocity_head`` its zero-initialised ``llm2vae``.
The autoencoder is not part of this model: the pipeline holds it (``UnifiedPipeline.vae``) and decodes the sampled
latents; training encodes the scenes with it (``docs/srum.md``, fifteenth pass).

* generation: ``[prompt tokens (und, causal)] [noisy patches + t-embedding (gen, full)]``; image tokens
  attend to all valid prompt tokens and to each other; the ``gen`` expert's head predicts the
  flow-matching velocity ``v = eps - x0`` of ``x_sigma = (1 - sigma) x0 + sigma eps`` (rectified flow).
* understanding: ``[clean patches (und, full)] [question tokens (und, causal)]``; the ``und`` expert's
  LM head predicts the next token; the answer is the token after the final ``<a>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.utils import BaseOutput
from torch import nn

from .attention import Attention, AttentionBackendMixin, attention
from .embeddings import patchify, unpatchify

UND, GEN = 0, 1
_GEN_EXPERT_PARAMETER = re.compile(rf"blocks\.\d+\.(attn\.gen_|gen_modulation\.|(norm1|norm2|mlp)\.{GEN}\.)")


@dataclass
class UnifiedModelOutput(BaseOutput):
    """``sample``: predicted velocity ``(N, C, H, W)`` (generation); ``logits``: ``(N, L, vocab)`` (understanding)."""

    sample: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class MoTAttention(Attention):
    """Shared self-attention over ``[und tokens | gen tokens]`` with per-expert q/k/v/out projections.

    The inherited ``to_q/to_k/to_v/to_out`` serve the ``und`` expert, ``gen_to_*`` the ``gen`` expert;
    attention itself goes through :func:`~selfgen.models.attention.attention` on this module's backend.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads, qk_norm=True)
        self.gen_to_q, self.gen_to_k, self.gen_to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.gen_to_out = nn.Linear(dim, dim)
        self.gen_norm_q, self.gen_norm_k = nn.LayerNorm(self.head_dim), nn.LayerNorm(self.head_dim)

    def _project(self, tokens: torch.Tensor, expert: int) -> tuple[torch.Tensor, ...]:
        if expert == UND:
            to_q, to_k, to_v, norm_q, norm_k = self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k
        else:
            to_q, to_k, to_v = self.gen_to_q, self.gen_to_k, self.gen_to_v
            norm_q, norm_k = self.gen_norm_q, self.gen_norm_k
        split = self._split_heads
        return norm_q(split(to_q(tokens))), norm_k(split(to_k(tokens))), split(to_v(tokens))

    def forward(self, hidden_states: torch.Tensor, num_und: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        parts = [(hidden_states[:, :num_und], UND), (hidden_states[:, num_und:], GEN)]
        projected = [self._project(tokens, expert) for tokens, expert in parts if tokens.shape[1] > 0]
        query, key, value = (torch.cat(tensors, dim=2) for tensors in zip(*projected))
        output = attention(query, key, value, attn_mask=attn_mask, backend=self.backend)
        batch, _, seq_len, _ = output.shape
        output = output.transpose(1, 2).reshape(batch, seq_len, -1)
        return torch.cat([self.to_out(output[:, :num_und]), self.gen_to_out(output[:, num_und:])], dim=1)


class MoTBlock(nn.Module):
    """Pre-norm transformer layer: shared MoT attention, then each expert's own MLP on its tokens.

    With ``modulated``, the ``gen`` expert's two sub-layers are adaLN-modulated by a conditioning vector ``c``
    (the timestep embedding, optionally plus a pooled prompt; DiT, Peebles & Xie 2023, Sec. 3.2):
    ``h = h + (1 + g1) * Attn((1 + s1) * LN(h) + b1)``, ``h = h + (1 + g2) * MLP((1 + s2) * LN(h) + b2)`` with
    ``(b1, s1, g1, b2, s2, g2) = W SiLU(c)``, ``W`` zero-initialised. DiT's adaLN-Zero gates start at 0 (each
    block the identity) for a model trained from scratch; ours are ``1 + g`` so that a pretrained checkpoint's
    blocks are unchanged at step 0 (the same function; the modulation is learned from there).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, modulated: bool = False) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attn = MoTAttention(dim, num_heads)
        self.norm1 = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.norm2 = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.mlp = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
                for _ in range(2)
            ]
        )
        self.gen_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if modulated else None
        if self.gen_modulation is not None:
            nn.init.zeros_(self.gen_modulation[1].weight)
            nn.init.zeros_(self.gen_modulation[1].bias)

    def _per_expert(self, modules: nn.ModuleList, hidden_states: torch.Tensor, num_und: int) -> torch.Tensor:
        und, gen = hidden_states[:, :num_und], hidden_states[:, num_und:]
        return torch.cat([modules[UND](und), modules[GEN](gen)], dim=1)

    def _modulations(self, hidden_states: torch.Tensor, num_und: int, condition: torch.Tensor | None) -> tuple:
        """Per-token ``(shift, scale, gate)`` of both sub-layers: 0 on ``und`` tokens, ``W SiLU(c)`` on ``gen``."""
        if self.gen_modulation is None or condition is None:
            return (None,) * 6
        gen = self.gen_modulation(condition)[:, None].expand(-1, hidden_states.shape[1] - num_und, -1)
        und = gen.new_zeros(gen.shape[0], num_und, gen.shape[-1])
        return torch.cat([und, gen], dim=1).chunk(6, dim=-1)

    def forward(
        self, hidden_states: torch.Tensor, num_und: int, attn_mask: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self._modulations(hidden_states, num_und, condition)
        normed = _modulate(self._per_expert(self.norm1, hidden_states, num_und), shift1, scale1)
        hidden_states = hidden_states + _gated(self.attn(normed, num_und, attn_mask), gate1)
        normed = _modulate(self._per_expert(self.norm2, hidden_states, num_und), shift2, scale2)
        return hidden_states + _gated(self._per_expert(self.mlp, normed, num_und), gate2)


def _modulate(normed: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    return normed if shift is None else normed * (1 + scale) + shift


def _gated(update: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return update if gate is None else update * (1 + gate)


def _conv_blocks(count: int, channels: int, time_dim: int) -> nn.ModuleList:
    """``count`` diffusers ``ResnetBlock2D`` of ``channels`` conditioned on a ``time_dim`` timestep embedding, each
    block's last conv zero-initialised (the block is the identity at step 0)."""
    blocks = nn.ModuleList(
        ResnetBlock2D(in_channels=channels, temb_channels=time_dim, groups=min(8, channels)) for _ in range(count)
    )
    for block in blocks:
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
    return blocks


def _causal_text_mask(text_valid: torch.Tensor) -> torch.Tensor:
    """``(B, L, L)`` boolean: token i sees valid tokens j <= i (and itself, so no row is empty)."""
    length = text_valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=text_valid.device).tril()
    return (causal & text_valid[:, None, :]) | torch.eye(length, dtype=torch.bool, device=text_valid.device)


def generation_mask(text_valid: torch.Tensor, num_image: int) -> torch.Tensor:
    """``(B, 1, S, S)`` for ``[text | image]``: causal text; image sees valid text and all image."""
    batch, length = text_valid.shape
    mask = torch.zeros(batch, length + num_image, length + num_image, dtype=torch.bool, device=text_valid.device)
    mask[:, :length, :length] = _causal_text_mask(text_valid)
    mask[:, length:, :length] = text_valid[:, None, :]
    mask[:, length:, length:] = True
    return mask[:, None]


def understanding_mask(text_valid: torch.Tensor, num_image: int) -> torch.Tensor:
    """``(B, 1, S, S)`` for ``[image | text]``: full image; text sees all image and causal valid text."""
    batch, length = text_valid.shape
    mask = torch.zeros(batch, num_image + length, num_image + length, dtype=torch.bool, device=text_valid.device)
    mask[:, :num_image, :num_image] = True
    mask[:, num_image:, :num_image] = True
    mask[:, num_image:, num_image:] = _causal_text_mask(text_valid)
    return mask[:, None]


class UnifiedTransformer(AttentionBackendMixin, ModelMixin, ConfigMixin):
    """MoT transformer that generates images from prompts and answers questions about images.

    Args:
        vocab_size: size of the word vocabulary (``selfgen.data.scenes.VOCAB``).
        pad_token_id: token id ignored as key in attention.
        sample_size: image side in pixels; in_channels: image channels; patch_size: understanding patch side.
        generation_patch_size: generation patch side (``None``: ``patch_size``).
        generation_conv_channels: width of the generation path's 3x3 conv stem/head (0: none).
        understanding_conv_channels: width of the understanding path's 3x3 conv stem (0: none).
        learned_understanding_positions: train the understanding tokens' position table (initialised to sin-cos).
        generation_adaln: adaLN-modulate the ``gen`` expert's sub-layers and output norm by the timestep embedding
            (zero-initialised, see :class:`MoTBlock`; ours, not BAGEL's, which adds the timestep to the tokens only).
        generation_adaln_prompt: with ``generation_adaln``, the conditioning vector also gets the pooled prompt
            (mean of the valid prompt tokens' input embeddings through a linear map, as SD3 adds a pooled text
            embedding to its timestep embedding).
        generation_conv_blocks: timestep-conditioned residual conv blocks after the generation conv stem and before
            its conv head, each (needs ``generation_conv_channels``; zero-initialised, identity at step 0).
        generation_latent_channels: > 0: generation runs on a frozen autoencoder's latents of that many channels
            (0: on pixels, ``in_channels`` of ``sample_size``).
        generation_latent_size: the latents' side (needs ``generation_latent_channels``).
        max_text_length: longest prompt or question in tokens.
        dim, num_layers, num_heads, mlp_ratio: trunk width/depth.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 46,
        pad_token_id: int = 0,
        sample_size: int = 32,
        in_channels: int = 3,
        patch_size: int = 4,
        max_text_length: int = 24,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        generation_patch_size: int | None = None,
        generation_conv_channels: int = 0,
        understanding_conv_channels: int = 0,
        learned_understanding_positions: bool = False,
        generation_adaln: bool = False,
        generation_adaln_prompt: bool = False,
        generation_conv_blocks: int = 0,
        generation_latent_channels: int = 0,
        generation_latent_size: int = 0,
    ) -> None:
        super().__init__()
        gen_patch = generation_patch_size or patch_size
        if generation_latent_channels < 0 or (generation_latent_channels > 0) != (generation_latent_size > 0):
            raise ValueError(
                "generation_latent_channels and generation_latent_size must both be > 0 (latent generation) or both 0, "
                f"got {generation_latent_channels} and {generation_latent_size}"
            )
        gen_size = generation_latent_size or sample_size
        for name, size, side in (("patch_size", patch_size, sample_size), ("generation_patch_size", gen_patch, gen_size)):
            if size < 1 or side % size:
                raise ValueError(f"{name} ({size}) must be >= 1 and divide the image side it cuts ({side})")
        for name, width in (
            ("generation_conv_channels", generation_conv_channels),
            ("understanding_conv_channels", understanding_conv_channels),
        ):
            if width < 0:
                raise ValueError(f"{name} must be >= 0, got {width}")
        if generation_conv_blocks < 0 or (generation_conv_blocks and not generation_conv_channels):
            raise ValueError(
                f"generation_conv_blocks ({generation_conv_blocks}) must be >= 0, and > 0 needs generation_conv_channels > 0"
            )
        if generation_adaln_prompt and not generation_adaln:
            raise ValueError("generation_adaln_prompt needs generation_adaln: true (it adds to the adaLN condition)")
        # understanding path
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.text_pos = nn.Parameter(torch.zeros(1, max_text_length, dim))
        und_conv = understanding_conv_channels or in_channels
        self.und_conv_in = nn.Conv2d(in_channels, und_conv, 3, padding=1) if understanding_conv_channels else None
        self.und_patch_embed = nn.Linear(und_conv * patch_size**2, dim)
        self.und_norm_out = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size)
        # generation path: optional 3x3 conv stem/head around the patch embedding (pixel channels `conv`)
        gen_channels = generation_latent_channels or in_channels
        conv = generation_conv_channels or gen_channels
        self.gen_conv_in = nn.Conv2d(gen_channels, conv, 3, padding=1) if generation_conv_channels else None
        self.gen_patch_embed = nn.Linear(conv * gen_patch**2, dim)
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.gen_norm_out = nn.LayerNorm(dim)
        self.velocity_head = nn.Linear(dim, conv * gen_patch**2)
        self.gen_conv_out = nn.Conv2d(conv, gen_channels, 3, padding=1) if generation_conv_channels else None
        self.gen_blocks_in = _conv_blocks(generation_conv_blocks, conv, dim)
        self.gen_blocks_out = _conv_blocks(generation_conv_blocks, conv, dim)
        # adaLN condition of the generation expert (timestep embedding [+ pooled prompt]); output-norm modulation
        self.gen_prompt_proj = nn.Linear(dim, dim) if generation_adaln_prompt else None
        self.gen_out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if generation_adaln else None
        # 2-D sin-cos positions of the image tokens (as in DiT), one grid per path; fixed, or trained for understanding
        for name, size, side in (("und_image_pos", patch_size, sample_size), ("gen_image_pos", gen_patch, gen_size)):
            grid = side // size
            pos = get_2d_sincos_pos_embed(dim, grid, base_size=grid, output_type="pt")
            if name == "und_image_pos" and learned_understanding_positions:
                self.und_image_pos = nn.Parameter(pos.float()[None])
            else:
                self.register_buffer(name, pos.float()[None], persistent=False)
        # shared trunk (MoT: per-expert weights, shared attention)
        self.blocks = nn.ModuleList([MoTBlock(dim, num_heads, mlp_ratio, generation_adaln) for _ in range(num_layers)])
        nn.init.normal_(self.text_pos, std=0.02)
        last = self.gen_conv_out if generation_conv_channels else self.velocity_head
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        if self.gen_out_modulation is not None:
            nn.init.zeros_(self.gen_out_modulation[1].weight)
            nn.init.zeros_(self.gen_out_modulation[1].bias)

    # ------------------------------------------------------------------ parameters

    def is_generation_parameter(self, name: str) -> bool:
        """Generation-path weights: gen embeddings/head and the ``gen`` expert of every trunk layer."""
        return name.startswith(("gen_", "time_embed", "velocity_head")) or bool(_GEN_EXPERT_PARAMETER.match(name))

    def generation_parameters(self) -> list[nn.Parameter]:
        return [param for name, param in self.named_parameters() if self.is_generation_parameter(name)]

    # ------------------------------------------------------------------ tokens

    @property
    def generation_patch_size(self) -> int:
        return self.config.generation_patch_size or self.config.patch_size

    @property
    def generation_shape(self) -> tuple[int, int, int]:
        """``(channels, side, side)`` of what the generation path denoises: pixels, or the autoencoder's latents."""
        config = self.config
        if config.generation_latent_channels:
            return config.generation_latent_channels, config.generation_latent_size, config.generation_latent_size
        return config.in_channels, config.sample_size, config.sample_size

    def _embed_noisy_image(self, sample: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """Generation tokens: (conv stem, conv blocks,) ``p x p`` patches, linear embedding, positions."""
        sample = sample.to(t_emb.dtype)
        if self.gen_conv_in is not None:
            sample = F.gelu(self.gen_conv_in(sample), approximate="tanh")
        for block in self.gen_blocks_in:
            sample = block(sample, t_emb)
        return self.gen_patch_embed(patchify(sample, self.generation_patch_size)) + self.gen_image_pos

    def _velocity_from_tokens(self, tokens: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """Velocity head: linear to ``p x p`` patches, unpatchify, (conv blocks, conv head)."""
        _, size, _ = self.generation_shape
        channels = self.gen_conv_out.in_channels if self.gen_conv_out is not None else self.generation_shape[0]
        image = unpatchify(self.velocity_head(tokens), self.generation_patch_size, channels, size, size)
        if self.gen_conv_out is None:
            return image
        image = F.gelu(image, approximate="tanh")
        for block in self.gen_blocks_out:
            image = block(image, t_emb)
        return self.gen_conv_out(image)

    def _embed_clean_image(self, pixel_values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Understanding tokens: (conv stem,) ``p x p`` patches, linear embedding, positions."""
        pixel_values = pixel_values.to(dtype)
        if self.und_conv_in is not None:
            pixel_values = F.gelu(self.und_conv_in(pixel_values), approximate="tanh")
        return self.und_patch_embed(patchify(pixel_values, self.config.patch_size)) + self.und_image_pos

    def _embed_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.text_pos.shape[1]:
            raise ValueError(f"text has {ids.shape[1]} tokens; the model takes at most {self.text_pos.shape[1]}")
        return self.token_embed(ids) + self.text_pos[:, : ids.shape[1]], ids != self.config.pad_token_id

    def _trunk(
        self, hidden_states: torch.Tensor, num_und: int, mask: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask.dtype == torch.bool and hidden_states.dtype != torch.float32:
            mask = torch.zeros(mask.shape, dtype=hidden_states.dtype, device=mask.device).masked_fill(
                ~mask, float("-inf")
            )
        for block in self.blocks:
            hidden_states = block(hidden_states, num_und, mask, condition)
        return hidden_states

    # ------------------------------------------------------------------ the two tasks

    def predict_velocity(self, sample: torch.Tensor, timestep: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Velocity ``v_theta(x_sigma, sigma, prompt)`` for noisy images ``sample`` at ``timestep = 1000 sigma``."""
        text, text_valid = self._embed_text(prompt_ids)
        timestep = timestep.expand(sample.shape[0]) if timestep.ndim == 0 else timestep
        t_emb = self.time_embed(get_timestep_embedding(timestep, text.shape[-1], flip_sin_to_cos=True).to(text.dtype))
        image = self._embed_noisy_image(sample, t_emb) + t_emb[:, None]
        condition = self._generation_condition(t_emb, text, text_valid)
        hidden = self._trunk(
            torch.cat([text, image], dim=1), text.shape[1], generation_mask(text_valid, image.shape[1]), condition
        )
        normed = self.gen_norm_out(hidden[:, text.shape[1] :])
        if condition is not None:
            shift, scale = self.gen_out_modulation(condition)[:, None].chunk(2, dim=-1)
            normed = _modulate(normed, shift, scale)
        return self._velocity_from_tokens(normed, t_emb)

    def _generation_condition(
        self, t_emb: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor
    ) -> torch.Tensor | None:
        """The adaLN condition ``c = t_emb [+ W_p mean(valid prompt embeddings)]``, or ``None`` without adaLN."""
        if not self.config.generation_adaln:
            return None
        if self.gen_prompt_proj is None:
            return t_emb
        valid = text_valid[..., None].to(text.dtype)
        pooled = (text * valid).sum(1) / valid.sum(1).clamp(min=1)
        return t_emb + self.gen_prompt_proj(pooled)

    def answer_logits(self, pixel_values: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, L, vocab)`` over the question tokens, reading the clean image."""
        text, text_valid = self._embed_text(question_ids)
        image = self._embed_clean_image(pixel_values, text.dtype)
        num_image = image.shape[1]
        hidden = self._trunk(
            torch.cat([image, text], dim=1), num_image + text.shape[1], understanding_mask(text_valid, num_image)
        )
        return self.lm_head(self.und_norm_out(hidden[:, num_image:]))

    def forward(
        self,
        sample: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        prompt_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        question_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UnifiedModelOutput | tuple:
        """Generation (``sample``, ``timestep``, ``prompt_ids``), understanding (``pixel_values``,
        ``question_ids``), or both in one call (so a distributed wrapper sees a single forward)."""
        if sample is None and pixel_values is None:
            raise ValueError(
                "pass sample/timestep/prompt_ids (generation) and/or pixel_values/question_ids (understanding)"
            )
        velocity = logits = None
        if sample is not None:
            if timestep is None or prompt_ids is None:
                raise ValueError("generation needs timestep and prompt_ids together with sample")
            velocity = self.predict_velocity(sample, timestep, prompt_ids)
        if pixel_values is not None:
            if question_ids is None:
                raise ValueError("understanding needs question_ids together with pixel_values")
            logits = self.answer_logits(pixel_values, question_ids)
        if not return_dict:
            return (velocity, logits)
        return UnifiedModelOutput(sample=velocity, logits=logits)
