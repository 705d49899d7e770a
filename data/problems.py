"""Question/answer problems in JSON lines, the data of the LLM self-improvement recipes.

Each line is ``{"question": str, "answer": str | int | float, "id": optional str | int, ...}``;
any other key goes into ``Problem.metadata``. Answers are kept as strings (``3`` -> ``"3"``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .common import read_jsonl

RESERVED_KEYS = ("question", "answer", "id")


@dataclass
class Problem:
    """A question, its reference answer, a unique id and any extra fields of the source line."""

    question: str
    answer: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _text_field(obj: dict[str, Any], key: str, types: tuple[type, ...], expected: str, where: str) -> str:
    if key not in obj:
        raise ValueError(f"{where}: missing field {key!r}; expected {expected}")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise ValueError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__} {value!r}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: field {key!r} is empty; expected {expected}")
    return text


def _problem_from_line(obj: dict[str, Any], index: int, where: str) -> Problem:
    question = _text_field(obj, "question", (str,), "a non-empty string", where)
    answer = _text_field(obj, "answer", (str, int, float), "a non-empty string or a number", where)
    problem_id = _text_field(obj, "id", (str, int), "a string or integer", where) if "id" in obj else str(index)
    metadata = {key: value for key, value in obj.items() if key not in RESERVED_KEYS}
    return Problem(question, answer, problem_id, metadata)


def load_problems(path: str | Path) -> list[Problem]:
    """Read and validate a problems JSONL file; errors name ``path:line`` and the field.

    A line without ``"id"`` gets its 0-based position among the problems as id; ids must be unique.
    """
    problems, lines_by_id = [], {}
    for index, (line, obj) in enumerate(read_jsonl(path, "problems")):
        where = f"{path}:{line}"
        problem = _problem_from_line(obj, index, where)
        if problem.id in lines_by_id:
            raise ValueError(f"{where}: duplicate id {problem.id!r} (first on line {lines_by_id[problem.id]})")
        lines_by_id[problem.id] = line
        problems.append(problem)
    return problems


def write_problems(problems: Iterable[Problem], path: str | Path) -> None:
    """Write problems as JSONL (metadata keys flattened into each line), atomically via ``os.replace``."""
    path = Path(path)
    lines = []
    for problem in problems:
        clashes = set(problem.metadata) & set(RESERVED_KEYS)
        if clashes:
            raise ValueError(
                f"problem {problem.id!r}: metadata keys {sorted(clashes)} clash with the reserved {RESERVED_KEYS}"
            )
        record = {"question": problem.question, "answer": problem.answer, "id": problem.id, **problem.metadata}
        lines.append(json.dumps(record, ensure_ascii=False))
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise


class ProblemDataset(Dataset):
    """A list of :class:`Problem` from a JSONL path or given directly; items are ``Problem`` objects."""

    def __init__(self, path_or_problems: str | Path | Sequence[Problem]):
        if isinstance(path_or_problems, (str, Path)):
            self.problems = load_problems(path_or_problems)
        else:
            self.problems = list(path_or_problems)
            if not self.problems or not all(isinstance(p, Problem) for p in self.problems):
                raise ValueError("path_or_problems must be a JSONL path or a non-empty sequence of Problem")

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]
