"""Unconditional image diffusion with any diffusers UNet and scheduler (DDPM, Ho et al. 2020).

The foundation's end-to-end example and the baseline that self-conditioned methods must beat:
``x_T ~ N(0, I)``, then ``x_{t-1} = scheduler.step(eps_theta(x_t, t), t, x_t)`` down to ``x_0``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import ImagePipelineOutput, SchedulerMixin, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_utils import SelfgenPipeline, check_output_type, postprocess_images


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
        check_output_type(output_type)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be within {self._callback_tensor_inputs}")
        config = self.unet.config
        shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        for step_index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            noise_pred = self.unet(model_input, timestep).sample
            latents = self.scheduler.step(noise_pred, timestep, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                available = {"latents": latents}
                tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                latents = callback_on_step_end(self, step_index, timestep, tensors).get("latents", latents)

        images = postprocess_images(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
