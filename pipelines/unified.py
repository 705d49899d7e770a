"""Inference for the unified model: text -> image generation and image + question -> answer.

Generation integrates the rectified flow ``dx/dsigma = v_theta(x, sigma, prompt)`` from ``sigma = 1``
(noise) to ``sigma = 0`` with diffusers' ``FlowMatchEulerDiscreteScheduler``, with classifier-free
guidance ``v = v_uncond + w (v_cond - v_uncond)`` (the unconditional prompt is ``<bos> <eos>``).
Understanding reads the answer token after ``<a>``; :meth:`UnifiedPipeline.score` turns the model's
own yes/no judgement of ``does the image show {prompt}?`` into a score ``2 P(yes) - 1`` in ``[-1, 1]``.

The pipeline implements SRUM's model protocol (``selfgen.train.srum.SelfRewardingUMM``: ``generate``,
``encode_prompts``, ``generation_parameters``, ``velocity``, ``encode_samples``); ``yes_probability`` and ``score`` are what
the shapes world's self-reward asks (``selfgen.train.srum_shapes``).

With a ``vae`` (a frozen ``AutoencoderKL``, :mod:`selfgen.models.scene_autoencoder`; BAGEL: FLUX's VAE) the flow runs
on the transformer's latent grid (``transformer.generation_shape``) and the sampled latents are decoded to pixels;
understanding always reads pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput
from torch import nn

from ..data.scenes import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TOKEN_IDS,
    VOCAB,
    encode_prompt,
    encode_question,
    question_about_prompt,
)
from ..models.scene_autoencoder import decode_latents, encode_latents
from ..models.unified import UnifiedTransformer
from .pipeline_utils import SelfgenPipeline, postprocess_images

ImageInput = np.ndarray | torch.Tensor | Sequence[PIL.Image.Image]


class UnifiedPipeline(SelfgenPipeline):
    """Generate scenes from prompts and answer questions about images with one :class:`UnifiedTransformer`.

    Example::

        pipe = UnifiedPipeline.from_pretrained("assets/unified-shapes")
        images = pipe.generate(["a red circle left of a blue square"], generator=torch.Generator().manual_seed(0),
                               output_type="np").images
        pipe.understand(images, ["is there a red circle?"])  # ["yes"]
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: UnifiedTransformer,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL | None = None,
    ) -> None:
        super().__init__()
        if transformer.config.vocab_size != len(VOCAB):
            raise ValueError(
                f"transformer.config.vocab_size={transformer.config.vocab_size} but selfgen.data.scenes.VOCAB has "
                f"{len(VOCAB)} tokens: the checkpoint was trained with another vocabulary"
            )
        latent = transformer.config.generation_latent_channels
        if bool(latent) != (vae is not None) or (vae is not None and vae.config.latent_channels != latent):
            raise ValueError(
                f"the transformer generates {'latents of ' + str(latent) + ' channels' if latent else 'pixels'} but "
                f"the pipeline got {'no vae' if vae is None else 'a vae of ' + str(vae.config.latent_channels) + ' latent channels'}: "
                "a latent-generation transformer needs its own frozen autoencoder, a pixel one none"
            )
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)

    # ------------------------------------------------------------------ inputs

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(N, MAX_PROMPT_TOKENS)``; a prompt outside the grammar is a ``ValueError``."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        return torch.tensor([encode_prompt(prompt) for prompt in prompts], device=self._execution_device)

    def _pixel_values(self, images: ImageInput) -> torch.Tensor:
        """Images as ``(N, 3, H, W)`` in ``[-1, 1]`` from numpy ``(N, H, W, 3)`` / PIL in ``[0, 1]`` / 0-255,
        or a ``(N, 3, H, W)`` tensor in ``[-1, 1]``."""
        if isinstance(images, torch.Tensor):
            pixels = images
        else:
            if isinstance(images, (list, tuple)) and images and isinstance(images[0], PIL.Image.Image):
                images = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255 for image in images])
            array = np.asarray(images, dtype=np.float32)
            if array.ndim != 4 or array.shape[-1] != 3:
                raise ValueError(f"images must be (N, H, W, 3) in [0, 1], got shape {array.shape}")
            pixels = torch.from_numpy(array).permute(0, 3, 1, 2) * 2 - 1
        size = self.transformer.config.sample_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"images must be {size}x{size} RGB; got a tensor of shape {tuple(pixels.shape)}")
        return pixels.to(self._execution_device, self.transformer.dtype)

    # ------------------------------------------------------------------ generation

    def velocity(
        self, model: nn.Module, sample: torch.Tensor, sigmas: torch.Tensor, prompt_ids: torch.Tensor
    ) -> torch.Tensor:
        """``v_theta(x_sigma, sigma, prompt)`` from ``model`` (this pipeline's transformer, possibly wrapped
        for training) for ``sigmas`` in ``[0, 1]``: the quantity SRUM's loss is written on."""
        return model(sample=sample, timestep=sigmas * 1000, prompt_ids=prompt_ids).sample

    def generation_parameters(self) -> list[nn.Parameter]:
        return self.transformer.generation_parameters()

    @torch.no_grad()
    def encode_samples(self, images: ImageInput) -> torch.Tensor:
        """The clean flow sample ``x0`` of decoded images (SRUM trains on its own samples through this): the
        pixels in ``[-1, 1]``, or with a ``vae`` its normalised posterior-mean latents
        (:func:`~selfgen.models.scene_autoencoder.encode_latents`, as the latent path's pretraining encodes scenes)."""
        pixels = self._pixel_values(images)
        return pixels if self.vae is None else encode_latents(self.vae, pixels.to(self.vae.dtype))

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """One image per prompt (prompts follow ``selfgen.data.scenes.PROMPT_GRAMMAR``).

        Args:
            prompts: list of prompts; a word outside the grammar is a ``ValueError`` naming it.
            num_inference_steps: Euler steps of the flow.
            guidance_scale: classifier-free guidance weight ``w`` (1 disables it).
            generator: torch generator for reproducible noise.
            latents: optional starting noise ``(N, *transformer.generation_shape)`` (pixels, or the vae's latents).
            output_type: ``"pil"``, ``"np"`` (``(N, H, W, 3)`` in ``[0, 1]``) or ``"pt"``
                (``(N, 3, H, W)`` in ``[0, 1]``).
        """
        self.check_sampling_inputs(len(prompts), output_type, ())
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        prompt_ids = self.encode_prompts(prompts)
        shape = (len(prompts), *self.transformer.generation_shape)
        latents = self.prepare_latents(shape, self.transformer.dtype, generator, latents)
        use_cfg = guidance_scale != 1.0
        if use_cfg:
            empty = torch.full_like(prompt_ids, PAD_ID)
            empty[:, 0], empty[:, 1] = BOS_ID, EOS_ID
            prompt_ids = torch.cat([empty, prompt_ids])

        def predict_velocity(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            model_input = torch.cat([model_input, model_input]) if use_cfg else model_input
            velocity = self.transformer(
                sample=model_input, timestep=timestep.expand(model_input.shape[0]), prompt_ids=prompt_ids
            ).sample
            if not use_cfg:
                return velocity
            uncond, cond = velocity.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        latents = self.denoise(latents, num_inference_steps, predict_velocity)
        pixels = latents.clamp(-1, 1) if self.vae is None else decode_latents(self.vae, latents.to(self.vae.dtype))
        images = postprocess_images(pixels, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    __call__ = generate

    # ------------------------------------------------------------------ understanding

    def _answer_logits(self, images: ImageInput, questions: Sequence[str]) -> torch.Tensor:
        pixels = self._pixel_values(images)
        if isinstance(questions, str) or len(questions) != len(pixels):
            raise ValueError(f"questions must be a list with one question per image ({len(pixels)}), got {questions!r}")
        question_ids = torch.tensor([encode_question(q) for q in questions], device=self._execution_device)
        return self.transformer(pixel_values=pixels, question_ids=question_ids).logits[:, -1].float()

    @torch.no_grad()
    def understand(self, images: ImageInput, questions: Sequence[str]) -> list[str]:
        """The model's one-word answer to each question about the matching image."""
        logits = self._answer_logits(images, questions)
        return [VOCAB[index] for index in logits.argmax(-1).tolist()]

    @torch.no_grad()
    def yes_probability(self, images: ImageInput, questions: Sequence[str]) -> torch.Tensor:
        """``P(yes) / (P(yes) + P(no))`` for each yes/no question, ``(N,)``."""
        logits = self._answer_logits(images, questions)
        pair = logits[:, [TOKEN_IDS["yes"], TOKEN_IDS["no"]]]
        return pair.softmax(-1)[:, 0]

    @torch.no_grad()
    def score(self, images: ImageInput, prompts: Sequence[str]) -> np.ndarray:
        """Self-judged prompt-image agreement ``2 P(yes | does the image show {prompt}?) - 1`` in ``[-1, 1]``."""
        probability = self.yes_probability(images, [question_about_prompt(prompt) for prompt in prompts])
        return (2 * probability - 1).cpu().numpy()
