"""Helpers shared by the user-data loaders: the ``on_error`` policy, the log of skipped items,
file discovery and the JSON-lines (``metadata.jsonl``) reader.

Every loader validates up front and raises ``FileNotFoundError``/``ValueError`` with a message that
names the file (and line) and what was expected. Per-file problems (a corrupt image, an
undecodable video) obey ``on_error``: ``"raise"`` stops, ``"skip"`` drops the file, logs a warning
on the ``selfgen.data`` logger and counts it in ``dataset.num_skipped``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger("selfgen.data")

ON_ERROR_CHOICES = ("raise", "skip")
T = TypeVar("T")


def validate_on_error(on_error: str) -> str:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``, else raise ``ValueError``."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


class SkipLog:
    """Applies the ``on_error`` policy and records ``(path, reason)`` for every skipped item."""

    def __init__(self, on_error: str = "raise"):
        self.on_error = validate_on_error(on_error)
        self.skipped: list[tuple[str, str]] = []

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def probe_all(self, paths: Iterable[Path], probe: Callable[[Path], T]) -> list[tuple[Path, T]]:
        """Run ``probe`` on every path; a ``ValueError`` is raised or, with ``on_error="skip"``, recorded."""
        kept = []
        for path in paths:
            try:
                kept.append((path, probe(path)))
            except ValueError as error:
                if self.on_error == "raise":
                    raise
                self.skipped.append((str(path), str(error)))
                logger.warning("skipping %s: %s", path, error)
        return kept


class ReportsSkips:
    """Mixin for datasets holding a ``skip_log``: exposes ``skipped`` and ``num_skipped``."""

    skip_log: SkipLog

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.skip_log.skipped

    @property
    def num_skipped(self) -> int:
        return self.skip_log.num_skipped


def find_files(root: str | Path, extensions: tuple[str, ...], kind: str) -> tuple[Path, list[Path]]:
    """Return ``(root, files)``: the sorted files under ``root`` (recursive) with one of ``extensions``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} not found (expected a directory of {kind} files)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"no {kind} files under {root}; expected files with extensions {', '.join(extensions)}")
    return root, files


def read_jsonl(path: str | Path, kind: str) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(line_number, object)`` for every non-blank line of a JSON-lines file.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming ``path:line`` for
    invalid JSON or a line that is not a JSON object, and naming ``path`` when it holds no objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {path} not found")
    records = []
    try:
        with path.open(encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                if line.strip():
                    records.append((line_number, _parse_json_object(line, f"{path}:{line_number}")))
    except UnicodeDecodeError as error:
        raise ValueError(f"{kind} file {path} is not UTF-8 text ({error.reason})") from None
    if not records:
        raise ValueError(f"{kind} file {path} is empty; expected one JSON object per line")
    return records


def _parse_json_object(line: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: invalid JSON ({error.msg}); expected one JSON object per line") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


@dataclass
class MetadataRecord:
    """The validated optional fields of one ``metadata.jsonl`` line."""

    line: int
    fields: dict[str, Any] = field(default_factory=dict)


def load_metadata(
    path: Path, root: Path, files: list[Path], parsers: Mapping[str, Callable[[Any], Any]]
) -> list[MetadataRecord]:
    """Read a Hugging Face style ``metadata.jsonl`` and return one record per entry of ``files``.

    Each line holds ``"file_name"`` (relative to ``root``) and optional fields; ``parsers`` maps a
    field name to a function that converts its value or raises ``TypeError``/``ValueError`` saying
    what it expected. Other keys are ignored. Every file needs exactly one line, and every line must
    carry the same optional fields, so that all items of a dataset have the same keys.
    """
    by_file: dict[Path, MetadataRecord] = {}
    known = {file.resolve() for file in files}
    for line, obj in read_jsonl(path, "metadata"):
        where = f"{path}:{line}"
        file = _metadata_file(obj, root, known, where)
        if file in by_file:
            raise ValueError(f"{where}: duplicate file_name {obj['file_name']!r} (first on line {by_file[file].line})")
        by_file[file] = MetadataRecord(line, _parse_fields(obj, parsers, where))
    missing = [str(file.relative_to(root)) for file in files if file.resolve() not in by_file]
    if missing:
        raise ValueError(f"{path}: no line for {len(missing)} file(s) under {root}, e.g. {missing[:3]}")
    records = [by_file[file.resolve()] for file in files]
    _check_same_fields(path, records)
    return records


def _metadata_file(obj: dict[str, Any], root: Path, known: set[Path], where: str) -> Path:
    name = obj.get("file_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: expected a non-empty string 'file_name' (path relative to {root}), got {name!r}")
    file = (root / name).resolve()
    if not file.is_file():
        raise ValueError(f"{where}: file_name {name!r} not found under {root}")
    if file not in known:
        raise ValueError(f"{where}: file_name {name!r} is not one of the dataset's files (wrong extension?)")
    return file


def _parse_fields(obj: dict[str, Any], parsers: Mapping[str, Callable[[Any], Any]], where: str) -> dict[str, Any]:
    fields = {}
    for key, parse in parsers.items():
        if key in obj:
            try:
                fields[key] = parse(obj[key])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}: field {key!r}: {error}") from None
    return fields


def _check_same_fields(path: Path, records: list[MetadataRecord]) -> None:
    records = sorted(records, key=lambda record: record.line)
    expected = set(records[0].fields)
    for record in records[1:]:
        if set(record.fields) != expected:
            raise ValueError(
                f"{path}:{record.line}: has fields {sorted(record.fields)} but line {records[0].line} has "
                f"{sorted(expected)}; every line must carry the same optional fields"
            )


def expect_type(expected: type, name: str) -> Callable[[Any], Any]:
    """A field parser accepting exactly ``expected`` (``bool`` is not accepted as ``int``)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r}")
        return value

    return parse
