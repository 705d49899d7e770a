"""Iterative Deepening Sampling (Chen, Koenig & Dilkina, 2025, "Iterative Deepening Sampling as
Efficient Test-Time Scaling", arXiv:2502.05449): a test-time method for any causal LM.

One ID-sample is generated in segments with geometrically growing token budgets
``b_r = ceil(b_0 * gamma^r)`` (r = 0, 1, ...). When a segment ends - its budget is spent (the trigger
interrupts the generation) or the model ended its answer - a fixed **self-correction trigger** is
appended and generation continues from there, until the sample's total budget ``max_new_tokens`` of
generated tokens is spent (or ``max_rounds`` segments were written). Early triggers give cheap chances
to re-check a short attempt; growing budgets leave long, uninterrupted stretches for later revisions.
A sample's answer is the answer of its last segment that gives one. N ID-samples of a problem are
aggregated by majority vote over their answers, or best-of-N by a score (:func:`aggregate`).

The segments run on the shared multi-round sampler (:func:`~selfgen.train.llm.revision.sample_revisions`,
KV-cache continuation, one budget per round) with no feedback: the trigger is the prompt format's plain
revision request (:meth:`PromptFormat.revision_suffix`): ``"\\nR:\\n"`` for the arithmetic format (the
revision mark SCoRe / CCT policies are trained to answer), a "review your solution" user turn for a chat
format; a different trigger sentence is a ``PromptFormat`` subclass overriding ``revision_suffix``.

The matched control is plain sampling with majority vote at the same number of *generated* tokens per
problem (trigger tokens are inserted, not generated).

Departures: the paper inserts a trigger sentence ("Wait, ...") into one continuing response of a
reasoning model; here the trigger is the policy's own revision turn, and a trigger also follows a
segment the model ended by itself (the shared sampler always continues), so short solutions get
re-checked - the paper's budgets are thousands of tokens, ours tens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ...data.problems import Problem
from .prompts import PromptFormat
from .revision import Episode, VerifyFn, sample_revisions
from .rewards import canonical_answer, majority_answer


def segment_budgets(initial_budget: int, growth: float, max_new_tokens: int, max_rounds: int | None = None) -> list[int]:
    """The per-segment budgets ``ceil(b_0 gamma^r)``, the last one cut so that they sum to at most
    ``max_new_tokens``."""
    if initial_budget < 1 or growth < 1 or max_new_tokens < 1:
        raise ValueError(
            f"need initial_budget >= 1, growth >= 1, max_new_tokens >= 1; got {initial_budget}, {growth}, {max_new_tokens}"
        )
    budgets, total = [], 0
    while total < max_new_tokens and (max_rounds is None or len(budgets) < max_rounds):
        budget = min(math.ceil(initial_budget * growth ** len(budgets)), max_new_tokens - total)
        budgets.append(budget)
        total += budget
    return budgets


def iterative_deepening(
    model: nn.Module,
    tokenizer,
    fmt: PromptFormat,
    problems: Sequence[Problem],
    *,
    initial_budget: int,
    growth: float = 2.0,
    max_new_tokens: int,
    max_rounds: int | None = None,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    verify: VerifyFn | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> list[Episode]:
    """``num_samples`` ID-samples per problem (problem 0's first), each an
    :class:`~selfgen.train.llm.revision.Episode` whose turns are the segments (module docstring);
    :func:`final_answer` reads its answer, ``sum(episode.new_tokens)`` its generated tokens."""
    budgets = segment_budgets(initial_budget, growth, max_new_tokens, max_rounds)
    return sample_revisions(
        model, tokenizer, fmt, problems, rounds=len(budgets), max_new_tokens=budgets, temperature=temperature,
        top_p=top_p, num_samples=num_samples, verify=verify, batch_size=batch_size, seed=seed,
    )


def final_answer(episode: Episode) -> str | None:
    """The answer of the episode's last segment that gives one (``None`` when none does)."""
    return next((answer for answer in reversed(episode.answers) if answer is not None), None)


def aggregate(
    answers: Sequence[str | None],
    method: str = "vote",
    scores: Sequence[float] | None = None,
) -> str | None:
    """The answer chosen among one problem's sample ``answers``: ``vote`` (majority of canonical
    answers) or ``best`` (the answer of the highest ``scores`` entry, the first among ties)."""
    keys = [canonical_answer(answer) for answer in answers]
    if method == "vote":
        return majority_answer(keys)
    if method == "best":
        if scores is None or len(scores) != len(answers):
            raise ValueError(f"method='best' needs one score per answer, got {None if scores is None else len(scores)} for {len(answers)}")
        return keys[max(range(len(answers)), key=lambda i: scores[i])]
    raise ValueError(f"method must be 'vote' or 'best', got {method!r}")
