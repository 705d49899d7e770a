"""selfgen: self-improving generative models on diffusers, transformers and accelerate.

The package's parts live in top-level folders mapped into this namespace (``selfgen.models``,
``selfgen.pipelines``, ``selfgen.train``, ``selfgen.data``, ``selfgen.eval``). Every class defined
in a ``selfgen.models`` or ``selfgen.pipelines`` module is also reachable from this root
(``from selfgen import TSDiffPipeline``), which is how diffusers loads components saved as
``["selfgen", "ClassName"]`` in ``model_index.json``. A method adds its files; nothing here changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

__version__ = "0.1.0"

# Imported on first use (``import selfgen`` stays light, so ``selfgen --help`` needs no torch).
_LAZY = {
    "ATTENTION_BACKENDS": "selfgen.models.attention",
    "Attention": "selfgen.models.attention",
    "AttentionBackendMixin": "selfgen.models.attention",
    "attention": "selfgen.models.attention",
    "SelfgenPipeline": "selfgen.pipelines.pipeline_utils",
    "UnconditionalDiffusionPipeline": "selfgen.pipelines.unconditional",
    "AutoPipeline": "selfgen.auto",
}

EXPORTING_PACKAGES = ("selfgen.pipelines", "selfgen.models")
SUBPACKAGES = ("data", "models", "pipelines", "train", "eval")


def exporting_modules() -> Iterator[ModuleType]:
    """Every module of the packages whose classes the root re-exports."""
    for package_name in EXPORTING_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            yield importlib.import_module(f"{package_name}.{info.name}")


def _loader_base_class(name: str) -> type | None:
    """diffusers checks a ``["selfgen", X]`` component against base classes it looks up on this
    package (``selfgen.ModelMixin``, ``selfgen.PreTrainedModel``, ...): hand it diffusers' and
    transformers' own."""
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    for library in ("diffusers", "transformers"):
        if name in LOADABLE_CLASSES[library]:
            return getattr(importlib.import_module(library), name)
    return None


def __getattr__(name: str):
    """The lazy names above, else ``name`` among the classes defined in ``selfgen.models`` /
    ``selfgen.pipelines`` modules."""
    if name in SUBPACKAGES:
        return importlib.import_module(f"selfgen.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        base_class = _loader_base_class(name)
        if base_class is not None:
            return base_class
        for module in exporting_modules():
            value = module.__dict__.get(name)
            if isinstance(value, type) and value.__module__ == module.__name__:
                globals()[name] = value
                return value
    raise AttributeError(f"module 'selfgen' has no attribute {name!r}")


__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "AttentionBackendMixin",
    "AutoPipeline",
    "SelfgenPipeline",
    "UnconditionalDiffusionPipeline",
    "attention",
]
