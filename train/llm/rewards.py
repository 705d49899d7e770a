"""One reward interface for every judge a recipe uses: ``reward(problems, completions) -> list[float]``.

* :class:`VerifierReward` - 1/0 from the task's verifier (exact match, numeric tolerance, countdown rules);
* :class:`ProcessReward` - the fraction of true steps in the chain of thought (B-STaR's threshold);
* :class:`CallableReward` - any ``fn(problem, completion) -> float | bool`` (unit tests on code, ...);
* :class:`SelfJudgeReward` - the policy itself judges each completion in the ``J:`` format and the
  reward is the fraction of ``V:Y`` verdicts over ``num_judgements`` sampled judgements;
* :class:`MajorityVoteReward` - 1 when a completion's answer is its group's most common answer (no labels);
* :class:`OutcomeReward` - game outcomes (``"win"``/``"draw"``/``"loss"`` by default) mapped to numbers.

All are batched: they see the whole list at once (the self-judge generates its judgements in one batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from ...data.problems import Problem
from ...data.tasks import Task, extract_answer, judge_prompt, parse_number, parse_verdict, prompt_text
from .rollout import SamplingParams, generate_rollouts


def answer_key(completion: str) -> str | None:
    """The final answer of a completion in a canonical form for voting: a number's value (``"0132"``,
    ``"132."`` and ``"132"`` vote together), else the stripped text; ``None`` without an answer."""
    answer = extract_answer(completion)
    if answer is None:
        return None
    number = parse_number(answer)
    return answer.strip() if number is None else repr(number)


def majority_answer(keys: Sequence[str | None]) -> str | None:
    """The most common non-``None`` key (the first seen among ties); ``None`` when there is none."""
    counts = Counter(key for key in keys if key is not None)
    return counts.most_common(1)[0][0] if counts else None


class Reward:
    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        raise NotImplementedError


class VerifierReward(Reward):
    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [float(self.task.verify(p, c)) for p, c in zip(problems, completions, strict=True)]


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


class SelfJudgeReward(Reward):
    """The model scores its own completions: mean ``V:Y`` over ``num_judgements`` judgements each."""

    def __init__(
        self, model: nn.Module, tokenizer, num_judgements: int = 1, temperature: float = 0.0, max_new_tokens: int = 80
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.params = SamplingParams(temperature=temperature, num_samples=num_judgements, max_new_tokens=max_new_tokens)

    def judgements(self, problems: Sequence[Problem], completions: Sequence[str], seed: int = 0):
        prompts = [judge_prompt(prompt_text(p.question), c) for p, c in zip(problems, completions, strict=True)]
        return generate_rollouts(self.model, self.tokenizer, prompts, self.params, seed=seed)

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        rollouts = self.judgements(problems, completions)
        k = self.params.num_samples
        verdicts = [parse_verdict(r.text) is True for r in rollouts]
        return [sum(verdicts[i * k : (i + 1) * k]) / k for i in range(len(completions))]


class MajorityVoteReward(Reward):
    """Label-free: completions come in groups of ``group_size`` per problem; agreeing with the plurality scores 1."""

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        if len(completions) % self.group_size:
            raise ValueError(f"{len(completions)} completions do not split into groups of {self.group_size}")
        answers = [extract_answer(c) for c in completions]
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
