"""The seed SFT round of the self-correction recipes: ground-truth worked solutions plus the feedback
and correction turns of :mod:`selfgen.data.reasoning`, so the bundled base model (which has only
seen ``R:`` restate a right attempt) learns the ``F:`` and ``R:`` turns without a new base model.

Each of ``seed_problems`` training-split problems gives one example (``fmt`` is the recipe's
:class:`~selfgen.train.llm.prompts.PromptFormat`, ``y*`` the task's worked solution):

* with probability ``1 - seed_turn_share`` the plain solution ``prompt -> y*``;
* otherwise an attempt ``a`` - ``y*`` itself or, half of the time, ``y*`` with one rule-corrupted step
  (:func:`~selfgen.data.reasoning.corrupt_step`) and a one-digit-corrupted answer - in one of three
  turns, uniformly:
  ``fmt.feedback_request(q, a) -> F`` (write the feedback: ``Y``, or ``N<k>`` naming the first
  wrong step as the rule critic :func:`~selfgen.data.reasoning.step_feedback` does),
  ``fmt.revision(q, a, F) -> y*`` (correct under feedback; ``F`` the located ``N<k>`` or, half of
  the time, the bare verdict ``Y``/``N``), and ``fmt.revision(q, a) -> y*`` (the plain revision turn).

A right attempt is therefore always followed by itself (keep it) and a wrong one by its fix. The
attempts are rule-made, not the model's own samples: the round only teaches the formats; recipes
that need the model's own errors (CCT, SCL, SCoRe's warm start) sample them afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ...data.problems import Problem
from ...data.reasoning import Feedback, corrupt_step, step_feedback
from ...data.tasks import Task, completion_text, corrupt_answer, solution_steps
from .driver import IterativeTrainer, Round
from .objectives import SFTCollator, SFTObjective, TextPair
from .prompts import PromptFormat

CORRECTION_SEED = 7_700  # the seed round's problems (training split)
TURNS = ("feedback", "revision_with_feedback", "revision")


@dataclass
class CorrectionSeedConfig:
    """The seed round's fields (a mixin of a recipe's config); ``seed_problems: 0`` skips the round."""

    seed_problems: int = 0
    seed_train_steps: int = 200
    seed_learning_rate: float = 3e-4
    seed_turn_share: float = 0.5  # share of examples that are feedback/correction turns (the rest plain solutions)


def wrong_attempt(task: Task, problem: Problem, rng: random.Random) -> str:
    """The worked solution with one step corrupted (uniform position and error kind) and a wrong answer."""
    steps = solution_steps(task.worked_solution(problem))
    if steps:
        index = rng.randrange(len(steps))
        kind = rng.choice(("calculation", "carry", "operand"))
        try:
            steps[index] = corrupt_step(steps[index], kind, rng)
        except ValueError:  # a step outside the a<op>b=r form: only the answer is wrong
            pass
    return completion_text(steps, corrupt_answer(problem.answer, rng))


def correction_examples(
    task: Task, problems: list[Problem], fmt: PromptFormat, seed: int, turn_share: float = 0.5
) -> list[TextPair]:
    """One seed example per problem (see the module docstring)."""
    if not 0.0 <= turn_share <= 1.0:
        raise ValueError(f"seed_turn_share must be in [0, 1], got {turn_share}")
    rng = random.Random(seed)
    examples = []
    for problem in problems:
        solution = task.worked_solution(problem)
        if rng.random() >= turn_share:
            examples.append(TextPair(fmt.prompt(problem.question), solution))
            continue
        attempt = solution if rng.random() < 0.5 else wrong_attempt(task, problem, rng)
        located = step_feedback(task, problem, attempt, fmt.answer)
        turn = rng.choice(TURNS)
        if turn == "feedback":
            examples.append(TextPair(fmt.feedback_request(problem.question, attempt), located.line()))
        elif turn == "revision_with_feedback":
            shown = located if rng.random() < 0.5 else Feedback(located.correct)
            examples.append(TextPair(fmt.revision(problem.question, attempt, shown), solution))
        else:
            examples.append(TextPair(fmt.revision(problem.question, attempt), solution))
    return examples


def correction_seed_round(trainer: IterativeTrainer) -> Round | None:
    """The seed round of a recipe whose config has the :class:`CorrectionSeedConfig` fields (assign it
    as the recipe's ``seed_round``); ``None`` when ``seed_problems`` is 0."""
    config = trainer.config
    if not config.seed_problems:
        return None
    problems = trainer.task.sample(config.seed_problems, CORRECTION_SEED + config.seed)
    examples = correction_examples(trainer.task, problems, trainer.format, CORRECTION_SEED + config.seed, config.seed_turn_share)
    turns = sum(pair.prompt != trainer.prompt(problem) for pair, problem in zip(examples, problems))
    logs = {"seed_examples": float(len(examples)), "seed_turn_examples": float(turns)}
    return Round(
        SFTObjective(), examples, SFTCollator(trainer.tokenizer, config.max_length), logs,
        max_train_steps=config.seed_train_steps, learning_rate=config.seed_learning_rate,
    )
