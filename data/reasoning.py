"""Step-level views of the step-structured solutions of :mod:`selfgen.data.tasks`, for process critics
and tree search (SPC, ReST-MCTS*).

A solution ``S:<step>,<step>,...\\nA:<answer>`` is read as a sequence of *actions*: every step but the
last is one action, and the last step together with the answer line is the final (terminal) action.
A partial solution - the state of a tree search or the context of a critic - is the prompt followed
by the steps taken so far, each closed by its comma::

    Q:47+85\\nS:                      nothing taken yet
    Q:47+85\\nS:7+5+0=12,             one step taken; the next action is "4+8+1=13\\nA:132"
    Q:47+85\\nS:7+5+0=12,4+8+1=13\\nA:132   a terminal state (a complete solution)

Role prompts of the SPC game (same model, two roles):

    sneaky   Q:47+85\\nS:7+5+0=12,\\nX:4+8+1=13\\n   ->  4+8+1=14          (rewrite the step as a wrong one)
    critic   Q:47+85\\nS:7+5+0=12,\\nC:4+8+1=14\\n   ->  D:4+8+1=13 vs 14\\nV:N   (critique, then the verdict)

The critique re-derives the judged step before its verdict (SPC's critic analyses the step, then
concludes): ``D:`` and the step recomputed from the question's column digits and the previous step's
carry, then (``critique_format="compare"``) `` vs `` and the judged step's result, so the verdict is
the written comparison of the two results: ``V:Y`` (correct) if they are equal, else ``V:N``.
``critique_format="rederive"`` writes the re-derivation without the comparison (``D:4+8+1=13\\nV:N``,
``V:Y`` iff the judged step equals it), ``"verdict"`` the verdict alone (both earlier formats).

Rule-based step corruption (:func:`corrupt_step`) builds the held-out evaluation sets and the
supervised warm-up data: a wrong result (``calculation``), a wrong carry with a consistent result
(``carry``) or a misread operand digit with a consistent result (``operand``) - the last two are true
equations and only wrong in context. Everything is seeded; callers pass training seeds below the
held-out ones.

Feedback and correction (the multi-turn self-correction recipes: CCT, SCL, critique-in-the-loop,
ExIt, SCoRe): after an attempt comes a :class:`Feedback` line, then the revision mark and the
correction, a complete solution again::

    Q:47+85\nS:7+5+0=12,4+8+1=14\nA:142\nF:N2\nR:\nS:7+5+0=12,4+8+1=13\nA:132

``F:Y`` says the attempt is right, ``F:N`` wrong, ``F:N<k>`` wrong from step ``k`` (1-based, the first
wrong step a critic names); no feedback line at all is the plain "revise" turn of SCoRe
(:func:`~selfgen.data.tasks.revision_prompt`, the same text). :func:`verifier_feedback` and
:func:`step_feedback` write it from the task's verifier and reference steps, :func:`parse_feedback`
reads it back from a model that writes its own (after :func:`feedback_request`). A chat-template
format frames the same content as turns: ``PromptFormat.revision`` in
:mod:`selfgen.train.llm.prompts` puts the attempt in an assistant turn and :meth:`Feedback.message`
in the next user turn.

Every function that writes a prompt takes ``prompt`` (question -> prompt text, default
:func:`~selfgen.data.tasks.prompt_text`), so a recipe's prompt format reaches the search states and
role prompts too; :func:`labelled_solutions` draws from a task ``split``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .problems import Problem
from .tasks import (
    REVISION_MARK,
    STEP_PATTERN,
    AnswerExtractor,
    CountdownTask,
    Task,
    completion_text,
    extract_answer,
    prompt_text,
    solution_steps,
)

ANSWER_MARK = "\nA:"
SNEAKY_MARK = "\nX:"
CRITIC_MARK = "\nC:"
DERIVATION_MARK = "D:"
DERIVATION_PATTERN = re.compile(r"D:([^\n]*)")
COMPARISON_MARK = " vs "
CRITIQUE_FORMATS = ("compare", "rederive", "verdict")
FEEDBACK_MARK = "\nF:"
FEEDBACK_PATTERN = re.compile(r"F:[ \t]*([YN])[ \t]*(\d*)")
ERROR_KINDS = ("calculation", "carry", "operand")
DIGIT = re.compile(r"\d")
PromptFn = Callable[[str], str]


def partial_solution(question: str, steps: Sequence[str], prompt: PromptFn = prompt_text) -> str:
    """The prompt plus the steps taken so far, each closed by a comma (a search state, a critic's context)."""
    return prompt(question) + "S:" + "".join(f"{step}," for step in steps)


def trace_text(question: str, steps: Sequence[str], answer: str | None = None, prompt: PromptFn = prompt_text) -> str:
    """A partial solution, or with ``answer`` the complete solution ``Q:..\\nS:..\\nA:..``."""
    if answer is None:
        return partial_solution(question, steps, prompt)
    return prompt(question) + completion_text(list(steps), answer)


@dataclass
class Action:
    """One generated action: a step, and the answer when the action ends the solution.

    ``valid`` is False for text that is neither a step closed by a comma nor a last step with an
    answer (an empty step, no answer, or cut by the token budget): a dead end of the search."""

    step: str
    answer: str | None
    valid: bool = True

    @property
    def terminal(self) -> bool:
        return self.answer is not None or not self.valid


def parse_action(text: str, stopped_at_comma: bool) -> Action:
    """Read a generated continuation of a partial solution (generation stopped at the first comma)."""
    if ANSWER_MARK in text:
        step, answer = text.split(ANSWER_MARK, 1)
        answer = answer.strip()
        return Action(step, answer or None, valid=bool(step) and bool(answer) and "," not in step)
    return Action(text, None, valid=stopped_at_comma and bool(text) and "\n" not in text)


def reference_steps(task: Task, problem: Problem) -> list[str]:
    """The steps of the task's worked solution (what a step is compared with in rule-built labels)."""
    return solution_steps(task.worked_solution(problem))


def corrupt_step(step: str, kind: str, rng: random.Random) -> str:
    """A wrong version of ``step`` (``a<op>b[+c]=r``) of error ``kind``; always differs from ``step``.

    ``calculation``: the result changed by 1-3; ``carry``: the carry changed (0 <-> 1) and the result
    recomputed; ``operand``: one operand digit changed and the result recomputed. The last two give
    true equations that are wrong only in context (the column or the carry of the previous step)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"kind must be one of {ERROR_KINDS}, got {kind!r}")
    match = STEP_PATTERN.match(step)
    if match is None:
        raise ValueError(f"step {step!r} is not of the form a<op>b[+carry]=result")
    left, op, right, carry, result = match.groups()
    if kind == "calculation" or (kind == "carry" and carry is None):
        shift = rng.choice([delta for delta in (-3, -2, -1, 1, 2, 3) if int(result) + delta >= 0])
        return f"{left}{op}{right}{'' if carry is None else '+' + carry}={int(result) + shift}"
    if kind == "carry":
        carry = "1" if carry == "0" else "0"
    elif rng.random() < 0.5:
        right = _other_digit(right, rng)
    else:
        left = _other_digit(left, rng)
    value = {"+": int(left) + int(right), "-": int(left) - int(right), "*": int(left) * int(right)}[op]
    total = value + int(carry or 0)
    return f"{left}{op}{right}{'' if carry is None else '+' + carry}={total}"


def _other_digit(number: str, rng: random.Random) -> str:
    digits = list(number)
    index = rng.choice([i for i, char in enumerate(digits) if DIGIT.match(char)])
    digits[index] = rng.choice([d for d in "0123456789" if d != digits[index]])
    return "".join(digits)


@dataclass
class LabelledSolution:
    """A worked solution, possibly with one corrupted step; ``error_index`` is -1 for a clean one."""

    problem: Problem
    steps: list[str]
    error_index: int
    kind: str = ""


def labelled_solutions(
    task: Task,
    count: int,
    seed: int,
    error_fraction: float = 0.5,
    kinds: Sequence[str] = ERROR_KINDS,
    split: str = "train",
) -> list[LabelledSolution]:
    """``count`` seeded solutions of the task's ``split``: a share ``error_fraction`` with one
    rule-corrupted step (uniform position and kind), the rest clean. Later steps and the answer are
    left as they were."""
    if not 0.0 <= error_fraction <= 1.0:
        raise ValueError(f"error_fraction must be in [0, 1], got {error_fraction}")
    unknown = set(kinds) - set(ERROR_KINDS)
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {ERROR_KINDS}, got {list(kinds)}")
    rng = random.Random(seed)
    solutions = []
    for problem in task.sample(count, seed, split):
        steps = reference_steps(task, problem)
        if rng.random() >= error_fraction:
            solutions.append(LabelledSolution(problem, steps, -1))
            continue
        index, kind = rng.randrange(len(steps)), rng.choice(list(kinds))
        wrong = list(steps)
        wrong[index] = corrupt_step(steps[index], kind, rng)
        solutions.append(LabelledSolution(problem, wrong, index, kind))
    return solutions


def sneaky_prompt(question: str, prefix: Sequence[str], step: str, prompt: PromptFn = prompt_text) -> str:
    """The sneaky generator's prompt: the partial solution, then ``X:`` and the correct step to corrupt."""
    return partial_solution(question, prefix, prompt) + SNEAKY_MARK + step + "\n"


def critic_prompt(question: str, prefix: Sequence[str], step: str, prompt: PromptFn = prompt_text) -> str:
    """The critic's prompt: the partial solution, then ``C:`` and the step to judge."""
    return partial_solution(question, prefix, prompt) + CRITIC_MARK + step + "\n"


def step_result(step: str) -> str:
    """The result of a step ``a<op>b[+c]=r``: the text after its last ``=`` (the whole text without one)."""
    return step.rsplit("=", 1)[-1].strip()


def critic_completion(reference_step: str, judged_step: str, critique_format: str = "compare") -> str:
    """A rule-built critique of ``judged_step`` whose correct version is ``reference_step`` (from the
    task's solver). ``"compare"``: the re-derived step, the judged step's result beside it and the
    verdict that comparison implies (``D:<reference> vs <judged result>\\nV:Y`` iff the results are
    equal); ``"rederive"``: the re-derived step, then ``V:Y`` iff the judged step equals it;
    ``"verdict"``: the verdict alone."""
    if critique_format not in CRITIQUE_FORMATS:
        raise ValueError(f"critique_format must be one of {CRITIQUE_FORMATS}, got {critique_format!r}")
    if critique_format == "compare":
        judged = step_result(judged_step)
        verdict = "Y" if step_result(reference_step) == judged else "N"
        return f"{DERIVATION_MARK}{reference_step}{COMPARISON_MARK}{judged}\nV:{verdict}"
    verdict = f"V:{'Y' if reference_step == judged_step else 'N'}"
    return verdict if critique_format == "verdict" else f"{DERIVATION_MARK}{reference_step}\n{verdict}"


def parse_derivation(critique: str) -> str | None:
    """The step a critique re-derived (after its first ``D:``, up to `` vs `` or the line's end), ``None``
    when it has none."""
    found = DERIVATION_PATTERN.search(critique)
    return None if found is None else found.group(1).split(COMPARISON_MARK)[0].strip()


def comparison_verdict(critique: str) -> bool | None:
    """The verdict a ``"compare"`` critique's own written comparison states: ``D:<step> vs <value>`` is
    ``True`` iff the re-derived step's result is ``value`` (``None`` without a comparison)."""
    found = DERIVATION_PATTERN.search(critique)
    if found is None or COMPARISON_MARK not in found.group(1):
        return None
    derived, value = found.group(1).split(COMPARISON_MARK, 1)
    return step_result(derived) == value.strip()


def implied_verdict(critique: str, judged_step: str) -> bool | None:
    """The verdict a critique's own re-derivation implies: its derived step's result equals the judged
    step's result (``None`` without a derivation). A faithful critic's ``V:`` says the same."""
    derived = parse_derivation(critique)
    return None if derived is None else step_result(derived) == step_result(judged_step)


# ----------------------------------------------------------------- feedback and correction


@dataclass(frozen=True)
class Feedback:
    """Feedback on an attempt: ``correct`` (the verdict) and, for a wrong one, optionally ``step``, the
    first wrong step (1-based)."""

    correct: bool
    step: int | None = None

    def __post_init__(self) -> None:
        if self.step is not None and (self.correct or self.step < 1):
            raise ValueError(f"step must be a 1-based index given only with correct=False, got {self.step}")

    def line(self) -> str:
        """The compact feedback text of the ``Q:``/``A:`` format: ``Y``, ``N`` or ``N<k>``."""
        return "Y" if self.correct else f"N{self.step or ''}"

    def message(self) -> str:
        """The same feedback as a user message for a chat-template format."""
        if self.correct:
            return "Your answer looks right. Check it once more and give your final answer as 'A: <answer>'."
        where = f" The first wrong step is step {self.step}." if self.step else ""
        return f"Your answer is wrong.{where} Correct your solution and give the final answer as 'A: <answer>'."


def correction_prompt(prompt: str, attempt: str, feedback: Feedback | None = None) -> str:
    """The context of a correction: the prompt, the attempt, the feedback line (none: a plain revision
    request, identical to :func:`~selfgen.data.tasks.revision_prompt`), then the revision mark."""
    line = "" if feedback is None else FEEDBACK_MARK + feedback.line()
    return prompt + attempt + line + REVISION_MARK


def feedback_request(prompt: str, attempt: str) -> str:
    """The context in which a model writes its own feedback on ``attempt`` (``Y``/``N``/``N<k>`` after ``F:``)."""
    return prompt + attempt + FEEDBACK_MARK


def parse_feedback(text: str) -> Feedback | None:
    """The last ``F:Y`` / ``F:N`` / ``F:N<k>`` in ``text`` (a generated feedback line may omit ``F:``
    when it continues :func:`feedback_request`); ``None`` when there is none."""
    found = FEEDBACK_PATTERN.findall(text) or FEEDBACK_PATTERN.findall("F:" + text.lstrip())
    if not found:
        return None
    verdict, step = found[-1]
    if verdict == "Y":
        return Feedback(True)
    return Feedback(False, int(step) if step and int(step) > 0 else None)


def verifier_feedback(task: Task, problem: Problem, attempt: str, extract: AnswerExtractor = extract_answer) -> Feedback:
    """The verifier's verdict on ``attempt`` with no location (an oracle ``F:Y``/``F:N``)."""
    return Feedback(task.verify(problem, attempt, extract))


def step_feedback(task: Task, problem: Problem, attempt: str, extract: AnswerExtractor = extract_answer) -> Feedback:
    """Step-level feedback (a rule-based critic): for a wrong attempt, the first step that differs from
    the task's reference steps (a missing step counts as differing at its position; none when the
    steps all match and only the answer is wrong). Reference steps come from
    :meth:`Task.worked_solution`; countdown, with many valid solutions, names the first step that is
    false or uses a number not available (none when every step is legal)."""
    if task.verify(problem, attempt, extract):
        return Feedback(True)
    steps = solution_steps(attempt)
    if isinstance(task, CountdownTask):
        first = next((k for k in range(len(steps)) if task.play(problem, steps[: k + 1]) is None), None)
    else:
        reference = reference_steps(task, problem)
        differs = [k for k in range(max(len(steps), len(reference))) if steps[k : k + 1] != reference[k : k + 1]]
        first = differs[0] if differs else None
    return Feedback(False, None if first is None else first + 1)

