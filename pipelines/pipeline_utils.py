"""What every selfgen pipeline shares on top of diffusers' ``DiffusionPipeline``.

* ``set_attention_backend(name)`` switches every attention layer of every component: our own
  :class:`~selfgen.models.attention.Attention` modules directly, diffusers models through their
  attention processors. ``enable_xformers_memory_efficient_attention()`` is diffusers' own and
  reaches both kinds.
* ``postprocess_images`` turns ``[-1, 1]`` image tensors into ``"pil"``, ``"np"`` or ``"pt"`` output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import Attention as DiffusersAttention
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, XFormersAttnProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..data.validation import check_positive_int
from ..models.attention import Attention, check_attention_backend

IMAGE_OUTPUT_TYPES = ("pil", "np", "pt")

_DIFFUSERS_PROCESSORS = {"sdpa": AttnProcessor2_0, "math": AttnProcessor, "xformers": XFormersAttnProcessor}


class SelfgenPipeline(DiffusionPipeline):
    """Base class of selfgen pipelines: a ``DiffusionPipeline`` with attention-backend switching."""

    def register_modules(self, **kwargs) -> None:
        """diffusers records a third-party component by its full module path
        (``["selfgen.models.tsdiff", "TSDiffModel"]``); record it as ``["selfgen", "TSDiffModel"]``
        instead, so saved folders survive moving a class between files. The root package resolves it."""
        super().register_modules(**kwargs)
        for name in kwargs:
            entry = self.config.get(name)
            if isinstance(entry, (list, tuple)) and entry[0] and entry[0].startswith("selfgen."):
                self.register_to_config(**{name: ("selfgen", entry[1])})

    def set_attention_backend(self, backend: str) -> None:
        """Use ``backend`` (``"sdpa"``, ``"xformers"`` or ``"math"``) in every component's attention."""
        check_attention_backend(backend)
        for component in self.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for module in component.modules():
                if isinstance(module, Attention):
                    module.set_attention_backend(backend)
                elif isinstance(module, DiffusersAttention):
                    module.set_processor(_DIFFUSERS_PROCESSORS[backend]())


    def check_sampling_inputs(
        self, batch_size: int, output_type: str, callback_on_step_end_tensor_inputs: tuple[str, ...]
    ) -> None:
        check_output_type(output_type)
        check_positive_int(batch_size, "batch_size")
        allowed = getattr(self, "_callback_tensor_inputs", ["latents"])
        if set(callback_on_step_end_tensor_inputs) - set(allowed):
            raise ValueError(f"callback_on_step_end_tensor_inputs must be within {allowed}")

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Starting noise ``x_T ~ N(0, I)`` of ``shape`` (or the given ``latents``), scaled for the scheduler."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
        # flow-matching schedulers start from unit noise and have no init_noise_sigma
        return latents.to(self._execution_device) * getattr(self.scheduler, "init_noise_sigma", 1.0)

    def scale_model_input(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The scheduler's input scaling; flow-matching schedulers have none."""
        if hasattr(self.scheduler, "scale_model_input"):
            return self.scheduler.scale_model_input(latents, timestep)
        return latents

    def denoise(
        self,
        latents: torch.Tensor,
        num_inference_steps: int,
        predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator: torch.Generator | list[torch.Generator] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> torch.Tensor:
        """The reverse process ``x_{t-1} = scheduler.step(predict_noise(scale(x_t), t), t, x_t)`` down to ``x_0``
        (``predict_noise`` returns whatever the scheduler steps on: noise, ``v`` or a flow velocity),
        with a progress bar and ``callback_on_step_end(pipe, step_index, t, {"latents": x}) -> dict``."""
        num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        for step_index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = self.scale_model_input(latents, timestep)
            noise_pred = predict_noise(model_input, timestep)
            latents = self.scheduler.step(noise_pred, timestep, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                available = {"latents": latents}
                tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                latents = callback_on_step_end(self, step_index, timestep, tensors).get("latents", latents)
        return latents


def check_output_type(output_type: str, allowed: tuple[str, ...] = IMAGE_OUTPUT_TYPES) -> None:
    if output_type not in allowed:
        raise ValueError(f"output_type must be one of {allowed}, got {output_type!r}")


def postprocess_images(images: torch.Tensor, output_type: str):
    """``(N, C, H, W)`` in ``[-1, 1]`` -> PIL list, numpy ``(N, H, W, C)`` in ``[0, 1]`` or the clamped tensor in ``[0, 1]``."""
    check_output_type(output_type)
    processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=True)
    return processor.postprocess(images.float(), output_type=output_type)


SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}


def use_scheduler(pipe: DiffusionPipeline, name: str) -> None:
    """Swap ``pipe.scheduler`` for the scheduler called ``name`` built from the same config."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
