"""Rollouts: batched sampling from a causal LM with the KV cache, returning ids, text and logprobs.

``generate_rollouts`` calls ``model.generate`` (KV cache on by default) on left-padded prompt
batches, ``num_samples`` completions per prompt, keeping only the sampled token ids; each completion is
cut at eos / the first stop string and then scored by one forward pass of the policy
(:func:`score_sampled_ids`), which gives per-token logprobs ``log softmax(logits / T)[y_t]`` of the
sampled tokens - the sampling policy at temperature ``T`` without top-p truncation, which is the
``pi_old`` of GRPO (TRL's convention). Greedy decoding (``temperature=0``) reports ``T = 1`` logprobs.
The scoring pass gathers the sampled token's logit and subtracts a chunked log-sum-exp
(:func:`~selfgen.train.llm.objectives.selective_logprobs`), so no per-step full-vocabulary logits are
kept: memory stays that of plain ``generate`` at any vocabulary size.

Stop strings are matched in the completion only, after generation (``generate``'s own
``stop_strings`` also matches text that straddles the prompt, e.g. a prompt ending in a newline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .objectives import pad_sequences, token_logprobs


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    num_samples: int = 1  # completions per prompt
    max_new_tokens: int = 64
    stop_strings: Sequence[str] = ()
    batch_size: int = 128  # prompts x samples per generate call
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.num_samples < 1 or self.max_new_tokens < 1:
            raise ValueError(
                "SamplingParams expects temperature >= 0, 0 < top_p <= 1, num_samples >= 1, max_new_tokens >= 1; "
                f"got temperature={self.temperature}, top_p={self.top_p}, num_samples={self.num_samples}, "
                f"max_new_tokens={self.max_new_tokens}"
            )
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(
                f"greedy decoding (temperature=0) gives one completion per prompt, got num_samples={self.num_samples}"
            )


@dataclass
class Rollout:
    prompt_index: int
    prompt: str
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float] = field(repr=False)
    finished: bool = True  # ended by eos or a stop string, not by max_new_tokens


def cut_at_stop(tokenizer, ids: list[int], stop_strings: Sequence[str]) -> tuple[list[int], str, bool]:
    """Keep ids through the first eos or stop string; the text excludes the eos and the stop string.

    Returns ``(ids, text, finished)``; ``finished`` is False when neither eos nor a stop string occurred."""
    finished = tokenizer.eos_token_id in ids
    if finished:
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.index(stop), stop) for stop in stop_strings if stop in text]
    if not hits:
        return ids, text, finished
    position, stop = min(hits)
    cut = position + len(stop)
    ends = (end for end in range(1, len(ids) + 1) if len(tokenizer.decode(ids[:end], skip_special_tokens=True)) >= cut)
    end = next(ends, len(ids))
    return ids[:end], text[:position], True


@torch.no_grad()
def generate_rollouts(
    model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams, seed: int = 0
) -> list[Rollout]:
    """``params.num_samples`` completions for each prompt, grouped by prompt (prompt 0's samples first)."""
    if tokenizer.padding_side != "left":
        raise ValueError("generate_rollouts needs tokenizer.padding_side='left' (decoder-only batching)")
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    prompts_per_call = max(1, params.batch_size // params.num_samples)
    rollouts = []
    for start in range(0, len(prompts), prompts_per_call):
        chunk = list(prompts[start : start + prompts_per_call])
        rollouts += _generate_chunk(model, tokenizer, chunk, start, params)
    model.train(was_training)
    return rollouts


def _generate_chunk(model, tokenizer, prompts: list[str], offset: int, params: SamplingParams) -> list[Rollout]:
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    greedy = params.temperature == 0
    sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
    sequences = model.generate(
        **encoded,
        do_sample=not greedy,
        **sampling,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=params.num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=params.use_cache,
    )
    sampled = sequences[:, encoded.input_ids.shape[1] :].tolist()
    prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(encoded.input_ids, encoded.attention_mask)]
    rollouts = score_sampled_ids(model, tokenizer, prompts, prompt_ids, sampled, params)
    for rollout in rollouts:
        rollout.prompt_index += offset
    return rollouts


@torch.no_grad()
def score_sampled_ids(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[list[int]],
    sampled_ids: Sequence[list[int]],
    params: SamplingParams,
) -> list[Rollout]:
    """Rollouts from sampled completions: ``sampled_ids[i]`` continues prompt ``i // params.num_samples``;
    each is cut at eos / stop strings (:func:`cut_at_stop`) and its tokens are scored by ``model``
    (``log softmax(logits / T)[y_t]``, ``T = 1`` for greedy) in one forward pass per ``params.batch_size``
    rows, the LM head only on the kept completion tokens. Used by both rollout backends."""
    temperature = params.temperature or 1.0
    device = next(model.parameters()).device
    rollouts = []
    for start in range(0, len(sampled_ids), params.batch_size):
        rows = range(start, min(start + params.batch_size, len(sampled_ids)))
        cut = [cut_at_stop(tokenizer, list(sampled_ids[row]), params.stop_strings) for row in rows]
        owners = [row // params.num_samples for row in rows]
        scores = _score(model, [prompt_ids[owner] for owner in owners], [ids for ids, _, _ in cut], tokenizer.pad_token_id, temperature, device)
        for owner, (ids, text, finished), logprobs in zip(owners, cut, scores):
            rollouts.append(Rollout(owner, prompts[owner], text, list(prompt_ids[owner]), ids, logprobs, finished))
    return rollouts


def _score(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int, temperature: float, device) -> list[list[float]]:
    """Per completion its tokens' logprobs, prompts left-padded and completions right-padded (TRL's layout)."""
    width = max(len(ids) for ids in completions)
    if width == 0:
        return [[] for _ in completions]
    completion_mask = pad_sequences([[1] * len(ids) for ids in completions], 0).to(device)
    input_ids = torch.cat(
        [pad_sequences(prompts, pad_id, left=True), pad_sequences(completions, pad_id)], dim=1
    ).to(device)
    attention_mask = torch.cat([pad_sequences([[1] * len(ids) for ids in prompts], 0, left=True).to(device), completion_mask], dim=1)
    scores = token_logprobs(model, input_ids, attention_mask, temperature, last=width, mask=completion_mask).cpu()
    return [row[: len(ids)].tolist() for row, ids in zip(scores, completions)]


def greedy_completions(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The greedy completion text of each prompt."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    return [rollout.text for rollout in generate_rollouts(model, tokenizer, prompts, params)]
