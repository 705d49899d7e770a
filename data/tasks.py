"""Seeded verifiable reasoning tasks with chain-of-thought formats, for the LLM self-improvement recipes.

Every task draws :class:`~selfgen.data.problems.Problem` s from a seed, writes a worked solution
(the chain of thought a tiny LM is pretrained on), extracts the final answer from a completion and
verifies it. The text formats are compact so that a character-level model can learn them::

    addition       Q:47+85              S:7+5+0=12,4+8+1=13         A:132
    multiplication Q:47*6               S:7*6+0=42,4*6+4=28         A:282
    countdown      Q:3,5,7>22           S:3*5=15,15+7=22            A:22

A prompt is ``"Q:<question>\\n"`` (``"Q:<question>\\nH:<answer>\\n"`` with a STaR rationalisation hint)
and a completion is ``"S:<steps>\\nA:<answer>"``. Besides the final answer, each step of a solution
can be checked (:meth:`Task.step_accuracy`: for column arithmetic, against the reference column
steps; for countdown, each step must be a true equation), a process reward used by B-STaR's threshold.

A graded :meth:`Task.quality` in [0, 1], 1 exactly when the completion verifies (the quality gain of
ExIt's revisions): arithmetic scores the share of correct answer digits (:func:`digit_share`),
countdown the distance of the reached value to the target. The hard split ``add_hard``
(:class:`UnequalAdditionTask`) adds a 4-digit number and a shorter one.

For Co-Reward, :meth:`Task.rephrase` gives an *exact* rephrasing of a problem - a different
question string with the same answer (addition: operands swapped or zero-padded to equal width;
multiplication: the multiplicand zero-padded; countdown: the numbers reordered; JSONL: the line's
own ``"rephrasing"`` field). :meth:`Task.rephrasings` rephrases a list of problems from a seed, so a
rephrasing is reproducible and, like its original, never drawn from the held-out seeds.

Users' own problems (``{"question", "answer"}`` JSONL, see :mod:`selfgen.data.problems`) become a
:class:`JsonlTask`: exact-match or numeric-tolerance verification of the ``A:`` line.

**Held-out split.** ``task.sample(count, seed, split="train" | "eval")``. A problem's split is a
property of the problem, never of the seed: for generated tasks the SHA-256 of the question's
canonical form (:meth:`Task.split_key`: ``a+b`` and ``b+a`` share one) decides it, a share
``eval_fraction`` (default 0.1) being held out, and sampling a split keeps only the draws that fall
in it; a JSONL file holds out the ``eval_fraction`` of its questions with the smallest hashes, or
uses a separate ``eval_file``. So no seed, iteration or recipe can ever train on an evaluation
problem. :func:`derive_seed` mixes several integers (run seed, iteration, purpose) into one seed by
hashing, so distinct purposes never share a seed by arithmetic accident.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from .problems import Problem, load_problems

ANSWER_PATTERN = re.compile(r"A:[ \t]*([^\n]*)")
STEP_PATTERN = re.compile(r"^(-?\d+)([+*-])(-?\d+)(?:\+(\d+))?=(-?\d+)$")
DIGITS = re.compile(r"[0-9]+")
NUMBER_PATTERN = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
SPLITS = ("train", "eval")
EVAL_FRACTION = 0.1
logger = logging.getLogger("selfgen.data.tasks")


def stable_hash(text: str) -> float:
    """A uniform number in [0, 1) from the SHA-256 of ``text`` (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def derive_seed(*parts: int | str) -> int:
    """One 63-bit seed from ``parts`` (e.g. ``(run_seed, iteration)``) by hashing, so that no two
    different tuples collide by arithmetic (as ``seed * 1000 + iteration`` did)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode("utf-8")).digest()[:8], "big") >> 1


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_eval_fraction(eval_fraction: float) -> None:
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")


def prompt_text(question: str, hint: str | None = None) -> str:
    """The prompt of a problem; with ``hint`` the reference answer is shown (STaR rationalisation)."""
    return f"Q:{question}\n" + (f"H:{hint}\n" if hint is not None else "")


def completion_text(steps: list[str], answer: str) -> str:
    return f"S:{','.join(steps)}\nA:{answer}"


def extract_answer(completion: str) -> str | None:
    """The text after the last ``A:`` of a completion, stripped (``None`` when there is no ``A:`` line)."""
    found = ANSWER_PATTERN.findall(completion)
    if not found:
        return None
    answer = found[-1].strip()
    return answer or None


def replace_answer(completion: str, answer: str) -> str:
    """``completion`` with the text of its last ``A:`` line replaced by ``answer`` (a wrong-answer variant
    of a worked solution); unchanged when it has no ``A:`` line."""
    found = list(ANSWER_PATTERN.finditer(completion))
    if not found:
        return completion
    start, end = found[-1].span(1)
    return completion[:start] + answer + completion[end:]


def parse_number(text: str) -> float | None:
    """A float from ``text`` allowing thousands separators (``"1,234"``) and a trailing period; else None."""
    cleaned = text.strip().replace(",", "").rstrip(".")
    if not NUMBER_PATTERN.match(cleaned):
        return None
    return float(cleaned)


def answers_match(predicted: str | None, reference: str, rel_tol: float = 0.0, abs_tol: float = 0.0) -> bool:
    """Numeric comparison within tolerance when both parse as numbers, else exact (whitespace-stripped) match."""
    if predicted is None:
        return False
    predicted_number, reference_number = parse_number(predicted), parse_number(reference)
    if predicted_number is not None and reference_number is not None:
        return math.isclose(predicted_number, reference_number, rel_tol=rel_tol, abs_tol=abs_tol)
    return predicted.strip() == reference.strip()


def digit_share(predicted: str | None, reference: str) -> float:
    """The share of ``reference``'s digits that ``predicted`` gets right, aligned from the right, over
    ``max(len(reference), len(predicted))`` digits (a missing or extra digit is wrong); ``predicted``
    is read as an integer (leading zeros dropped); 0 unless it is a plain non-negative integer."""
    if predicted is None or not DIGITS.fullmatch(predicted.strip()) or not DIGITS.fullmatch(reference):
        return 0.0
    predicted = str(int(predicted.strip()))
    matches = sum(a == b for a, b in zip(reversed(predicted), reversed(reference)))
    return matches / max(len(predicted), len(reference))


def solution_steps(completion: str) -> list[str]:
    """The comma-separated steps of the first ``S:`` line of a completion (empty when absent)."""
    for line in completion.split("\n"):
        if line.startswith("S:"):
            return [step for step in line[2:].split(",") if step]
    return []


def step_is_true(step: str) -> bool:
    """Whether one arithmetic step ``a<op>b[+carry]=c`` is a true equation."""
    match = STEP_PATTERN.match(step.strip())
    if match is None:
        return False
    left, op, right, carry, result = match.groups()
    value = {"+": int(left) + int(right), "-": int(left) - int(right), "*": int(left) * int(right)}[op]
    return value + int(carry or 0) == int(result)


AnswerExtractor = Callable[[str], "str | None"]


class Task:
    """A verifiable task: ``sample`` problems of a split, ``worked_solution`` for pretraining, ``verify``
    completions. Generated tasks implement :meth:`make_problem`; their split is decided per question."""

    name: str = "task"
    eval_fraction: float = EVAL_FRACTION

    def sample(self, count: int, seed: int, split: str = "train") -> list[Problem]:
        """``count`` seeded problems of ``split``: draws from ``make_problem`` outside the split are skipped."""
        check_split(split)
        rng, problems, draws = random.Random(seed), [], 0
        limit = 1000 * (count + 1)
        while len(problems) < count:
            if draws == limit:
                raise ValueError(
                    f"task {self.name!r}: {draws} draws gave only {len(problems)} {split!r} problems "
                    f"(eval_fraction={self.eval_fraction}); widen the task or change eval_fraction"
                )
            problem = self.make_problem(rng, f"{self.name}-{seed}-{draws}")
            draws += 1
            if self.split_of(problem) == split:
                problems.append(problem)
        return problems

    def split_key(self, question: str) -> str:
        """The canonical form of a question that decides its split (equivalent questions share one)."""
        return " ".join(question.split())

    def split_of(self, problem: Problem) -> str:
        """``"eval"`` when the hash of the problem's :meth:`split_key` falls below ``eval_fraction``."""
        return "eval" if stable_hash(self.split_key(problem.question)) < self.eval_fraction else "train"

    def make_problem(self, rng: random.Random, problem_id: str) -> Problem:
        raise NotImplementedError

    def worked_solution(self, problem: Problem) -> str:
        """A correct completion (``S:...\\nA:...``) for ``problem``."""
        raise NotImplementedError

    def verify(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> bool:
        """Whether the answer ``extract`` reads from ``completion`` matches the reference answer."""
        return answers_match(extract(completion), problem.answer)

    def step_accuracy(self, problem: Problem, completion: str) -> float:
        """The fraction of true steps in the completion's ``S:`` line (0 without steps)."""
        steps = solution_steps(completion)
        return sum(step_is_true(step) for step in steps) / len(steps) if steps else 0.0

    def quality(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> float:
        """A graded score in [0, 1] that is 1 exactly when :meth:`verify` accepts the completion (ExIt's
        reward is its gain between attempts). Here 1 or 0; tasks with partial credit override it."""
        return float(self.verify(problem, completion, extract))

    @property
    def rephrasing_styles(self) -> tuple[str, ...]:
        """The styles :meth:`rephrase` draws from (the ``"rephrasing"`` metadata it writes); none here."""
        return ()

    def rephrase(self, problem: Problem, rng: random.Random, styles: Collection[str] | None = None) -> Problem:
        """An exact rephrasing of ``problem``: another question string with the same answer, in one of
        ``styles`` (``None``: any of :attr:`rephrasing_styles`)."""
        raise ValueError(f"task {self.name!r} has no exact rephrasings (needed by Co-Reward)")

    def check_rephrasing_styles(self, styles: Collection[str] | None) -> None:
        """Refuse ``styles`` (Co-Reward's ``rephrasings`` option) unless ``None`` or a non-empty subset of
        :attr:`rephrasing_styles`."""
        if styles is None:
            return
        unknown = sorted(set(styles) - set(self.rephrasing_styles))
        if not styles or unknown:
            raise ValueError(
                f"rephrasings must be a non-empty list of {list(self.rephrasing_styles)} for task {self.name!r}, "
                f"got {list(styles)}" + (f" (unknown: {unknown})" if unknown else "")
            )

    def rephrasings(self, problems: list[Problem], seed: int, styles: Collection[str] | None = None) -> list[Problem]:
        """One seeded rephrasing per problem (id ``<id>-r``, metadata ``original`` and ``rephrasing``), each in
        one of ``styles`` (checked by :meth:`check_rephrasing_styles`; ``None``: any the task has)."""
        self.check_rephrasing_styles(styles)
        rng = random.Random(seed)
        return [self.rephrase(problem, rng, styles) for problem in problems]


def rephrased(problem: Problem, question: str, style: str) -> Problem:
    metadata = {**problem.metadata, "original": problem.question, "rephrasing": style}
    return Problem(question, problem.answer, f"{problem.id}-r", metadata)


@dataclass
class ArithmeticTask(Task):
    """Column addition or multiplication by one digit, least significant digit first, with carries.

    Difficulty knob: ``min_digits``/``max_digits`` of the operands (the multiplier of ``"mul"`` is one digit).
    """

    op: str = "add"
    min_digits: int = 1
    max_digits: int = 3
    eval_fraction: float = EVAL_FRACTION

    def __post_init__(self) -> None:
        check_eval_fraction(self.eval_fraction)
        if self.op not in ("add", "mul"):
            raise ValueError(f"op must be 'add' or 'mul', got {self.op!r}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        self.name = self.op

    def split_key(self, question: str) -> str:
        """Operands as integers (zero padding dropped), an addition's in sorted order: a rephrasing
        (:meth:`rephrase`) always lies in its original's split."""
        symbol = "+" if self.op == "add" else "*"
        operands = [str(int(part)) for part in question.split(symbol)]
        return symbol.join(sorted(operands) if self.op == "add" else operands)

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

    def make_problem(self, rng: random.Random, problem_id: str) -> Problem:
        left = self._operand(rng)
        if self.op == "add":
            right = self._operand(rng)
            return Problem(f"{left}+{right}", str(left + right), problem_id)
        right = rng.randint(2, 9)
        return Problem(f"{left}*{right}", str(left * right), problem_id)

    def worked_solution(self, problem: Problem) -> str:
        symbol = "+" if self.op == "add" else "*"
        left, right = problem.question.split(symbol)
        steps, carry = [], 0
        if self.op == "add":
            width = max(len(left), len(right))
            left, right = left.zfill(width), right.zfill(width)
            for a, b in zip(reversed(left), reversed(right)):
                total = int(a) + int(b) + carry
                steps.append(f"{a}+{b}+{carry}={total}")
                carry = total // 10
        else:
            for a in reversed(left):
                total = int(a) * int(right) + carry
                steps.append(f"{a}*{right}+{carry}={total}")
                carry = total // 10
        return completion_text(steps, problem.answer)

    @property
    def rephrasing_styles(self) -> tuple[str, ...]:
        return ("pad", "swap") if self.op == "add" else ("pad",)

    def rephrase(self, problem: Problem, rng: random.Random, styles: Collection[str] | None = None) -> Problem:
        """Addition: ``b+a`` (``swap``) or both operands zero-padded to the same width (``pad``, one more
        zero when they already have it), chosen at random among those that change the question
        (``styles=None``) or among ``styles`` (then the swap of ``a+a`` is ``a+a`` itself);
        multiplication: the multiplicand with a leading zero (``pad``). The answer is unchanged."""
        symbol = "+" if self.op == "add" else "*"
        left, right = problem.question.split(symbol)
        if self.op == "mul":
            return rephrased(problem, f"0{left}*{right}", "pad")
        width = max(len(left), len(right)) + (len(left) == len(right))
        candidates = {"pad": f"{left.zfill(width)}+{right.zfill(width)}", "swap": f"{right}+{left}"}
        allowed = [s for s in sorted(candidates) if (s in styles if styles is not None else candidates[s] != problem.question)]
        style = rng.choice(allowed)
        return rephrased(problem, candidates[style], style)

    def step_accuracy(self, problem: Problem, completion: str) -> float:
        """The fraction of the reference column steps reproduced exactly, position by position (a step
        with the wrong digits is wrong even when its sum is true); extra steps count against it."""
        reference = solution_steps(self.worked_solution(problem))
        steps = solution_steps(completion)
        matches = sum(a == b for a, b in zip(steps, reference))
        return matches / max(len(steps), len(reference))

    def quality(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> float:
        """The share of correct answer digits: 1 when verified, else ``matches / max(len(ref), len(pred))``
        with digits aligned from the right (units with units), a missing or extra digit counting as
        wrong, the prediction read as an integer (leading zeros dropped); 0 for no answer or one that
        is not a plain non-negative integer. E.g. reference 132: ``"142"`` 2/3, ``"32"`` 2/3, ``"1132"`` 3/4."""
        if self.verify(problem, completion, extract):
            return 1.0
        return digit_share(extract(completion), problem.answer)


@dataclass
class UnequalAdditionTask(ArithmeticTask):
    """The hard split (``task: add_hard``): additions of a ``long_digits``-digit number (default 4) and a
    shorter one (1 to ``long_digits - 1`` digits, uniform), the long operand first or second at random.
    The column steps must carry through the columns where the short operand has run out, the case a
    model trained mostly on equal widths gets wrong. Questions are ``add`` questions, split by the same
    :meth:`ArithmeticTask.split_key`, so a held-out ``add_hard`` problem is never an ``add`` training
    problem. :func:`is_unequal_addition` tells whether any addition question belongs to it."""

    long_digits: int = 4

    def __post_init__(self) -> None:
        if self.long_digits < 2:
            raise ValueError(f"long_digits must be >= 2 (a shorter operand must exist), got {self.long_digits}")
        self.op, self.min_digits, self.max_digits = "add", 1, self.long_digits
        super().__post_init__()
        self.name = "add_hard"

    def make_problem(self, rng: random.Random, problem_id: str) -> Problem:
        long = rng.randint(10 ** (self.long_digits - 1), 10**self.long_digits - 1)
        short_digits = rng.randint(1, self.long_digits - 1)
        short = rng.randint(10 ** (short_digits - 1) if short_digits > 1 else 0, 10**short_digits - 1)
        left, right = (long, short) if rng.random() < 0.5 else (short, long)
        return Problem(f"{left}+{right}", str(left + right), problem_id)


def is_unequal_addition(question: str, long_digits: int = 4) -> bool:
    """Whether ``question`` (``a+b``) adds a ``long_digits``-digit number and a shorter one."""
    parts = question.split("+")
    if len(parts) != 2 or not all(DIGITS.fullmatch(part) for part in parts):
        return False
    widths = sorted(len(str(int(part))) for part in parts)
    return widths[1] == long_digits and widths[0] < long_digits


@dataclass
class CountdownTask(Task):
    """Reach a target from given numbers with ``+ - *``, each number (or intermediate result) used once.

    Difficulty knob: ``num_numbers`` (numbers are drawn from 1..``max_number``). Problems are built
    by applying random operations, so each has a solution; any valid solution is accepted.
    """

    num_numbers: int = 3
    max_number: int = 9
    name: str = "countdown"
    eval_fraction: float = EVAL_FRACTION

    def __post_init__(self) -> None:
        check_eval_fraction(self.eval_fraction)
        if self.num_numbers < 2:
            raise ValueError(f"num_numbers must be >= 2, got {self.num_numbers}")

    def split_key(self, question: str) -> str:
        """The numbers in sorted order and the target (a reordering lies in its original's split)."""
        numbers, target = question.split(">")
        return f"{','.join(sorted(numbers.split(','), key=int))}>{target}"

    def make_problem(self, rng: random.Random, problem_id: str) -> Problem:
        numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
        pool, steps = list(numbers), []
        while len(pool) > 1:
            a, b = pool.pop(0), pool.pop(0)
            op = rng.choice("+*-" if a > b else "+*")
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
            steps.append(f"{a}{op}{b}={value}")
            pool.insert(0, value)
        shown = list(numbers)
        rng.shuffle(shown)
        question = f"{','.join(map(str, shown))}>{pool[0]}"
        return Problem(question, str(pool[0]), problem_id, {"solution": ",".join(steps)})

    def worked_solution(self, problem: Problem) -> str:
        return completion_text(problem.metadata["solution"].split(","), problem.answer)

    @property
    def rephrasing_styles(self) -> tuple[str, ...]:
        return ("reorder",)

    def rephrase(self, problem: Problem, rng: random.Random, styles: Collection[str] | None = None) -> Problem:
        """The same numbers and target with the numbers in another order (``reorder``, the one style, so
        ``styles`` changes nothing; unchanged only when every number is the same)."""
        numbers, target = problem.question.split(">")
        order = numbers.split(",")
        shuffled = list(order)
        for _ in range(10):
            rng.shuffle(shuffled)
            if shuffled != order:
                break
        return rephrased(problem, f"{','.join(shuffled)}>{target}", "reorder")

    def play(self, problem: Problem, steps: list[str]) -> list[int] | None:
        """The numbers left after playing ``steps`` on the problem's numbers (each result joins them), or
        ``None`` when a step is not a true ``a<op>b=c`` or uses a number that is not available."""
        pool = [int(n) for n in problem.question.split(">")[0].split(",")]
        for step in steps:
            match = STEP_PATTERN.match(step.strip())
            if match is None or match.group(4) is not None or not step_is_true(step):
                return None
            left, _, right, _, result = match.groups()
            for operand in (int(left), int(right)):
                if operand not in pool:
                    return None
                pool.remove(operand)
            pool.append(int(result))
        return pool

    def verify(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> bool:
        """Every step is true and uses available numbers, and the last result is the target."""
        steps = solution_steps(completion)
        if not steps or not answers_match(extract(completion), problem.answer):
            return False
        return self.play(problem, steps) == [int(problem.question.split(">")[1])]

    def quality(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> float:
        """Distance to the target: 1 when verified; 0 without steps or with a false step or one that
        uses a number not available; else ``1 / (1 + |v - target| + unused)``, ``v`` the last step's
        result and ``unused`` the count of given numbers never used, capped at 1/2 for a completion
        that is not verified (a right chain whose ``A:`` line is wrong)."""
        if self.verify(problem, completion, extract):
            return 1.0
        steps = solution_steps(completion)
        pool = self.play(problem, steps) if steps else None
        if pool is None:
            return 0.0
        reached = pool[-1]  # the last step's result is appended last
        distance = abs(reached - int(problem.question.split(">")[1])) + len(pool) - 1
        return min(0.5, 1.0 / (1.0 + distance))


@dataclass
class JsonlTask(Task):
    """Users' own ``{"question", "answer"}`` JSONL problems, verified on the ``A:`` line (numbers within tolerance).

    Held out: the questions of ``eval_file`` when given (none may also be a training question), else
    the share ``eval_fraction`` of the file's distinct questions with the smallest SHA-256 (at least one,
    never all; repeated questions stay together). ``sample`` draws without replacement in a seeded
    order; the training split is reshuffled and repeated when ``count`` exceeds it, an evaluation
    draw is capped at the split's size."""

    path: str = ""
    rel_tol: float = 0.0
    abs_tol: float = 0.0
    name: str = "jsonl"
    eval_fraction: float = EVAL_FRACTION
    eval_file: str | None = None

    def __post_init__(self) -> None:
        check_eval_fraction(self.eval_fraction)
        self.problems = problems = load_problems(self.path)  # the file's problems, in file order
        if self.eval_file:
            held_out = load_problems(self.eval_file)
            shared = {self.split_key(p.question) for p in problems} & {self.split_key(p.question) for p in held_out}
            if shared:
                raise ValueError(
                    f"eval_file {self.eval_file} shares {len(shared)} question(s) with {self.path} "
                    f"(e.g. {sorted(shared)[0]!r}); a held-out problem must never be a training problem"
                )
            self.splits = {"train": problems, "eval": held_out}
            return
        keys = sorted({self.split_key(p.question) for p in problems}, key=stable_hash)
        if len(keys) < 2:
            raise ValueError(f"{self.path}: needs at least 2 distinct questions to hold some out, or an eval_file")
        held = set(keys[: min(len(keys) - 1, max(1, round(self.eval_fraction * len(keys))))])
        self.splits = {
            "train": [p for p in problems if self.split_key(p.question) not in held],
            "eval": [p for p in problems if self.split_key(p.question) in held],
        }

    def sample(self, count: int, seed: int, split: str = "train") -> list[Problem]:
        check_split(split)
        pool, rng = self.splits[split], random.Random(seed)
        if split == "eval":
            if count > len(pool):
                logger.info("%s: %d eval problems asked, the held-out split has %d", self.path, count, len(pool))
            return rng.sample(pool, min(count, len(pool)))
        drawn: list[Problem] = []
        while len(drawn) < count:
            drawn += rng.sample(pool, min(count - len(drawn), len(pool)))
        return drawn

    def worked_solution(self, problem: Problem) -> str:
        if "solution" not in problem.metadata:
            raise ValueError(f"{self.path}: problem {problem.id!r} has no 'solution' field to pretrain on")
        return completion_text([problem.metadata["solution"]], problem.answer)

    def verify(self, problem: Problem, completion: str, extract: AnswerExtractor = extract_answer) -> bool:
        return answers_match(extract(completion), problem.answer, self.rel_tol, self.abs_tol)

    @property
    def rephrasing_styles(self) -> tuple[str, ...]:
        return ("user",)

    def rephrase(self, problem: Problem, rng: random.Random, styles: Collection[str] | None = None) -> Problem:
        """The line's own ``"rephrasing"`` field (an equivalent question written by the user: ``user``, the
        one style, so ``styles`` changes nothing)."""
        text = problem.metadata.get("rephrasing")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{self.path}: problem {problem.id!r} has no 'rephrasing' string field; Co-Reward needs one per problem"
            )
        metadata = {key: value for key, value in problem.metadata.items() if key != "rephrasing"}
        return rephrased(Problem(problem.question, problem.answer, problem.id, metadata), text, "user")


TASK_NAMES = ("add", "mul", "arith", "countdown", "add_hard")


def get_task(name: str, **options) -> Task:
    """A task by name (``add``/``arith``, ``mul``, ``countdown``, ``add_hard``) or a path to a problems JSONL file."""
    if name in ("add", "arith"):
        return ArithmeticTask("add", **options)
    if name == "mul":
        return ArithmeticTask("mul", **options)
    if name == "countdown":
        return CountdownTask(**options)
    if name == "add_hard":
        return UnequalAdditionTask(**options)
    if name.endswith(".jsonl") or Path(name).is_file():
        return JsonlTask(path=name, **options)
    raise ValueError(f"task must be one of {TASK_NAMES} or a problems .jsonl file, got {name!r}")


# ----------------------------------------------------------------- two-turn and judge formats

REVISION_MARK = "\nR:\n"
JUDGE_MARK = "\nJ:"
VERDICT_PATTERN = re.compile(r"V:([YN])")


def revision_prompt(prompt: str, first_completion: str) -> str:
    """The second-turn prompt of a self-correction episode: the first attempt, then ``R:`` (revise)."""
    return prompt + first_completion + REVISION_MARK


def judge_prompt(prompt: str, completion: str) -> str:
    """The prompt that asks the model to judge ``completion``: it re-solves the problem after ``J:``."""
    return prompt + completion + JUDGE_MARK


def judge_completion(own_solution: str, candidate_answer: str | None, reference: str) -> str:
    """A judgement: the judge's own solution as rationale, then ``V:Y`` if the candidate matches it."""
    verdict = "Y" if answers_match(candidate_answer, reference) else "N"
    return f"{own_solution}\nV:{verdict}"


def parse_verdict(judgement: str) -> bool | None:
    """``True`` for ``V:Y``, ``False`` for ``V:N``, ``None`` when the judgement has no verdict."""
    found = VERDICT_PATTERN.findall(judgement)
    return None if not found else found[-1] == "Y"


def corrupt_answer(answer: str, rng: random.Random) -> str:
    """A wrong answer close to ``answer``: one digit changed (a negative-example generator)."""
    digits = list(answer)
    positions = [index for index, char in enumerate(digits) if char.isdigit()]
    if not positions:
        return answer + "0"
    index = rng.choice(positions)
    digits[index] = rng.choice([d for d in "0123456789" if d != digits[index]])
    return "".join(digits)
