"""Seeded tasks, answer extraction and verifiers on tricky strings, and the problems JSONL errors."""

import json
import random

import pytest

from selfgen.data.problems import Problem
from selfgen.data.tasks import (
    ArithmeticTask,
    CountdownTask,
    JsonlTask,
    answers_match,
    corrupt_answer,
    derive_seed,
    extract_answer,
    get_task,
    parse_verdict,
    replace_answer,
    step_is_true,
)


@pytest.mark.parametrize("task", [ArithmeticTask("add", 1, 4), ArithmeticTask("mul", 1, 3), CountdownTask(num_numbers=4)])
def test_worked_solutions_verify_and_sampling_is_seeded(task):
    problems = task.sample(50, seed=3)
    assert [p.question for p in problems] == [p.question for p in task.sample(50, seed=3)]
    assert [p.question for p in problems] != [p.question for p in task.sample(50, seed=4)]
    for problem in problems:
        solution = task.worked_solution(problem)
        assert task.verify(problem, solution), (problem, solution)
        assert task.step_accuracy(problem, solution) == 1.0
        wrong = solution.replace(f"A:{problem.answer}", f"A:{corrupt_answer(problem.answer, random.Random(0))}")
        assert not task.verify(problem, wrong)


def test_addition_solution_format():
    problem = Problem("47+85", "132", "x")
    assert ArithmeticTask("add").worked_solution(problem) == "S:7+5+0=12,4+8+1=13\nA:132"
    assert ArithmeticTask("mul").worked_solution(Problem("47*6", "282", "y")) == "S:7*6+0=42,4*6+4=28\nA:282"


def test_difficulty_knob_bounds_operands():
    for problem in ArithmeticTask("add", 3, 3).sample(30, seed=0):
        left, right = problem.question.split("+")
        assert len(left) == len(right) == 3


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("S:1+1+0=2\nA:2", "2"),
        ("A:5\nA: 7 ", "7"),  # the last answer line wins, whitespace stripped
        ("S:no answer line", None),
        ("A:\n", None),
        ("A:1,234", "1,234"),
        ("xxA:12\nV:Y", "12"),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "tolerance", "expected"),
    [
        ("1,234", "1234", 0.0, True),
        ("132.", "132", 0.0, True),
        ("0132", "132", 0.0, True),
        ("3.1416", "3.14159", 1e-4, True),
        ("3.15", "3.14159", 1e-4, False),
        ("13 2", "132", 0.0, False),
        ("132abc", "132", 0.0, False),
        (None, "132", 0.0, False),
        ("yes", " yes", 0.0, True),
        ("-5", "5", 0.0, False),
    ],
)
def test_answers_match(predicted, reference, tolerance, expected):
    assert answers_match(predicted, reference, rel_tol=tolerance) is expected


def test_steps_and_verdicts():
    assert step_is_true("7+5+0=12") and step_is_true("4*6+4=28") and step_is_true("9-4=5")
    assert not step_is_true("7+5+0=13") and not step_is_true("7+5=") and not step_is_true("")
    assert parse_verdict("S:..\nA:3\nV:Y") is True and parse_verdict("V:Y V:N") is False and parse_verdict("V:") is None


def test_countdown_rules():
    task, problem = CountdownTask(), Problem("3,5,7>22", "22", "c")
    assert task.verify(problem, "S:3*5=15,15+7=22\nA:22")
    assert task.verify(problem, "S:5*3=15,7+15=22\nA:22")
    assert not task.verify(problem, "S:3*5=15,15+7=22\nA:23")  # wrong final answer
    assert not task.verify(problem, "S:5*5=25,25-3=22\nA:22")  # 5 used twice
    assert not task.verify(problem, "S:3*7=21,21+1=22\nA:22")  # 1 is not given
    assert not task.verify(problem, "S:3*5=16,16+7=23\nA:22")  # false step
    assert not task.verify(problem, "A:22")  # no work shown


def test_jsonl_task_and_line_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "2+2", "answer": 4}\n\n{"question": "pi", "answer": "3.14159"}\n')
    task = JsonlTask(path=str(good), rel_tol=1e-3)
    assert task.verify(task.problems[0], "A:4.0") and task.verify(task.problems[1], "A:3.1416")
    assert get_task(str(good)).problems[1].answer == "3.14159"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": 2}\n{"question": "2+2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'answer'"):
        get_task(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "1+1", "answer": 2}\n\n{"question": oops}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:3: invalid JSON"):
        JsonlTask(path=str(broken))
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("chess")


# ----------------------------------------------------------------- held-out split


@pytest.mark.parametrize("task", [ArithmeticTask("add", 1, 2), ArithmeticTask("mul", 1, 2), CountdownTask(num_numbers=3)])
def test_generated_eval_problems_are_never_training_problems_whatever_the_seeds(task):
    train = {task.split_key(p.question) for seed in range(40) for p in task.sample(50, seed)}
    held_out = {task.split_key(p.question) for seed in range(40) for p in task.sample(50, seed, split="eval")}
    assert train and held_out and not train & held_out
    # a rephrasing (b+a, zero padding, reordered numbers) stays in its original's split
    rephrased = task.rephrasings(task.sample(50, 1, split="eval"), seed=2)
    assert all(task.split_of(p) == "eval" for p in rephrased)
    assert {task.split_of(p) for p in task.sample(100, 0)} == {"train"}
    assert {task.split_of(p) for p in task.sample(100, 0, split="eval")} == {"eval"}


def test_split_fraction_and_errors():
    task = ArithmeticTask("add", 3, 4, eval_fraction=0.3)
    draws = ArithmeticTask("add", 3, 4, eval_fraction=0.999).sample(200, 5, "eval")  # nearly everything held out
    assert sum(task.split_of(p) == "eval" for p in draws) / len(draws) == pytest.approx(0.3, abs=0.1)
    with pytest.raises(ValueError, match="split must be one of"):
        task.sample(3, 0, split="test")
    with pytest.raises(ValueError, match="eval_fraction"):
        ArithmeticTask("add", eval_fraction=0.0)


def test_derive_seed_has_no_arithmetic_collisions():
    seeds = {derive_seed(seed, iteration) for seed in range(30) for iteration in range(1, 200)}
    assert len(seeds) == 30 * 199
    assert derive_seed(10, 1) != derive_seed(9, 1001) and derive_seed(1, 2) == derive_seed(1, 2)


def write_jsonl(path, questions):
    path.write_text("".join(json.dumps({"question": q, "answer": str(i)}) + "\n" for i, q in enumerate(questions)))
    return str(path)


def test_jsonl_held_out_fraction_is_deterministic_and_disjoint(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [f"question {i}" for i in range(50)] + ["question 3"])
    task = JsonlTask(path=path, eval_fraction=0.2)
    held_out = {p.question for p in task.sample(100, 0, split="eval")}
    assert len(held_out) == 10 and held_out == {p.question for p in JsonlTask(path=path, eval_fraction=0.2).splits["eval"]}
    for seed in range(20):
        drawn = task.sample(45, seed)
        assert not {p.question for p in drawn} & held_out
        assert len({p.id for p in drawn}) == 41  # without replacement, then the split again in a new order
    assert len(task.sample(5, 0, "eval")) == 5 and task.sample(5, 0, "eval") == task.sample(5, 0, "eval")


def test_jsonl_eval_file_and_overlap_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ["a", "b", "c"])
    task = JsonlTask(path=train, eval_file=write_jsonl(tmp_path / "eval.jsonl", ["d", "e"]))
    assert sorted(p.question for p in task.sample(9, 0, "eval")) == ["d", "e"]
    assert {p.question for p in task.sample(9, 0)} == {"a", "b", "c"}
    with pytest.raises(ValueError, match="shares 1 question"):
        JsonlTask(path=train, eval_file=write_jsonl(tmp_path / "bad.jsonl", ["d", "b"]))
    with pytest.raises(ValueError, match="at least 2 distinct questions"):
        JsonlTask(path=write_jsonl(tmp_path / "one.jsonl", ["a", "a"]))


def test_replace_answer_changes_only_the_last_answer_line():
    assert replace_answer("S:1+2+0=3\nA:3", "4") == "S:1+2+0=3\nA:4"
    assert replace_answer("A:1\nA: 2", "9") == "A:1\nA: 9"
    assert replace_answer("no answer", "9") == "no answer"
