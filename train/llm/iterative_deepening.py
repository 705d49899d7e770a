"""Iterative Deepening Sampling (Chen, Koenig & Dilkina, 2025, "Iterative Deepening Sampling as
Efficient Test-Time Scaling", arXiv:2502.05449): a test-time method for any causal LM.

One ID-sample is generated in segments with geometrically growing token budgets
``b_r = ceil(b_0 * gamma^r)`` (r = 0, 1, ...). When a segment ends - its budget is spent, or (with
``trigger_on_finish``) the model ended its answer - a fixed **self-correction trigger** is appended to
the text and generation continues from there, until the sample's total budget ``max_new_tokens`` of
generated tokens is spent (or ``max_rounds`` segments were written). Early triggers give cheap chances
to re-check a short attempt; growing budgets leave long, uninterrupted stretches for later revisions.
The sample's answer is the last answer in its text (the format's extractor). N ID-samples of a problem
are aggregated by majority vote over their answers, or best-of-N by a score function
(:func:`aggregate`).

The trigger is a string of the prompt format: ``"\\nR:\\n"`` (the revision mark of SCoRe / the
correction formats of :mod:`selfgen.data.reasoning`) for the arithmetic format, a sentence such as
``"\\nWait, let me check my solution again.\\n"`` for a chat model.

The matched control is plain sampling with majority vote at the same number of *generated* tokens per
problem (trigger tokens are inserted, not generated, and are counted apart as ``trigger_tokens``).

Departures: each segment is a fresh ``generate`` call on the text so far (the context is re-encoded,
no KV cache across segments; the per-segment generate uses its KV cache) - the shared multi-round
sampler of ``train/llm`` is the place for cache continuation; with a BPE tokenizer the re-encoded text
can split differently at the segment boundary than the tokens that were generated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from ...data.tasks import extract_answer
from .rewards import canonical_answer, majority_answer
from .rollout import SamplingParams, generate_rollouts


@dataclass
class DeepeningSample:
    """One ID-sample: ``text`` (segments joined by the trigger), its segments, the generated token count."""

    prompt_index: int
    text: str
    segments: list[str] = field(default_factory=list)
    generated_tokens: int = 0
    trigger_tokens: int = 0


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
    prompts: Sequence[str],
    trigger: str,
    *,
    initial_budget: int,
    growth: float = 2.0,
    max_new_tokens: int,
    max_rounds: int | None = None,
    trigger_on_finish: bool = True,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
) -> list[DeepeningSample]:
    """``num_samples`` ID-samples per prompt (grouped by prompt), see the module docstring.

    A sample stops early when a segment ends by eos and ``trigger_on_finish`` is False, or when its
    generated tokens reach ``max_new_tokens``. Segment ``r`` of every sample is drawn with seed
    ``seed + r`` (``tokenizer`` must pad on the left, as :func:`generate_rollouts` requires)."""
    if not trigger:
        raise ValueError("trigger must be a non-empty string (the self-correction trigger appended between segments)")
    budgets = segment_budgets(initial_budget, growth, max_new_tokens, max_rounds)
    trigger_length = len(tokenizer(trigger, add_special_tokens=False).input_ids)
    samples = [DeepeningSample(i // num_samples, "") for i in range(len(prompts) * num_samples)]
    active = list(range(len(samples)))
    for round_index, budget in enumerate(budgets):
        if not active:
            break
        contexts = [prompts[samples[i].prompt_index] + samples[i].text for i in active]
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=budget, batch_size=batch_size)
        rollouts = generate_rollouts(model, tokenizer, contexts, params, seed=seed + round_index)
        still = []
        last_round = round_index == len(budgets) - 1
        for i, rollout in zip(active, rollouts):
            sample = samples[i]
            ended = tokenizer.eos_token_id in rollout.completion_ids
            sample.segments.append(rollout.text)
            sample.text += rollout.text
            sample.generated_tokens += len(rollout.completion_ids)
            if last_round or (ended and not trigger_on_finish):
                continue
            sample.text += trigger
            sample.trigger_tokens += trigger_length
            still.append(i)
        active = still
    return samples


def aggregate(
    texts: Sequence[str],
    method: str = "vote",
    extract: Callable[[str], str | None] = extract_answer,
    scores: Sequence[float] | None = None,
) -> str | None:
    """The answer chosen among one problem's samples: ``vote`` (majority of canonical answers) or
    ``best`` (the answer of the highest ``scores`` entry, the first among ties)."""
    keys = [canonical_answer(extract(text)) for text in texts]
    if method == "vote":
        return majority_answer(keys)
    if method == "best":
        if scores is None or len(scores) != len(texts):
            raise ValueError(f"method='best' needs one score per text, got {None if scores is None else len(scores)} for {len(texts)}")
        return keys[max(range(len(texts)), key=lambda i: scores[i])]
    raise ValueError(f"method must be 'vote' or 'best', got {method!r}")
