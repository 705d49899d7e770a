"""Training configuration: one dataclass per method, loaded from YAML with ``--key value`` overrides.

Every method's config subclasses :class:`TrainingConfig` (the fields the shared
:class:`~selfgen.train.trainer.Trainer` reads) and adds its own model/objective fields. Unknown
keys in a YAML file or on the command line are an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ConfigT = TypeVar("ConfigT", bound="TrainingConfig")

MIXED_PRECISION_MODES = ("no", "fp16", "bf16")

# Fields that say where and how often a run writes, not what it learns: they may change on resume.
# A method marks its own such fields with ``field(..., metadata={"resume_safe": True})``.
RUN_FIELDS = frozenset({
    "output_dir", "export_dir", "resume_from", "allow_config_change", "logging_steps", "checkpointing_steps",
    "checkpoints_total_limit", "report_to", "dataloader_num_workers",
})


@dataclass
class TrainingConfig:
    """Fields of the shared training loop (see ``train/trainer.py``)."""

    output_dir: str = "outputs/run"
    export_dir: str | None = None  # where the final pipeline is saved; default: {output_dir}/pipeline
    seed: int = 0
    max_train_steps: int = 1000
    train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    use_ema: bool = False
    ema_decay: float = 0.999
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from: str | None = None  # "latest" or a checkpoint folder
    allow_config_change: bool = False  # resume although training fields differ from the checkpoint's
    logging_steps: int = 10
    dataloader_num_workers: int = 0
    report_to: str | None = "tensorboard"  # also written when tensorboard is installed; None disables
    pretrained: str | None = None  # fine-tune from this exported pipeline / model folder
    data: str | None = None  # the user's own data (folder or file); the method decides its form
    lora_rank: int = 0  # > 0: train a peft LoRA adapter instead of all weights
    lora_alpha: float | None = None  # defaults to lora_rank
    lora_target_modules: list[str] | None = None  # module-name suffixes; default: every nn.Linear

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}")
        self.require_at_least_one("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "logging_steps")
        if self.checkpointing_steps < 0:
            raise ValueError(f"checkpointing_steps must be >= 0 (0 disables), got {self.checkpointing_steps}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")

    def require_at_least_one(self, *names: str) -> None:
        """``ValueError`` naming the first of these count fields that is below 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def require_fractions(self, *names: str) -> None:
        """``ValueError`` naming the first of these fields outside ``[0, 1]``."""
        for name in names:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def pipeline_dir(self) -> Path:
        return Path(self.export_dir) if self.export_dir else Path(self.output_dir) / "pipeline"


def _field_types(config_class: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def _accepts(annotation: Any, value: Any) -> bool:
    """Loose runtime check of a YAML value against a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _from_command_line(annotation: Any, raw: str) -> Any:
    """A raw override string as the field wants it: kept for string fields, else parsed as YAML."""
    if _accepts(annotation, raw) and raw.lower() not in ("null", "none", "~"):
        return raw
    return yaml.safe_load(raw)


def _coerce(config_class: type, values: dict[str, Any], source: str, raw_strings: bool = False) -> dict[str, Any]:
    types_by_name = _field_types(config_class)
    for key, value in values.items():
        if key not in types_by_name:
            known = ", ".join(sorted(types_by_name))
            raise ValueError(f"unknown config key {key!r} in {source} for {config_class.__name__}; known keys: {known}")
        annotation = types_by_name[key]
        if raw_strings and isinstance(value, str):
            value = values[key] = _from_command_line(annotation, value)
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not _accepts(annotation, value):
            hint = " (YAML reads yes/no/on/off as booleans: quote it)" if isinstance(value, bool) else ""
            raise ValueError(f"config key {key!r} in {source} expects {annotation}, got {value!r}{hint}")
    return values


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Parse ``["--key", "value", "--flag", ...]`` into ``{key: raw string}`` (a bare flag is ``"true"``).

    :func:`load_config` reads each raw string as YAML unless the field is a string field, so
    ``--mixed_precision no`` stays ``"no"`` while ``--max_train_steps 9`` becomes ``9``."""
    parsed: dict[str, Any] = {}
    index = 0
    while index < len(overrides):
        token = overrides[index]
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"expected an override of the form --key value, got {token!r}")
        key = token[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
            index += 1
        elif index + 1 < len(overrides) and not overrides[index + 1].startswith("--"):
            raw = overrides[index + 1]
            index += 2
        else:
            raw = "true"
            index += 1
        parsed[key] = raw
    return parsed


def load_config(
    config_class: type[ConfigT], path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ConfigT:
    """Build ``config_class`` from a YAML file (optional) and overrides; unknown keys are errors."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of key: value, got {type(loaded).__name__}")
        values.update(_coerce(config_class, loaded, str(path)))
    if overrides:
        values.update(_coerce(config_class, dict(overrides), "command-line overrides", raw_strings=True))
    return config_class(**values)


def save_config(config: TrainingConfig, path: str | Path, header: list[str] = ()) -> None:
    """``config`` as YAML, after ``header`` lines written as comments."""
    comments = "".join(f"# {line}\n" for line in header)
    Path(path).write_text(comments + yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def training_field_changes(saved: dict[str, Any], config: TrainingConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, current value)}`` for the fields that shape training (not
    :data:`RUN_FIELDS` nor ``resume_safe``) whose value differs from ``saved`` (a checkpoint's config)."""
    current = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    changes = {}
    for item in dataclasses.fields(config):
        if item.name in RUN_FIELDS or item.metadata.get("resume_safe") or item.name not in saved:
            continue
        if saved[item.name] != current[item.name]:
            changes[item.name] = (saved[item.name], current[item.name])
    return changes


def bind_options(function: Any, raw_options: dict[str, str], reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """Type command-line options by ``function``'s annotations; an option it does not take is an error."""
    hints = typing.get_type_hints(function)
    accepted = [name for name in inspect.signature(function).parameters if name not in reserved]
    options = {}
    for key, raw in raw_options.items():
        if key not in accepted:
            raise ValueError(f"unknown option --{key}; accepted: {', '.join('--' + name for name in accepted)}")
        options[key] = _from_command_line(hints[key], raw) if key in hints else yaml.safe_load(raw)
        if key in hints and not _accepts(hints[key], options[key]):
            raise ValueError(f"option --{key} expects {hints[key]}, got {raw!r}")
    return options
