"""Graded Task.quality (answer digits, countdown distance) and the unequal-length addition hard split."""

import random

import pytest

from selfgen.data.problems import Problem
from selfgen.data.tasks import (
    ArithmeticTask,
    CountdownTask,
    JsonlTask,
    UnequalAdditionTask,
    corrupt_answer,
    digit_share,
    get_task,
    is_unequal_addition,
)

ADD = Problem("47+85", "132", "x")


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("132", 1.0),
        ("142", 2 / 3),  # tens wrong
        ("32", 2 / 3),  # hundreds missing: aligned from the right, the missing digit is wrong
        ("1132", 3 / 4),  # an extra digit is wrong
        ("0132", 1.0),  # leading zeros dropped (and it verifies)
        ("231", 1 / 3),  # only the middle digit in place
        ("-132", 0.0),
        ("13 2", 0.0),
        ("", 0.0),
    ],
)
def test_arithmetic_quality_is_the_share_of_right_digits(answer, expected):
    assert ArithmeticTask("add").quality(ADD, f"S:7+5+0=12\nA:{answer}") == pytest.approx(expected)


def test_quality_is_one_exactly_when_verified():
    rng = random.Random(0)
    for task in (ArithmeticTask("add", 1, 4), ArithmeticTask("mul", 1, 3), CountdownTask(num_numbers=4)):
        for problem in task.sample(30, seed=1):
            solution = task.worked_solution(problem)
            assert task.quality(problem, solution) == 1.0
            wrong = solution.replace(f"A:{problem.answer}", f"A:{corrupt_answer(problem.answer, rng)}")
            assert task.quality(problem, wrong) < 1.0
    assert ArithmeticTask("add").quality(ADD, "S:7+5+0=12") == 0.0  # no answer line
    assert digit_share(None, "132") == 0.0 and digit_share("１３２", "132") == 0.0  # full-width digits are not digits


def test_countdown_quality_is_distance_to_target():
    task = CountdownTask(num_numbers=3)
    problem = Problem("3,5,7>22", "22", "c")
    assert task.quality(problem, "S:3*5=15,15+7=22\nA:22") == 1.0
    assert task.quality(problem, "S:3*5=15,15+7=22\nA:21") == 0.5  # right chain, wrong A: line
    assert task.quality(problem, "S:3*7=21,21-5=16\nA:16") == pytest.approx(1 / (1 + 6))
    assert task.quality(problem, "S:5*7=35\nA:35") == pytest.approx(1 / (1 + 13 + 1))  # 3 unused
    assert task.quality(problem, "S:3*5=16,16+7=23\nA:23") == 0.0  # a false step
    assert task.quality(problem, "S:3*3=9,9+7=16\nA:16") == 0.0  # 3 used twice
    assert task.quality(problem, "A:22") == 0.0  # no steps


def test_jsonl_quality_is_its_verdict(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q1", "answer": "7"}\n{"question": "q2", "answer": "9"}\n')
    task = JsonlTask(path=str(path))
    problem = task.problems[0]
    assert task.quality(problem, "A:7") == 1.0 and task.quality(problem, "A:8") == 0.0


def test_hard_split_is_unequal_length_four_digit_additions():
    task = get_task("add_hard")
    assert isinstance(task, UnequalAdditionTask) and task.name == "add_hard"
    problems = task.sample(200, seed=0)
    assert all(is_unequal_addition(p.question) for p in problems)
    widths = {tuple(len(part) for part in p.question.split("+")) for p in problems}
    assert {(4, 1), (1, 4), (4, 3), (3, 4)} <= widths  # every shorter width, long operand on either side
    for problem in problems[:20]:
        assert task.verify(problem, task.worked_solution(problem))
    assert is_unequal_addition("1234+56") and is_unequal_addition("7+1000")
    assert not is_unequal_addition("1234+5678") and not is_unequal_addition("123+45") and not is_unequal_addition("12*3")


def test_hard_split_shares_the_addition_held_out_split():
    hard, add = get_task("add_hard"), ArithmeticTask("add", 1, 4)
    held_out = hard.sample(50, seed=5, split="eval")
    assert all(add.split_of(p) == "eval" for p in held_out)
    train = {p.question for p in hard.sample(300, seed=6)}
    assert not train & {p.question for p in held_out}
    with pytest.raises(ValueError, match="long_digits"):
        UnequalAdditionTask(long_digits=1)
