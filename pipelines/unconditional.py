"""Unconditional image diffusion with any diffusers UNet and scheduler (DDPM, Ho et al. 2020).

The foundation's end-to-end example and the baseline that self-conditioned methods must beat:
``x_T ~ N(0, I)``, then ``x_{t-1} = scheduler.step(eps_theta(x_t, t), t, x_t)`` down to ``x_0``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import ImagePipelineOutput, SchedulerMixin, UNet2DModel

from .pipeline_utils import SelfgenPipeline, postprocess_images


class UnconditionalDiffusionPipeline(SelfgenPipeline):
    """Sample images from a ``UNet2DModel`` with any diffusers scheduler.

    Example::

        pipe = UnconditionalDiffusionPipeline.from_pretrained("assets/ddpm-digits")
        images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0), output_type="np").images
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 16,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[SelfgenPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Run the reverse diffusion from Gaussian noise.

        Args:
            batch_size: number of images.
            num_inference_steps: scheduler steps (the scheduler decides the timestep spacing).
            generator: torch generator(s) for reproducible noise.
            latents: optional starting noise ``(batch_size, C, H, W)``.
            output_type: ``"pil"``, ``"np"`` (``(N, H, W, C)`` in ``[0, 1]``) or ``"pt"``.
            callback_on_step_end: ``fn(pipe, step_index, timestep, tensors) -> dict`` after each step;
                may replace ``latents`` by returning it.
        """
        self.check_sampling_inputs(batch_size, output_type, callback_on_step_end_tensor_inputs)
        config = self.unet.config
        shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
        latents = self.prepare_latents(shape, self.unet.dtype, generator, latents)
        latents = self.denoise(
            latents,
            num_inference_steps,
            lambda model_input, timestep: self.unet(model_input, timestep).sample,
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        images = postprocess_images(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
