"""How the CLI finds methods without a branch per method.

A method's training module defines a module-level ``METHOD = Method(...)`` (or ``METHODS = [...]``);
:func:`discover_methods` imports every module under ``selfgen.train`` and collects them.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainingConfig


@dataclass(frozen=True)
class Method:
    """One trainable method as the CLI sees it.

    Attributes:
        name: the CLI name (``selfgen train <name>``).
        summary: one line for ``selfgen list``.
        config_class: its :class:`TrainingConfig` subclass.
        train: ``train(config) -> TrainResult``.
        generate: ``generate(model_path, output_dir, **options) -> dict`` for ``selfgen generate``.
        evaluate: ``evaluate(model_path, output_dir, **options) -> dict`` for ``selfgen eval``; returns
            metrics (the CLI saves them as ``output_dir/metrics.json``; the method writes only its own files).
        demo: ``demo(asset_dir, output_dir) -> dict`` for ``selfgen demo``; returns metrics (saved likewise).
        demo_asset: folder under ``assets/`` that the demo loads.
    """

    name: str
    summary: str
    config_class: type[TrainingConfig]
    train: Callable[[Any], Any]
    generate: Callable[..., dict] | None = None
    evaluate: Callable[..., dict] | None = None
    demo: Callable[[Path, Path], dict] | None = None
    demo_asset: str | None = None


def discover_methods() -> dict[str, Method]:
    """Import every module under ``selfgen.train`` and return its ``METHOD``/``METHODS`` by name.

    A module that fails to import is reported with a warning naming it and the error, and the
    other methods stay usable."""
    package = importlib.import_module("selfgen.train")
    methods: dict[str, Method] = {}
    for info in pkgutil.walk_packages(package.__path__, prefix="selfgen.train.", onerror=_warn_unimportable):
        try:
            module = importlib.import_module(info.name)
        except Exception as error:  # a broken method must not take the whole CLI down
            _warn_unimportable(info.name, error)
            continue
        found = list(getattr(module, "METHODS", [])) + ([module.METHOD] if hasattr(module, "METHOD") else [])
        for method in found:
            if method.name in methods:
                raise ValueError(f"two methods are named {method.name!r}: {info.name} and another module")
            methods[method.name] = method
    return dict(sorted(methods.items()))


def _warn_unimportable(module_name: str, error: BaseException | None = None) -> None:
    detail = f"{type(error).__name__}: {error}" if error is not None else "import failed"
    warnings.warn(f"selfgen: skipping method module {module_name} ({detail})", RuntimeWarning, stacklevel=3)

