"""Feedback and correction formats of data/reasoning.py: the F: line, its parser, rule-based feedback."""

import pytest

from selfgen.data.problems import Problem
from selfgen.data.reasoning import (
    Feedback,
    correction_prompt,
    feedback_request,
    parse_feedback,
    step_feedback,
    verifier_feedback,
)
from selfgen.data.tasks import ArithmeticTask, CountdownTask, revision_prompt

ADD = Problem("47+85", "132", "x")
RIGHT = "S:7+5+0=12,4+8+1=13\nA:132"
WRONG_STEP2 = "S:7+5+0=12,4+8+1=14\nA:142"


def test_correction_prompt_text():
    prompt = "Q:47+85\n"
    assert correction_prompt(prompt, WRONG_STEP2, Feedback(False, 2)) == prompt + WRONG_STEP2 + "\nF:N2\nR:\n"
    assert correction_prompt(prompt, RIGHT, Feedback(True)) == prompt + RIGHT + "\nF:Y\nR:\n"
    assert correction_prompt(prompt, WRONG_STEP2) == revision_prompt(prompt, WRONG_STEP2)  # SCoRe's plain turn
    assert feedback_request(prompt, RIGHT) == prompt + RIGHT + "\nF:"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("N2\n", Feedback(False, 2)),
        ("Y", Feedback(True)),
        ("N", Feedback(False)),
        ("F: N 3", Feedback(False, 3)),
        ("blah F:Y then F:N1", Feedback(False, 1)),  # the last one counts
        ("N0", Feedback(False)),
        ("maybe", None),
    ],
)
def test_parse_feedback(text, expected):
    assert parse_feedback(text) == expected


def test_feedback_round_trips_and_rejects_bad_steps():
    for feedback in (Feedback(True), Feedback(False), Feedback(False, 4)):
        assert parse_feedback(correction_prompt("Q:1+1\n", "A:2", feedback)) == feedback
    with pytest.raises(ValueError, match="step"):
        Feedback(True, 2)
    with pytest.raises(ValueError, match="step"):
        Feedback(False, 0)
    assert "step 2" in Feedback(False, 2).message() and "wrong" in Feedback(False).message()


def test_verifier_and_step_feedback_for_arithmetic():
    task = ArithmeticTask("add")
    assert verifier_feedback(task, ADD, RIGHT) == Feedback(True)
    assert verifier_feedback(task, ADD, WRONG_STEP2) == Feedback(False)
    assert step_feedback(task, ADD, WRONG_STEP2) == Feedback(False, 2)
    assert step_feedback(task, ADD, "S:7+5+0=11,4+8+1=13\nA:131") == Feedback(False, 1)
    assert step_feedback(task, ADD, "S:7+5+0=12\nA:132x") == Feedback(False, 2)  # the second step is missing
    assert step_feedback(task, ADD, "S:7+5+0=12,4+8+1=13\nA:133") == Feedback(False)  # steps right, answer not
    assert step_feedback(task, ADD, RIGHT) == Feedback(True)


def test_step_feedback_for_countdown_names_the_first_illegal_step():
    task, problem = CountdownTask(), Problem("3,5,7>22", "22", "c")
    assert step_feedback(task, problem, "S:3*5=15,15+7=22\nA:22") == Feedback(True)
    assert step_feedback(task, problem, "S:3*5=15,15+7=23\nA:23") == Feedback(False, 2)  # false equation
    assert step_feedback(task, problem, "S:3*3=9,9+7=16\nA:16") == Feedback(False, 1)  # 3 used twice
    assert step_feedback(task, problem, "S:3*7=21,21-5=16\nA:16") == Feedback(False)  # legal but off target
