"""One reward interface for every judge a recipe uses: ``reward(problems, completions) -> list[float]``.

* :class:`VerifierReward` - 1/0 from the task's verifier (exact match, numeric tolerance, countdown rules);
* :class:`ProcessReward` - the fraction of true steps in the chain of thought (B-STaR's threshold);
* :class:`CallableReward` - any ``fn(problem, completion) -> float | bool`` (a user's ``verify_fn``, unit tests on code, ...);
* :class:`FunctionReward` - a user's ``reward_fn`` in TRL's convention,
  ``reward_fn(prompts=[...], completions=[...], answer=[...], question=[...], id=[...], **columns) -> list[float]``
  (every extra JSONL field shared by the batch's problems arrives as a column, as TRL passes dataset
  columns; a list of functions is summed);
* :class:`SelfJudgeReward` - the policy itself judges each completion in the ``J:`` format and the
  reward is the fraction of ``V:Y`` verdicts over ``num_judgements`` sampled judgements;
* :class:`MajorityVoteReward` - 1 when a completion's answer is its group's most common answer (no labels);
* :class:`OutcomeReward` - game outcomes (``"win"``/``"draw"``/``"loss"`` by default) mapped to numbers.

All are batched: they see the whole list at once (the self-judge generates its judgements in one batch).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ...data.problems import Problem
from ...data.tasks import AnswerExtractor, Task, extract_answer, judge_prompt, parse_number, parse_verdict, prompt_text
from .rollout import SamplingParams, generate_rollouts

RewardFn = Callable[..., Sequence[float]]


def canonical_answer(answer: str | None) -> str | None:
    """An answer in a canonical form for voting: a number's value (``"0132"``, ``"132."`` and ``"132"``
    vote together), else the stripped text; ``None`` stays ``None``."""
    if answer is None:
        return None
    number = parse_number(answer)
    return answer.strip() if number is None else repr(number)


def answer_key(completion: str, extract: AnswerExtractor = extract_answer) -> str | None:
    """The :func:`canonical_answer` of the final answer ``extract`` reads from ``completion``."""
    return canonical_answer(extract(completion))


def majority_answer(keys: Sequence[str | None]) -> str | None:
    """The most common non-``None`` key (the first seen among ties); ``None`` when there is none."""
    counts = Counter(key for key in keys if key is not None)
    return counts.most_common(1)[0][0] if counts else None


class Reward:
    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        raise NotImplementedError


class VerifierReward(Reward):
    """1/0 from ``task.verify`` with the answer read by ``extract`` (the prompt format's)."""

    def __init__(self, task: Task, extract: AnswerExtractor = extract_answer) -> None:
        self.task, self.extract = task, extract

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [float(self.task.verify(p, c, self.extract)) for p, c in zip(problems, completions, strict=True)]


class ProcessReward(Reward):
    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [self.task.step_accuracy(p, c) for p, c in zip(problems, completions, strict=True)]


class CallableReward(Reward):
    def __init__(self, function: Callable[[Problem, str], float | bool]) -> None:
        self.function = function

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [float(self.function(p, c)) for p, c in zip(problems, completions, strict=True)]


def problem_columns(problems: Sequence[Problem]) -> dict[str, list[Any]]:
    """The problems as TRL-style dataset columns: ``question``, ``answer``, ``id`` and every metadata
    field that all of them carry."""
    columns: dict[str, list[Any]] = {
        "question": [p.question for p in problems], "answer": [p.answer for p in problems], "id": [p.id for p in problems],
    }
    shared = set.intersection(*(set(p.metadata) for p in problems)) if problems else set()
    for key in sorted(shared - set(columns)):
        columns[key] = [p.metadata[key] for p in problems]
    return columns


def finite_number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{where}; expected a finite number")
    return number


class FunctionReward(Reward):
    """A user's reward function(s) in TRL's convention, called once per batch as
    ``fn(prompts=..., completions=..., **problem_columns(problems))``; several functions are summed.
    ``prompt`` turns a problem into the prompt the completion continues (the trainer's format)."""

    def __init__(self, reward_fn: RewardFn | Sequence[RewardFn], prompt: Callable[[Problem], str]) -> None:
        self.functions = list(reward_fn) if isinstance(reward_fn, (list, tuple)) else [reward_fn]
        if not self.functions or not all(callable(f) for f in self.functions):
            raise ValueError(f"reward_fn must be a callable or a non-empty list of callables, got {reward_fn!r}")
        self.prompt = prompt

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        prompts, columns = [self.prompt(p) for p in problems], problem_columns(problems)
        total = [0.0] * len(completions)
        for function in self.functions:
            values = list(function(prompts=prompts, completions=list(completions), **columns))
            name = getattr(function, "__name__", repr(function))
            if len(values) != len(completions):
                raise ValueError(f"reward_fn {name} returned {len(values)} rewards for {len(completions)} completions")
            for index, value in enumerate(values):
                total[index] += finite_number(value, f"reward_fn {name} returned {value!r} at position {index}")
        return total


class SelfJudgeReward(Reward):
    """The model scores its own completions: mean ``V:Y`` over ``num_judgements`` judgements each."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        num_judgements: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 80,
        prompt: Callable[[str], str] = prompt_text,
    ) -> None:
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.params = SamplingParams(temperature=temperature, num_samples=num_judgements, max_new_tokens=max_new_tokens)

    def judgements(self, problems: Sequence[Problem], completions: Sequence[str], seed: int = 0):
        prompts = [judge_prompt(self.prompt(p.question), c) for p, c in zip(problems, completions, strict=True)]
        return generate_rollouts(self.model, self.tokenizer, prompts, self.params, seed=seed)

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        rollouts = self.judgements(problems, completions)
        k = self.params.num_samples
        verdicts = [parse_verdict(r.text) is True for r in rollouts]
        return [sum(verdicts[i * k : (i + 1) * k]) / k for i in range(len(completions))]


class MajorityVoteReward(Reward):
    """Label-free: completions come in groups of ``group_size`` per problem; agreeing with the plurality scores 1."""

    def __init__(self, group_size: int, extract: AnswerExtractor = extract_answer) -> None:
        self.group_size, self.extract = group_size, extract

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        if len(completions) % self.group_size:
            raise ValueError(f"{len(completions)} completions do not split into groups of {self.group_size}")
        answers = [self.extract(c) for c in completions]
        rewards = []
        for start in range(0, len(answers), self.group_size):
            group = answers[start : start + self.group_size]
            counts = Counter(a for a in group if a is not None)
            majority = counts.most_common(1)[0][0] if counts else None
            rewards += [float(a is not None and a == majority) for a in group]
        return rewards


class OutcomeReward(Reward):
    """``outcome(problem, completion)`` returns a game result; ``values`` maps it to a reward."""

    def __init__(self, outcome: Callable[[Problem, str], str], values: Mapping[str, float] | None = None) -> None:
        self.outcome = outcome
        self.values = dict(values or {"win": 1.0, "draw": 0.5, "loss": 0.0})

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        rewards = []
        for problem, completion in zip(problems, completions, strict=True):
            result = self.outcome(problem, completion)
            if result not in self.values:
                raise ValueError(f"outcome {result!r} for problem {problem.id!r} is not one of {sorted(self.values)}")
            rewards.append(self.values[result])
        return rewards
