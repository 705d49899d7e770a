"""Inference for Tora2: a prompt plus, per entity, a path and a reference image -> a short video.

The rectified flow ``dx/dsigma = v(x, sigma) = (x - x0_theta(x, sigma, conditions)) / sigma`` (the model
predicts the clean video) is integrated from noise (``sigma = 1``) to the video (``sigma = 0``) with diffusers'
``FlowMatchEulerDiscreteScheduler`` through the shared
:meth:`~selfgen.pipelines.pipeline_utils.SelfgenPipeline.denoise` loop.

Example::

    pipe = Tora2Pipeline.from_pretrained("assets/tora2-sprites")
    out = pipe(prompt="a red solid star and a blue striped disc",
               entities=[{"trajectory": traj_a, "reference_image": ref_a},
                         {"trajectory": traj_b, "reference_image": ref_b}],
               num_frames=8, height=32, width=32, num_inference_steps=30,
               generator=torch.Generator().manual_seed(0), output_type="np")
    out.frames  # (1, 8, 32, 32, 3) in [0, 1]

An entity's text-entity embedding comes from its ``"description"`` when given, otherwise from the
prompt's ``" and "``-separated phrases in entity order (``"a red solid star and a blue disc"``). Prompts and
descriptions go through the pipeline's ``tokenizer`` (a WordPiece tokenizer trained on the training captions,
:func:`~selfgen.data.sprites.caption_tokenizer`): any caption is accepted, unseen words are spelled out in
single-character pieces, and text longer than the model's ``max_text_length`` tokens is truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from transformers import PreTrainedTokenizerFast

from ..data.sprites import entity_phrases
from ..models.tora import Tora2Transformer
from .pipeline_utils import SelfgenPipeline, check_output_type

Entity = dict[str, Any]
MIN_SIGMA = 1e-3


@dataclass
class Tora2PipelineOutput(BaseOutput):
    """``frames``: numpy ``(batch, F, H, W, 3)`` or torch ``(batch, F, 3, H, W)`` in ``[0, 1]``, or
    per video a list of PIL frames."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]


def check_trajectory(trajectory: Any, num_frames: int, where: str) -> np.ndarray:
    """``trajectory`` as float32 ``(num_frames, 2)`` in ``[0, 1]``; otherwise a ``ValueError`` naming ``where``."""
    try:
        points = np.asarray(trajectory, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: trajectory must be a (num_frames, 2) array of (x, y) in [0, 1]") from None
    if points.shape != (num_frames, 2):
        raise ValueError(
            f"{where}: trajectory must have shape ({num_frames}, 2) (one (x, y) per frame), got {points.shape}"
        )
    if not np.isfinite(points).all() or points.min() < 0 or points.max() > 1:
        raise ValueError(f"{where}: trajectory coordinates must be finite and in [0, 1] (normalised x, y)")
    return points


def check_visibility(visibility: Any, num_frames: int, where: str) -> torch.Tensor:
    """Optional per-frame ``visibility`` (``num_frames`` bools; frames where the entity is out of view are False)."""
    if visibility is None:
        return torch.ones(num_frames)
    flags = np.asarray(visibility)
    if flags.shape != (num_frames,) or not np.isin(flags, (0, 1)).all():
        raise ValueError(f"{where}: visibility must be {num_frames} booleans (one per frame), got {flags!r}")
    return torch.from_numpy(flags.astype(np.float32))


def check_reference_image(image: Any, size: int, where: str) -> torch.Tensor:
    """A reference image (PIL, or ``(h, w, 3)`` array in ``[0, 1]``) as ``(3, size, size)`` in ``[-1, 1]``."""
    if image is None:
        raise ValueError(f"{where}: missing 'reference_image' (the entity alone, (h, w, 3) in [0, 1] or PIL)")
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{where}: reference_image must be (h, w, 3), got shape {array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{where}: reference_image values must be finite and in [0, 1]")
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None]
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return pixels[0] * 2 - 1


def _entity_descriptions(prompt: str, entities: Sequence[Entity], where: str) -> list[str]:
    if all("description" in entity for entity in entities):
        return [str(entity["description"]) for entity in entities]
    phrases = entity_phrases(prompt)
    if len(phrases) != len(entities):
        raise ValueError(
            f"{where}: prompt {prompt!r} names {len(phrases)} entities (phrases joined by ' and ') but "
            f"{len(entities)} entities were given; add a 'description' to each entity"
        )
    return phrases


def token_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """``(len(texts), max_length)`` token ids, padded with the tokenizer's pad id and truncated."""
    if not all(isinstance(text, str) for text in texts):
        raise ValueError(f"prompts and descriptions must be strings, got {list(texts)!r}")
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return encoded.input_ids


def entity_conditions(
    prompts: Sequence[str], entities: Sequence[Sequence[Entity]], config: Any, tokenizer: Any
) -> dict[str, torch.Tensor]:
    """Validated :class:`Tora2Transformer` inputs for a batch of prompts and entity lists (CPU tensors):
    ``prompt_ids``, ``trajectories``, ``entity_mask``, ``reference_images`` and ``entity_ids``, with
    ``config.max_entities`` slots per video. Reference images are required in modes ``tora2`` and ``no_gate``."""
    slots = config.max_entities
    batch = {
        "prompt_ids": token_ids(tokenizer, prompts, config.max_text_length),
        "trajectories": torch.full((len(prompts), slots, config.num_frames, 2), 0.5),
        "entity_mask": torch.zeros(len(prompts), slots, dtype=torch.bool),
        "visibility": torch.ones(len(prompts), slots, config.num_frames),
        "reference_images": torch.zeros(len(prompts), slots, 3, config.reference_size, config.reference_size),
        "entity_ids": torch.full((len(prompts), slots, config.max_entity_text_length), tokenizer.pad_token_id),
    }
    for index, (prompt, video_entities) in enumerate(zip(prompts, entities)):
        where = f"entities[{index}]" if len(prompts) > 1 else "entities"
        if not isinstance(video_entities, (list, tuple)) or not 1 <= len(video_entities) <= slots:
            raise ValueError(f"{where} must be a list of 1 to {slots} entity dicts, got {video_entities!r}")
        descriptions = _entity_descriptions(prompt, video_entities, where)
        batch["entity_ids"][index, : len(descriptions)] = token_ids(tokenizer, descriptions, config.max_entity_text_length)
        for slot, entity in enumerate(video_entities):
            here = f"{where}[{slot}]"
            if not isinstance(entity, dict) or "trajectory" not in entity:
                raise ValueError(f"{here} must be a dict with 'trajectory' and 'reference_image'")
            batch["trajectories"][index, slot] = torch.from_numpy(
                check_trajectory(entity["trajectory"], config.num_frames, here)
            )
            batch["entity_mask"][index, slot] = True
            batch["visibility"][index, slot] = check_visibility(entity.get("visibility"), config.num_frames, here)
            if config.mode in ("tora2", "no_gate"):
                batch["reference_images"][index, slot] = check_reference_image(
                    entity.get("reference_image"), config.reference_size, here
                )
    return batch


class Tora2Pipeline(SelfgenPipeline):
    """Multi-entity, motion- and appearance-customised video generation with a :class:`Tora2Transformer`."""

    model_cpu_offload_seq = "transformer"

    def __init__(
        self, transformer: Tora2Transformer, scheduler: FlowMatchEulerDiscreteScheduler, tokenizer: PreTrainedTokenizerFast
    ) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, tokenizer=tokenizer)

    def encode_conditions(self, prompts: Sequence[str], entities: Sequence[Sequence[Entity]]) -> dict[str, torch.Tensor]:
        """:func:`entity_conditions` for this pipeline's transformer and tokenizer, on its device."""
        batch = entity_conditions(prompts, entities, self.transformer.config, self.tokenizer)
        return {name: tensor.to(self._execution_device) for name, tensor in batch.items()}

    def _check_size(self, num_frames: int, height: int, width: int) -> None:
        config = self.transformer.config
        expected = (config.num_frames, config.sample_size, config.sample_size)
        if (num_frames, height, width) != expected:
            raise ValueError(
                f"this model generates (num_frames, height, width) = {expected}, got {(num_frames, height, width)}"
            )

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        entities: Sequence[Entity] | Sequence[Sequence[Entity]],
        num_frames: int = 8,
        height: int = 32,
        width: int = 32,
        num_inference_steps: int = 30,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> Tora2PipelineOutput | tuple:
        """Generate one video per prompt.

        Args:
            prompt: a prompt, or a list of prompts (then ``entities`` is a list of entity lists).
            entities: per entity ``{"trajectory": (num_frames, 2) in [0, 1], "reference_image": (h, w, 3)
                in [0, 1] or PIL, "description": optional str, "visibility": optional (num_frames,) bools}``
                (frames where ``visibility`` is False carry no trajectory condition).
            num_frames, height, width: must match the model (8, 32, 32 for the bundled asset).
            num_inference_steps: Euler steps of the flow.
            generator: torch generator(s) for reproducible noise; latents: optional starting noise
                ``(batch, F, 3, H, W)``.
            output_type: ``"np"`` ``(batch, F, H, W, 3)``, ``"pt"`` ``(batch, F, 3, H, W)`` (both in ``[0, 1]``)
                or ``"pil"`` (a list of frame lists).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        entity_lists = [entities] if isinstance(prompt, str) else list(entities)
        self.check_sampling_inputs(len(prompts), output_type, callback_on_step_end_tensor_inputs)
        if len(entity_lists) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(entity_lists)} entity lists")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self._check_size(num_frames, height, width)
        conditions = self.encode_conditions(prompts, entity_lists)
        shape = (len(prompts), num_frames, self.transformer.config.in_channels, height, width)
        latents = self.prepare_latents(shape, self.transformer.dtype, generator, latents)

        def predict_velocity(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            timesteps = timestep.expand(model_input.shape[0])
            clean = self.transformer(sample=model_input, timestep=timesteps, **conditions).sample
            sigma = (timestep / self.scheduler.config.num_train_timesteps).clamp_min(MIN_SIGMA)
            return (model_input - clean) / sigma

        latents = self.denoise(
            latents,
            num_inference_steps,
            predict_velocity,
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        frames = self.postprocess_video(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return Tora2PipelineOutput(frames=frames)

    @staticmethod
    def postprocess_video(video: torch.Tensor, output_type: str):
        """``(B, F, 3, H, W)`` in ``[-1, 1]`` -> the requested output in ``[0, 1]``."""
        check_output_type(output_type)
        video = ((video.float() + 1) / 2).clamp(0, 1)
        if output_type == "pt":
            return video
        frames = video.permute(0, 1, 3, 4, 2).cpu().numpy()
        if output_type == "np":
            return frames
        return [[PIL.Image.fromarray((frame * 255).round().astype(np.uint8)) for frame in clip] for clip in frames]
