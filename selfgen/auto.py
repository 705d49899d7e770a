"""``AutoPipeline.from_pretrained(path)``: the right selfgen pipeline class for a saved folder.

diffusers' own ``DiffusionPipeline.from_pretrained`` looks ``_class_name`` up among diffusers'
pipelines only; this reads ``model_index.json`` and looks it up among selfgen's.
"""

from __future__ import annotations

import os

from diffusers import DiffusionPipeline

from selfgen.pipelines.pipeline_utils import is_local_path, pipeline_class_name, read_model_index


def _pipeline_classes() -> dict[str, type[DiffusionPipeline]]:
    """Every ``DiffusionPipeline`` subclass defined in a ``selfgen.pipelines`` module."""
    import selfgen

    return {
        name: value
        for module in selfgen.exporting_modules()
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, DiffusionPipeline) and value.__module__ == module.__name__
    }


class AutoPipeline:
    """Factory; not instantiable. ``AutoPipeline.from_pretrained(path_or_hub_id, **kwargs)``."""

    def __init__(self) -> None:
        raise TypeError("use AutoPipeline.from_pretrained(path)")

    @classmethod
    def pipeline_class(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> type[DiffusionPipeline]:
        """The class named by the folder's ``model_index.json``."""
        if is_local_path(pretrained_model_name_or_path):
            config = read_model_index(pretrained_model_name_or_path)
        else:
            config = DiffusionPipeline.load_config(pretrained_model_name_or_path, **kwargs)
        class_name = pipeline_class_name(config, pretrained_model_name_or_path)
        classes = _pipeline_classes()
        if class_name not in classes:
            raise ValueError(
                f"model_index.json of {pretrained_model_name_or_path} names _class_name={class_name!r}, "
                f"which is not a selfgen pipeline; known: {', '.join(sorted(classes))}"
            )
        return classes[class_name]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DiffusionPipeline:
        load_config_keys = ("cache_dir", "local_files_only", "revision", "token")
        config_kwargs = {key: kwargs[key] for key in load_config_keys if key in kwargs}
        pipeline_class = cls.pipeline_class(pretrained_model_name_or_path, **config_kwargs)
        return pipeline_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
