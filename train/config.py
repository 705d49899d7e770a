"""Training configuration: one dataclass per method, loaded from YAML with ``--key value`` overrides.

Every method's config subclasses :class:`TrainingConfig` (the fields the shared
:class:`~selfgen.train.trainer.Trainer` reads) and adds its own model/objective fields. Unknown
keys in a YAML file or on the command line are an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ConfigT = TypeVar("ConfigT", bound="TrainingConfig")

MIXED_PRECISION_MODES = ("no", "fp16", "bf16")
REPORTERS = (None, "tensorboard")
FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def lr_scheduler_names() -> tuple[str, ...]:
    """The names ``diffusers.optimization.get_scheduler`` accepts."""
    from diffusers.optimization import SchedulerType

    return tuple(member.value for member in SchedulerType)

# Fields that say where and how often a run writes, not what it learns: they may change on resume.
# A method marks its own such fields with ``field(..., metadata={"resume_safe": True})``.
RUN_FIELDS = frozenset({
    "output_dir", "export_dir", "resume_from", "allow_config_change", "logging_steps", "checkpointing_steps",
    "checkpoints_total_limit", "report_to", "dataloader_num_workers",
})


@dataclass
class TrainingConfig:
    """Fields of the shared training loop (see ``train/trainer.py``)."""

    output_dir: str = "outputs/run"  # everything the run writes goes here (checkpoints, logs, export)
    export_dir: str | None = None  # where the final pipeline is saved; default: {output_dir}/pipeline
    seed: int = 0  # seeds torch, numpy and python, and the data order
    max_train_steps: int = 1000  # optimizer updates in the whole run
    train_batch_size: int = 32  # examples per micro-batch and process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer update
    learning_rate: float = 1e-4  # AdamW peak learning rate (> 0)
    adam_beta1: float = 0.9  # AdamW first-moment decay, in [0, 1)
    adam_beta2: float = 0.999  # AdamW second-moment decay, in [0, 1)
    adam_weight_decay: float = 0.0  # AdamW decoupled weight decay (>= 0)
    adam_epsilon: float = 1e-8  # AdamW denominator epsilon (> 0)
    lr_scheduler: str = "constant"  # a diffusers.optimization.get_scheduler name (linear, cosine, ...)
    lr_warmup_steps: int = 0  # linear warm-up updates at the start of the schedule
    max_grad_norm: float | None = 1.0  # clip the gradient norm to this; null disables
    mixed_precision: str = "no"  # no, fp16 or bf16 autocast
    use_ema: bool = False  # keep an exponential moving average of the weights and export it
    ema_decay: float = 0.999  # EMA decay per update, in [0, 1]
    checkpointing_steps: int = 500  # save a resumable checkpoint every N updates; 0 disables
    checkpoints_total_limit: int | None = 2  # keep the newest N checkpoints; null keeps all
    resume_from: str | None = None  # "latest" or a checkpoint folder
    allow_config_change: bool = False  # resume although training fields differ from the checkpoint's
    logging_steps: int = 10  # write averaged metrics every N updates
    dataloader_num_workers: int = 0  # torch DataLoader worker processes
    report_to: str | None = "tensorboard"  # also written when tensorboard is installed; None disables
    pretrained: str | None = None  # fine-tune from this exported pipeline / model folder
    data: str | None = None  # the user's own data (folder or file); the method decides its form
    lora_rank: int = 0  # > 0: train a peft LoRA adapter instead of all weights
    lora_alpha: float | None = None  # defaults to lora_rank
    lora_target_modules: list[str] | None = None  # module-name suffixes; default: every nn.Linear

    def __post_init__(self) -> None:
        self.require_choice("mixed_precision", MIXED_PRECISION_MODES)
        self.require_choice("lr_scheduler", lr_scheduler_names())
        self.require_choice("report_to", REPORTERS)
        self.require_at_least_one("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "logging_steps")
        self.require_non_negative(
            "checkpointing_steps", "lr_warmup_steps", "lora_rank", "adam_weight_decay", "dataloader_num_workers"
        )
        self.require_positive("learning_rate", "adam_epsilon")
        self.require_fractions("ema_decay")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        for name in ("max_grad_norm", "lora_alpha"):
            if getattr(self, name) is not None:
                self.require_positive(name)
        if self.checkpoints_total_limit is not None:
            self.require_non_negative("checkpoints_total_limit")

    def require_choice(self, name: str, choices: tuple) -> None:
        """``ValueError`` naming ``name`` unless its value is one of ``choices``."""
        if getattr(self, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    def require_positive(self, *names: str) -> None:
        """``ValueError`` naming the first of these numeric fields that is not finite and > 0."""
        for name in names:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")

    def require_non_negative(self, *names: str) -> None:
        """``ValueError`` naming the first of these numeric fields that is not finite and >= 0."""
        for name in names:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")

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
    """Runtime check of a YAML value against a dataclass field annotation (list items included)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        item_types = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            any(_accepts(item_type, item) for item_type in item_types) for item in value if item_types
        )
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _as_number(annotation: Any, value: Any) -> Any:
    """Numbers in any notation: ``"1e-4"`` (a string to PyYAML) becomes a float for a float field,
    ``3`` becomes ``3.0``, and an integral ``1e3`` becomes ``1000`` for an int field."""
    if isinstance(value, list) and (item_type := _list_item_type(annotation)) is not None:
        return [_as_number(item_type, item) for item in value]
    if isinstance(value, str) and FLOAT_LITERAL.fullmatch(value.strip()) and not _accepts(annotation, value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    wants_int = _accepts(annotation, 0) and not _accepts(annotation, 0.5)
    if isinstance(value, int) and not wants_int and _accepts(annotation, 0.5):
        return float(value)
    if isinstance(value, float) and wants_int and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _list_item_type(annotation: Any) -> Any:
    """``X`` of a ``list[X]`` annotation (also inside ``list[X] | None``), else ``None``."""
    candidates = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    for candidate in candidates:
        if typing.get_origin(candidate) is list and typing.get_args(candidate):
            return typing.get_args(candidate)[0]
    return None


def _from_command_line(key: str, annotation: Any, raw: Any) -> Any:
    """A raw override as the field wants it: kept for string fields, else parsed as YAML.
    A bare ``--flag`` (``True``) is only a value for a boolean field."""
    if raw is True:
        if not _accepts(annotation, True):
            raise ValueError(f"--{key} needs a value ({_type_name(annotation)}); got a bare --{key}")
        return True
    if annotation is not Any and _accepts(annotation, raw) and raw.lower() not in ("null", "none", "~"):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"--{key} {raw!r} is not a valid value ({_type_name(annotation)}): {_yaml_problem(error)}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and, when known, its line and column."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _coerce(config_class: type, values: dict[str, Any], source: str, raw_strings: bool = False) -> dict[str, Any]:
    types_by_name = _field_types(config_class)
    for key, value in values.items():
        if key not in types_by_name:
            known = ", ".join(sorted(types_by_name))
            raise ValueError(f"unknown config key {key!r} in {source} for {config_class.__name__}; known keys: {known}")
        annotation = types_by_name[key]
        if raw_strings and isinstance(value, (str, bool)):
            value = _from_command_line(key, annotation, value)
        value = values[key] = _as_number(annotation, value)
        if not _accepts(annotation, value):
            hint = " (YAML reads yes/no/on/off as booleans: quote it)" if isinstance(value, bool) else ""
            raise ValueError(f"config key {key!r} in {source} expects {_type_name(annotation)}, got {value!r}{hint}")
    return values


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Parse ``["--key", "value", "--flag", ...]`` into ``{key: raw string}``; a bare ``--flag`` is ``True``.

    :func:`load_config` reads each raw string as YAML unless the field is a string field, so
    ``--mixed_precision no`` stays ``"no"`` while ``--max_train_steps 9`` becomes ``9``; a bare flag
    is accepted for boolean fields only."""
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
            raw = True
            index += 1
        parsed[key] = raw
    return parsed


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a missing file, bad encoding or YAML syntax is one line naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML: {_yaml_problem(error)}") from None


def load_config(
    config_class: type[ConfigT], path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ConfigT:
    """Build ``config_class`` from a YAML file (optional) and overrides.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file/line or the
    field and what was expected) for anything else: YAML syntax, unknown keys, wrong types, bad values."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of key: value, got {type(loaded).__name__}")
        values.update(_coerce(config_class, loaded, str(path)))
    if overrides:
        values.update(_coerce(config_class, dict(overrides), "command-line overrides", raw_strings=True))
    return config_class(**values)


def describe_fields(config_class: type) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, meaning)`` of every field, the meaning taken from the field's
    ``metadata["help"]``, else its trailing ``# comment`` in the class body, else an ``Args:`` /
    ``Attributes:`` line of the class docstring (the most derived class that says one wins)."""
    meanings: dict[str, str] = {}
    for klass in reversed([cls for cls in config_class.__mro__ if dataclasses.is_dataclass(cls)]):
        meanings.update(_documented_fields(klass))
    rows = []
    for item, annotation in zip(dataclasses.fields(config_class), _field_types(config_class).values()):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()  # type: ignore[misc]
        meaning = item.metadata.get("help") or meanings.get(item.name, "")
        rows.append((item.name, _type_name(annotation), repr(default), meaning))
    return rows


FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")
DOC_FIELD = re.compile(r"^\s*(\w+)(?:\s*\([^)]*\))?:\s+(.+?)\s*$")


def _documented_fields(klass: type) -> dict[str, str]:
    """Field meanings written in ``klass``'s own body (trailing comments) and docstring (``name: meaning``)."""
    own = set(getattr(klass, "__annotations__", {}))
    found = {}
    for line in (klass.__doc__ or "").splitlines():
        if (match := DOC_FIELD.match(line)) and match.group(1) in own:
            found[match.group(1)] = match.group(2)
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        return found
    for line in source.splitlines():
        if (match := FIELD_COMMENT.match(line)) and match.group(1) in own:
            found[match.group(1)] = match.group(2)
    return found


def format_fields(config_class: type) -> str:
    """The table ``selfgen train <method> --help`` prints."""
    rows = describe_fields(config_class)
    width = max(len(f"--{name} {kind} = {default}") for name, kind, default, _ in rows)
    lines = [f"{config_class.__name__} fields (YAML key: value, or --key value on the command line):"]
    for name, kind, default, meaning in rows:
        lines.append(f"  {f'--{name} {kind} = {default}':<{width}}  {meaning}".rstrip())
    return "\n".join(lines)


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
        annotation = hints.get(key, Any)
        options[key] = _as_number(annotation, _from_command_line(key, annotation, raw))
        if not _accepts(annotation, options[key]):
            raise ValueError(f"option --{key} expects {_type_name(annotation)}, got {raw!r}")
    return options
