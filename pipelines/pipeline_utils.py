"""What every selfgen pipeline shares on top of diffusers' ``DiffusionPipeline``.

* ``set_attention_backend(name)`` switches every attention layer of every component: our own
  :class:`~selfgen.models.attention.Attention` modules directly, diffusers models through their
  attention processors. ``enable_xformers_memory_efficient_attention()`` is diffusers' own and
  reaches both kinds.
* ``postprocess_images`` turns ``[-1, 1]`` image tensors into ``"pil"``, ``"np"`` or ``"pt"`` output.
* ``from_pretrained`` checks a local folder first (:func:`check_pipeline_folder`): a missing, empty,
  truncated or wrong-type folder is one ``FileNotFoundError``/``ValueError`` line naming the folder
  and what is missing or which pipeline class it holds, not diffusers' traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def read_model_index(folder: str | os.PathLike) -> dict[str, Any]:
    """A saved pipeline folder's ``model_index.json``, or one clear error naming the folder and what is wrong."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} is a file, not a saved pipeline folder")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        if (folder / "config.json").is_file():
            raise ValueError(f"{folder} holds a single model (config.json), not a pipeline: it has no model_index.json")
        empty = " (the folder is empty)" if not any(folder.iterdir()) else ""
        raise FileNotFoundError(
            f"model folder {folder} has no model_index.json{empty}: not a saved pipeline (pipe.save_pretrained makes one)"
        )
    try:
        index = json.loads(index_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{index_path} is not valid JSON ({error}): the folder is damaged or truncated") from None
    if not isinstance(index, dict):
        raise ValueError(f"{index_path} must hold a JSON object, got {type(index).__name__}")
    return index


def pipeline_class_name(index: dict[str, Any], folder: str | os.PathLike) -> str:
    """``_class_name`` of a model index; diffusers also writes ``["module", "ClassName"]`` for custom pipelines."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and name:
        name = name[-1]
    if not isinstance(name, str):
        raise ValueError(f"{Path(folder) / 'model_index.json'} has no usable _class_name (got {name!r})")
    return name


def _check_component(folder: Path, name: str) -> None:
    """The component's subfolder exists, its JSON files parse and its safetensors headers cover their files."""
    from safetensors import safe_open

    subfolder = folder / name
    if not subfolder.is_dir() or not any(subfolder.iterdir()):
        raise FileNotFoundError(f"{subfolder} is missing or empty (model_index.json lists the component {name!r})")
    for path in sorted(subfolder.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
        except Exception as error:  # safetensors raises its own error type for damaged files
            raise ValueError(f"{path} is damaged or truncated ({error})") from None


def check_pipeline_folder(folder: str | os.PathLike, pipeline_class: type[DiffusionPipeline]) -> None:
    """Raise one clear error unless ``folder`` is a complete saved pipeline that ``pipeline_class`` can load."""
    folder = Path(folder)
    index = read_model_index(folder)
    class_name = pipeline_class_name(index, folder)
    components = {key for key, value in index.items() if not key.startswith("_") and isinstance(value, (list, tuple))}
    expected, _ = pipeline_class._get_signature_keys(pipeline_class)
    missing = set(expected) - set(pipeline_class._optional_components) - components
    if missing and class_name != pipeline_class.__name__:
        raise ValueError(
            f"{folder} holds a {class_name}, not a {pipeline_class.__name__}: load it with "
            f"selfgen.AutoPipeline.from_pretrained({str(folder)!r}) or selfgen.{class_name}"
        )
    if missing:
        raise ValueError(f"{folder}/model_index.json lacks the component(s) {sorted(missing)} of {class_name}")
    for name in sorted(components):
        if index[name][0] is not None:
            _check_component(folder, name)


def is_local_path(path: str | os.PathLike) -> bool:
    """A path that names this machine's file system rather than a Hub id like ``org/name``."""
    path = Path(path)
    return path.exists() or path.is_absolute() or str(path).startswith((".", "~")) or (
        len(path.parts) != 2 or path.parent.is_dir()
    )


class SelfgenPipeline(DiffusionPipeline):
    """Base class of selfgen pipelines: a ``DiffusionPipeline`` with attention-backend switching and
    a folder check before loading."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DiffusionPipeline:
        """diffusers' ``from_pretrained``, after :func:`check_pipeline_folder` for a local folder."""
        if is_local_path(pretrained_model_name_or_path):
            check_pipeline_folder(pretrained_model_name_or_path, cls)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

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
        first_step: int = 0,
    ) -> torch.Tensor:
        """The reverse process ``x_{t-1} = scheduler.step(predict_noise(scale(x_t), t), t, x_t)`` down to ``x_0``
        (``predict_noise`` returns whatever the scheduler steps on: noise, ``v`` or a flow velocity),
        with a progress bar and ``callback_on_step_end(pipe, step_index, t, {"latents": x}) -> dict``.
        ``first_step > 0`` skips the schedule's first timesteps, for latents already noised to
        ``scheduler.timesteps[first_step]`` (diffusers' img2img ``strength``)."""
        num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
        if not 0 <= first_step < num_inference_steps:
            raise ValueError(f"first_step must be in [0, {num_inference_steps}), got {first_step}")
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps[first_step:]
        for step_index, timestep in enumerate(self.progress_bar(timesteps), start=first_step):
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
