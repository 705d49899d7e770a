"""DDAE++ pipeline: sample from a self-conditioned DiT, and read its features for recognition.

Sampling is ordinary ancestral/ODE diffusion sampling with any diffusers scheduler (DDPM, DDIM,
DPM-Solver++): ``x_T ~ N(0, I)``, ``x_{t-1} = scheduler.step(eps_theta(x_t, t, y), t, x_t)``, with
classifier-free guidance ``eps = eps(x_t, t, null) + w (eps(x_t, t, y) - eps(x_t, t, null))`` when
the model is class-conditional and ``guidance_scale = w > 1``.

Self-guidance by a degraded copy of the network (a departure: the DDAE++ paper samples unguided), for an
unconditional model, with ``perturbed_guidance_scale = w`` and ``perturbed_layers = B``::

    eps = eps_bad(x_t, t) + w (eps(x_t, t) - eps_bad(x_t, t))

where ``eps_bad`` is the same network with, in the blocks ``B``, the self-attention map replaced by the identity
(``perturbation="attention"``: Perturbed-Attention Guidance, Ahn et al. 2024, made for unconditional sampling) or the
blocks skipped (``"skip"``: Skip-Layer Guidance, as in diffusers' ``SkipLayerGuidance``). ``w = 1`` is unguided;
each step then costs two network evaluations instead of one.

Representations (DDAE, Xiang et al. 2023): noise a clean image to ``x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps`` at a fixed small ``t``, run the encoder, and globally average pool the tokens
of block ``l``: ``f(x_0) = mean_n h_l(x_t)[n]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import ImagePipelineOutput, SchedulerMixin
from PIL import Image

from ..data.validation import check_positive_int, images_to_tensor
from ..models.ddae import DDAETransformer2DModel
from .pipeline_utils import SelfgenPipeline, postprocess_images


class DDAEPipeline(SelfgenPipeline):
    """Generate images with, and extract features from, a :class:`DDAETransformer2DModel`.

    Example::

        pipe = DDAEPipeline.from_pretrained("assets/ddae-digits")
        images = pipe(batch_size=64, generator=torch.Generator().manual_seed(0), output_type="np").images
        features = pipe.extract_features(images)  # (64, hidden_size)
    """

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer: DDAETransformer2DModel, scheduler: SchedulerMixin) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    def _class_labels(self, class_labels, batch_size: int) -> torch.Tensor | None:
        num_classes = self.transformer.config.num_classes
        if class_labels is None:
            return None
        if num_classes == 0:
            raise ValueError("class_labels given but the transformer is unconditional (num_classes=0)")
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=self._execution_device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"class_labels must be one int or {batch_size} ints in [0, {num_classes}), got {class_labels}")
        return labels

    def _check_self_guidance(
        self, scale: float, layers: Sequence[int] | None, perturbation: str, labels, guidance_scale: float
    ) -> tuple[int, ...]:
        """Validate the self-guidance arguments; returns the degraded blocks (empty when it is off)."""
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale >= 1.0:
            raise ValueError(f"perturbed_guidance_scale must be a number >= 1 (1 disables it), got {scale!r}")
        if scale == 1.0:
            return ()
        if not layers:
            raise ValueError(f"perturbed_layers must name at least one block when perturbed_guidance_scale != 1, got {layers!r}")
        self.transformer.check_perturbation(layers, perturbation)
        if labels is not None and guidance_scale != 1.0:
            raise ValueError("perturbed_guidance_scale != 1 together with classifier-free guidance is not implemented")
        return tuple(layers)

    def _self_guided_noise(self, latents, timestep, labels, scale: float, layers: tuple[int, ...], perturbation: str):
        """``eps_bad + w (eps - eps_bad)``, the full and the degraded network evaluated on the same input."""
        full = self.transformer(latents, timestep, labels).sample
        bad = self.transformer(latents, timestep, labels, perturbed_layers=layers, perturbation=perturbation).sample
        return bad + scale * (full - bad)

    def _predict_noise(self, latents, timestep, labels: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
        """``eps_theta``, with classifier-free guidance when labels are given and ``guidance_scale != 1``."""
        if labels is None or guidance_scale == 1.0:
            return self.transformer(latents, timestep, labels).sample
        null = torch.full_like(labels, self.transformer.null_class)
        both = self.transformer(torch.cat([latents, latents]), timestep, torch.cat([labels, null])).sample
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 16,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        perturbed_guidance_scale: float = 1.0,
        perturbed_layers: Sequence[int] | None = None,
        perturbation: str = "attention",
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[SelfgenPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Sample ``batch_size`` images.

        Args:
            num_inference_steps: scheduler steps.
            generator: torch generator(s) for reproducible noise.
            class_labels: one label or one per image (class-conditional models only).
            guidance_scale: classifier-free guidance weight ``w`` (``1`` disables it).
            perturbed_guidance_scale: self-guidance weight ``w`` in ``eps_bad + w (eps - eps_bad)`` (``1``
                disables it and gives the unguided output exactly; unconditional sampling only).
            perturbed_layers: 1-based blocks degraded in ``eps_bad`` (required when the scale is not 1).
            perturbation: ``"attention"`` (identity attention map, PAG) or ``"skip"`` (skip the blocks, SLG).
            latents: optional starting noise ``(batch_size, C, H, W)``.
            output_type: ``"pil"``, ``"np"`` (``(N, H, W, C)`` in ``[0, 1]``) or ``"pt"``.
            callback_on_step_end: ``fn(pipe, step_index, timestep, tensors) -> dict`` after each step.
        """
        self.check_sampling_inputs(batch_size, output_type, callback_on_step_end_tensor_inputs)
        config = self.transformer.config
        labels = self._class_labels(class_labels, batch_size)
        layers = self._check_self_guidance(perturbed_guidance_scale, perturbed_layers, perturbation, labels, guidance_scale)
        shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
        latents = self.prepare_latents(shape, self.transformer.dtype, generator, latents)
        latents = self.denoise(
            latents,
            num_inference_steps,
            lambda model_input, timestep: (
                self._self_guided_noise(model_input, timestep, labels, perturbed_guidance_scale, layers, perturbation)
                if layers
                else self._predict_noise(model_input, timestep, labels, guidance_scale)
            ),
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        images = postprocess_images(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def extract_features(
        self,
        images,
        timestep: int | None = None,
        layer: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Pooled block-``layer`` features of ``images`` noised to ``timestep``: ``(N, hidden_size)`` float32.

        Args:
            images: numpy ``(N, H, W, C)`` in ``[0, 1]``, a list of PIL images, or torch ``(N, C, H, W)`` in ``[-1, 1]``.
            timestep: noise level ``t`` (default: the transformer's ``feature_timestep``, chosen by the probe sweep).
            layer: 1-based block index (default: the transformer's ``feature_layer``).
            generator: the noise ``eps``; a generator seeded 0 by default, so features are deterministic.
        """
        return self.extract_feature_sets(images, [timestep], [layer], generator, batch_size)[(timestep, layer)]

    @torch.no_grad()
    def extract_feature_sets(
        self,
        images,
        timesteps: Sequence[int | None],
        layers: Sequence[int | None],
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> dict[tuple[int | None, int | None], torch.Tensor]:
        """:meth:`extract_features` for every ``(timestep, layer)`` pair, sharing one encoder pass per timestep."""
        transformer = self.transformer
        config = transformer.config
        pixels = images_to_tensor(images, "images", config.in_channels, config.sample_size)
        batch_size = check_positive_int(batch_size, "batch_size")
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        noise = torch.randn(pixels.shape, generator=generator)
        resolved = {layer: transformer.feature_layer if layer is None else layer for layer in layers}
        features = {}
        for timestep in timesteps:
            step = config.feature_timestep if timestep is None else timestep
            if not 0 <= step < self.scheduler.config.num_train_timesteps:
                raise ValueError(f"timestep must be in [0, {self.scheduler.config.num_train_timesteps}), got {step}")
            chunks = []
            for start in range(0, len(pixels), batch_size):
                clean, eps = pixels[start : start + batch_size], noise[start : start + batch_size]
                noisy = self.scheduler.add_noise(clean, eps, torch.tensor([step])).to(self._execution_device)
                pooled = transformer.pooled_features(noisy.to(transformer.dtype), step, tuple(set(resolved.values())))
                chunks.append({layer: value.float().cpu() for layer, value in pooled.items()})
            for layer, index in resolved.items():
                features[(timestep, layer)] = torch.cat([chunk[index] for chunk in chunks])
        return features
