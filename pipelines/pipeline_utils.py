"""What every selfgen pipeline shares on top of diffusers' ``DiffusionPipeline``.

* ``set_attention_backend(name)`` switches every attention layer of every component: our own
  :class:`~selfgen.models.attention.Attention` modules directly, diffusers models through their
  attention processors. ``enable_xformers_memory_efficient_attention()`` is diffusers' own and
  reaches both kinds.
* ``postprocess_images`` turns ``[-1, 1]`` image tensors into ``"pil"``, ``"np"`` or ``"pt"`` output.
"""

from __future__ import annotations

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
