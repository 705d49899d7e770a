"""Problem JSONL: load_problems, write_problems and ProblemDataset."""

import json
import os
import re

import pytest

from selfgen.data.problems import Problem, ProblemDataset, load_problems, write_problems


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def problems_file(tmp_path):
    return write_lines(
        tmp_path / "problems.jsonl",
        [
            {"question": "What is 2 + 3?", "answer": 5, "id": "add-1", "source": "toy", "difficulty": 1},
            "",
            {"question": "Capital of France?", "answer": "Paris"},
            {"question": "Half of 1?", "answer": 0.5, "id": 7},
        ],
    )


def test_load_problems(problems_file):
    problems = load_problems(problems_file)
    assert problems == [
        Problem("What is 2 + 3?", "5", "add-1", {"source": "toy", "difficulty": 1}),
        Problem("Capital of France?", "Paris", "1", {}),  # default id: position among the problems
        Problem("Half of 1?", "0.5", "7", {}),
    ]


def test_write_then_load_round_trips_atomically(problems_file, tmp_path):
    problems = load_problems(problems_file)
    target = tmp_path / "out.jsonl"
    target.write_text("old contents\n")
    write_problems(problems, target)
    assert load_problems(target) == problems
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "problems.jsonl"]  # no temp file left behind
    with pytest.raises(ValueError, match=r"problem 'x': metadata keys \['answer'\] clash"):
        write_problems([Problem("q", "a", "x", {"answer": "b"})], target)
    assert load_problems(target) == problems  # a failed write leaves the old file intact


def test_dataset_from_path_or_list(problems_file):
    dataset = ProblemDataset(problems_file)
    assert len(dataset) == 3 and dataset[2].answer == "0.5"
    assert ProblemDataset(dataset.problems[:1])[0].id == "add-1"
    with pytest.raises(ValueError, match="non-empty sequence of Problem"):
        ProblemDataset([])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"problems file {tmp_path / 'none.jsonl'} not found")):
        load_problems(tmp_path / "none.jsonl")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty.jsonl is empty; expected one JSON object per line"):
        load_problems(tmp_path / "empty.jsonl")


def test_corrupt_file(tmp_path):
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x9c")
    with pytest.raises(ValueError, match=r"binary.jsonl is not UTF-8 text"):
        load_problems(tmp_path / "binary.jsonl")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "2+2?", "answer": 4', r":2: invalid JSON .*expected one JSON object per line"),
        ('["2+2?", 4]', r":2: expected a JSON object, got list"),
        ({"answer": 4}, r":2: missing field 'question'; expected a non-empty string"),
        ({"question": "2+2?"}, r":2: missing field 'answer'; expected a non-empty string or a number"),
        ({"question": "  ", "answer": 4}, r":2: field 'question' is empty"),
        ({"question": "2+2?", "answer": ""}, r":2: field 'answer' is empty"),
        ({"question": 22, "answer": 4}, r":2: field 'question' must be a non-empty string, got int 22"),
        ({"question": "2+2?", "answer": [4]}, r":2: field 'answer' must be a non-empty string or a number, got list"),
        ({"question": "2+2?", "answer": True}, r":2: field 'answer' must be .*, got bool True"),
        ({"question": "2+2?", "answer": 4, "id": "0"}, r":2: duplicate id '0' \(first on line 1\)"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    path = write_lines(tmp_path / "p.jsonl", [{"question": "1+1?", "answer": 2}, line])
    with pytest.raises(ValueError, match=re.escape(str(path)) + message):
        load_problems(path)
