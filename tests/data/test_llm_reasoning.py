"""Step-level views of step-structured solutions: states, actions, rule-based corruption, role prompts."""

import random

import pytest

from selfgen.data.reasoning import (
    ERROR_KINDS,
    comparison_verdict,
    corrupt_step,
    critic_completion,
    critic_prompt,
    implied_verdict,
    parse_derivation,
    labelled_solutions,
    parse_action,
    partial_solution,
    reference_steps,
    sneaky_prompt,
    step_result,
    trace_text,
)
from selfgen.data.tasks import get_task, step_is_true


def test_states_and_role_prompts():
    assert partial_solution("47+85", []) == "Q:47+85\nS:"
    assert partial_solution("47+85", ["7+5+0=12"]) == "Q:47+85\nS:7+5+0=12,"
    assert trace_text("47+85", ["7+5+0=12", "4+8+1=13"], "132") == "Q:47+85\nS:7+5+0=12,4+8+1=13\nA:132"
    assert sneaky_prompt("47+85", ["7+5+0=12"], "4+8+1=13") == "Q:47+85\nS:7+5+0=12,\nX:4+8+1=13\n"
    assert critic_prompt("47+85", [], "7+5+0=12") == "Q:47+85\nS:\nC:7+5+0=12\n"
    # the critique re-derives the step (the reference), writes the judged result beside it, and the verdict
    # is that comparison: N iff the results differ
    assert critic_completion("4+8+1=13", "4+8+1=14") == "D:4+8+1=13 vs 14\nV:N"
    assert critic_completion("4+8+1=13", "4+8+1=13") == "D:4+8+1=13 vs 13\nV:Y"
    assert critic_completion("4+8+1=13", "4+8+0=12") == "D:4+8+1=13 vs 12\nV:N"  # a consistent equation, wrong carry
    assert critic_completion("4+8+1=13", "4+8+1=14", "rederive") == "D:4+8+1=13\nV:N"
    assert critic_completion("4+8+1=13", "4+8+0=12", "rederive") == "D:4+8+1=13\nV:N"
    assert critic_completion("4+8+1=13", "4+8+1=14", "verdict") == "V:N"
    assert parse_derivation("D:4+8+1=13\nV:N") == "4+8+1=13" and parse_derivation("V:Y") is None
    assert parse_derivation("D:4+8+1=13 vs 14\nV:N") == "4+8+1=13"
    assert step_result("4+8+1=13") == "13" and step_result("4+8+1=") == "" and step_result("junk") == "junk"
    # the verdict a critique's own derivation implies, whatever verdict it wrote
    assert implied_verdict("D:4+8+1=13 vs 14\nV:Y", "4+8+1=14") is False
    assert implied_verdict("D:4+8+1=13\nV:N", "4+8+1=13") is True
    assert implied_verdict("D:9+0+1=10\nV:Y", "9+7+1=17") is False  # a wrong derivation still implies N here
    assert implied_verdict("V:Y", "4+8+1=13") is None
    # what the critique's own written comparison states, whatever V: it wrote after it
    assert comparison_verdict("D:4+8+1=13 vs 14\nV:Y") is False and comparison_verdict("D:4+8+1=13 vs 13\nV:N") is True
    assert comparison_verdict("D:1+0+1=2 vs 22\nV:N") is False  # a mis-copied value is compared as written
    assert comparison_verdict("D:4+8+1=13\nV:Y") is None and comparison_verdict("V:Y") is None
    with pytest.raises(ValueError, match="critique_format"):
        critic_completion("4+8+1=13", "4+8+1=13", "essay")


def test_parse_action():
    final = parse_action("4+8+1=13\nA:132", stopped_at_comma=False)
    assert (final.step, final.answer, final.valid, final.terminal) == ("4+8+1=13", "132", True, True)
    step = parse_action("7+5+0=12", stopped_at_comma=True)
    assert (step.answer, step.valid, step.terminal) == (None, True, False)
    assert not parse_action("7+5+0", stopped_at_comma=False).valid  # cut by the token budget
    assert not parse_action("", stopped_at_comma=True).valid
    assert not parse_action("1+2+0=3\nA:", stopped_at_comma=False).valid


def test_corrupt_step_kinds():
    rng = random.Random(0)
    for _ in range(50):
        calc = corrupt_step("4+8+1=13", "calculation", rng)
        assert calc != "4+8+1=13" and not step_is_true(calc)
        carry = corrupt_step("4+8+1=13", "carry", rng)
        assert carry == "4+8+0=12"  # a true equation, wrong only in context
        operand = corrupt_step("4+8+1=13", "operand", rng)
        assert operand != "4+8+1=13" and step_is_true(operand)
    assert step_is_true(corrupt_step("7*6+4=46", "operand", rng))
    with pytest.raises(ValueError, match="kind"):
        corrupt_step("4+8+1=13", "typo", rng)
    with pytest.raises(ValueError, match="not of the form"):
        corrupt_step("four", "carry", rng)


def test_labelled_solutions_are_seeded_and_labelled():
    task = get_task("add", min_digits=3, max_digits=4)
    first, again = labelled_solutions(task, 40, seed=3), labelled_solutions(task, 40, seed=3)
    assert [(s.steps, s.error_index) for s in first] == [(s.steps, s.error_index) for s in again]
    assert 5 < sum(s.error_index >= 0 for s in first) < 35
    for solution in first:
        reference = reference_steps(task, solution.problem)
        wrong = [k for k, (a, b) in enumerate(zip(solution.steps, reference)) if a != b]
        assert wrong == ([solution.error_index] if solution.error_index >= 0 else [])
        assert solution.kind in ERROR_KINDS or solution.error_index == -1
    assert all(s.error_index == -1 for s in labelled_solutions(task, 10, seed=1, error_fraction=0.0))
    with pytest.raises(ValueError, match="kinds"):
        labelled_solutions(task, 4, seed=1, kinds=["typo"])
    with pytest.raises(ValueError, match="error_fraction"):
        labelled_solutions(task, 4, seed=1, error_fraction=1.5)
