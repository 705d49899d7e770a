"""The three optimisers every recipe reduces to, as :class:`~selfgen.train.trainer.Objective` s.

* :class:`SFTObjective` - rejection-sampling fine-tuning: mean negative log-likelihood of the
  completion tokens only, ``L = -(1/|C|) sum_{t in C} log pi(y_t | x, y_<t)`` (optionally a
  per-token weighted mean, :attr:`TextPair.weighted_spans`).
* :class:`DPOObjective` - DPO's sigmoid loss (Rafailov et al. 2023, eq. 7), against a frozen reference,
  ``L = -log sigmoid(beta [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])``
  with sequence log-probabilities summed over completion tokens (TRL's ``loss_type="sigmoid"``).
* :class:`GRPOObjective` - GRPO-family policy gradient (Shao et al. 2024): per token
  ``l_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A) + beta k3_t`` with the ratio
  ``r_t = pi(y_t)/pi_old(y_t)``, group-normalised advantages ``A = (R - mean_group R)/(std_group R + 1e-4)``
  (:func:`group_advantages`) and the k3 KL estimator ``k3_t = exp(q_t) - q_t - 1``,
  ``q_t = log pi_ref(y_t) - log pi(y_t)``; reduced by ``loss_type``: ``"grpo"`` (mean over each
  sequence's tokens, then over sequences), ``"bnpo"`` (mean over all tokens of the batch),
  ``"dr_grpo"`` (sum over tokens / (batch size x max_completion_length)) or ``"dapo"`` (sum over tokens /
  the token count of the whole batch across processes: a token-level mean over the global batch), as
  TRL's ``_compute_loss`` does. Departure for ``"dapo"``: TRL divides by the token count of the whole
  generation batch, spanning gradient-accumulation steps; ours counts one optimiser micro-batch (across
  processes), which is the same number when ``gradient_accumulation_steps == 1``.

Log-probabilities are ``z_y - logsumexp(z)`` with the sampled token's logit ``z_y`` gathered and the LM
head run in chunks on the scored positions only (:func:`selective_logprobs`): no full-vocabulary
log-softmax exists at any point, in rollouts or in training.

Batches are built by the collators below; every sequence is ``prompt + completion`` with a
``completion_mask`` marking the tokens that are scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..trainer import Objective

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LOGIT_CHUNK_ELEMENTS = 2**24  # float32 logits materialised at once by selective_logprobs (64 MB)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module, object] | None:
    """The causal LM's backbone (its output is the final, normed hidden state), its LM head and its
    config, looked up through accelerate/DDP/compile wrappers and peft's ``PeftModel``; ``None`` for a
    model that is not a transformers causal LM (no ``get_decoder`` / ``get_output_embeddings``)."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if not (hasattr(inner, "get_decoder") and hasattr(inner, "get_output_embeddings")):
        return None
    head = inner.get_output_embeddings()
    return None if head is None else (inner.get_decoder(), head, inner.config)


def selective_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module | None = None, temperature: float = 1.0, config=None
) -> torch.Tensor:
    """``log softmax(z / T)[y] = z_y / T - logsumexp(z / T)`` with ``z = head(h)`` for rows ``hidden`` (N, H)
    and ``targets`` (N,); without ``head``, ``hidden`` already holds the logits.

    Rows go through the LM head in chunks sized so that one chunk of float32 logits holds at most
    :data:`LOGIT_CHUNK_ELEMENTS` numbers: the full-vocabulary log-softmax is never built (the sampled
    token's logit is gathered, then the chunk's log-sum-exp subtracted). ``config`` (the model's) supplies
    ``logit_scale`` / ``final_logit_softcapping`` where a family uses them (Cohere, Gemma 2)."""
    scale = getattr(config, "logit_scale", None) or 1.0
    softcap = getattr(config, "final_logit_softcapping", None)
    vocab = hidden.shape[-1] if head is None else head.weight.shape[0]
    rows = max(1, LOGIT_CHUNK_ELEMENTS // vocab)
    values = []
    for chunk, target in zip(hidden.split(rows), targets.split(rows)):
        logits = (chunk if head is None else head(chunk)).float() * scale
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        logits = logits / temperature
        values.append(logits.gather(-1, target[:, None]).squeeze(-1) - logits.logsumexp(-1))
    return torch.cat(values) if values else hidden.new_zeros(0, dtype=torch.float32)


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    last: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log pi(x_t | x_<t)`` for t = 1..L-1 under ``softmax(logits / temperature)``: shape ``(B, L-1)``;
    with ``last`` only the last ``last`` tokens are scored, with ``mask`` (the output's shape) only its
    nonzero entries (the others are 0). The forward runs through ``model`` itself (so DDP and peft
    wrappers see it) with ``logits_to_keep=1``; the backbone's hidden states are taken from a forward
    hook and the LM head runs only on the scored positions (:func:`selective_logprobs`). A model that is
    not a transformers causal LM returns its logits, which are scored the same way."""
    found = decoder_and_head(model)
    positions = position_ids_from_mask(attention_mask)
    if found is None:
        keep = input_ids.shape[1] if last is None else last + 1
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, logits_to_keep=keep).logits
        head, config = None, None
    else:
        decoder, head, config = found
        captured = []
        hook = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, logits_to_keep=1, use_cache=False)
        finally:
            hook.remove()
        hidden = captured[-1]
    hidden, targets = hidden[:, :-1], input_ids[:, 1:]
    if last is not None:
        hidden, targets = hidden[:, hidden.shape[1] - last :], targets[:, targets.shape[1] - last :]
    select = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    values = selective_logprobs(hidden[select], targets[select], head, temperature, config)
    return torch.zeros(targets.shape, dtype=values.dtype, device=values.device).masked_scatter(select, values)


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over the processes of a ``torch.distributed`` run (itself without one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """``(R - mean_group R) / (std_group R + 1e-4)`` over consecutive groups of ``group_size`` samples
    (unbiased std, as TRL's ``scale_rewards="group"``); without ``scale`` only the mean is removed."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of group_size={group_size}")
    grouped = rewards.view(-1, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped)
        advantages = advantages / (std + 1e-4)
    return advantages.reshape(-1)


def advantage_alignment(label_free: torch.Tensor, verifier: torch.Tensor, group_size: int) -> float:
    """``sum A_lf A_v / sum A_v^2`` over all rollouts, ``A`` the :func:`group_advantages` of a label-free and of
    the verifier's rewards (flat, consecutive groups of ``group_size``): the share of the verifier's GRPO
    signal the label-free update keeps where the rollouts' gradients are near-orthogonal (1 = GRPO's signal,
    0 = none, < 0 = rewards wrong answers; NaN when no group has mixed verifier rewards)."""
    a_lf, a_v = group_advantages(label_free, group_size), group_advantages(verifier, group_size)
    norm = float((a_v * a_v).sum()) or float("nan")
    return float((a_lf * a_v).sum()) / norm


# ----------------------------------------------------------------- batches


@dataclass
class TextPair:
    """A prompt and one completion (already ending with the tokenizer's eos where it should).

    ``weighted_spans``: optional ``(start, end, weight)`` character spans of the completion whose tokens
    get that loss weight in :class:`SFTObjective` (every other token weighs 1)."""

    prompt: str
    completion: str
    weighted_spans: tuple[tuple[int, int, float], ...] = ()


def split_continuation(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Token ids of ``prompt`` and of its continuation ``completion``, from ONE tokenisation of
    ``prompt + completion`` split at the prompt's last character, and each completion token's character
    span in ``completion``.

    Tokenised on its own, a completion can start differently from what the model generates after the
    prompt (SentencePiece/Metaspace tokenizers prepend ``▁``, byte-level BPE merges a leading space);
    split from the joint tokenisation, the targets are the tokens a rollout produces. A token that
    straddles the boundary belongs to the completion. Slow tokenizers (no offset mapping): the joint ids
    are split after the prompt's own ids when those are a prefix of them, else the two texts are
    tokenised separately (the only choice left; spans are then unknown and returned empty).
    """
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(prompt + completion, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded.input_ids, encoded.offset_mapping
        cut = next((i for i, (start, end) in enumerate(offsets) if end > len(prompt) and end > start), len(ids))
        spans = [(max(start - len(prompt), 0), end - len(prompt)) for start, end in offsets[cut:]]
        return ids[:cut], ids[cut:], spans
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = tokenizer(prompt + completion, add_special_tokens=False).input_ids
    if ids[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, ids[len(prompt_ids) :], []
    return prompt_ids, tokenizer(completion, add_special_tokens=False).input_ids, []


def encode_pair(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt and completion + eos (:func:`split_continuation`), the prompt truncated from
    the left to fit ``max_length``."""
    prompt_ids, completion_ids, _ = split_continuation(tokenizer, prompt, completion)
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    overflow = len(prompt_ids) + len(completion_ids) - max_length
    if overflow > 0:
        prompt_ids = prompt_ids[overflow:]
    return prompt_ids, completion_ids[:max_length]


def pad_sequences(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padding = [[value] * (width - len(row)) for row in rows]
    padded = [pad + list(row) if left else list(row) + pad for pad, row in zip(padding, rows)]
    return torch.tensor(padded, dtype=torch.long)


@dataclass
class PackedSequence:
    """One training row of one or more consecutive examples (:func:`pack_pairs`): their token ids one after
    another (each ends with eos) and the mask of the tokens scored (each example's completion tokens)."""

    input_ids: list[int]
    completion_mask: list[int]

    @classmethod
    def of(cls, prompt: list[int], completion: list[int]) -> PackedSequence:
        """The row of one ``(prompt, completion)`` example: only the completion is scored."""
        return cls(prompt + completion, [0] * len(prompt) + [1] * len(completion))


def sequence_batch(encoded: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask`` of prompt+completion rows."""
    return packed_batch([PackedSequence.of(prompt, completion) for prompt, completion in encoded], pad_token_id)


def pack_pairs(encoded: Sequence[tuple[list[int], list[int]]], pack_length: int) -> list[PackedSequence]:
    """Standard packing (HF ``run_clm``'s ``group_texts``, nanoGPT): consecutive ``(prompt, completion)``
    rows of :func:`encode_pair` laid end to end in sequences of at most ``pack_length`` tokens. An example
    that does not fit starts the next sequence (none is cut; ``group_texts`` cuts at the block edge), and
    attention is plain causal across the examples of a row (no document mask), as in both references."""
    if pack_length < 1:
        raise ValueError(f"pack_length must be >= 1, got {pack_length}")
    packed: list[PackedSequence] = []
    for prompt, completion in encoded:
        size = len(prompt) + len(completion)
        if size > pack_length:
            raise ValueError(f"an example of {size} tokens does not fit pack_length={pack_length}")
        example = PackedSequence.of(prompt, completion)
        if not packed or len(packed[-1].input_ids) + size > pack_length:
            packed.append(PackedSequence([], []))
        packed[-1].input_ids += example.input_ids
        packed[-1].completion_mask += example.completion_mask
    return packed


def packed_batch(rows: Sequence[PackedSequence], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask`` of :class:`PackedSequence` rows;
    positions run 0..len-1 along each row, so the later examples of a packed row are trained at later positions."""
    return {
        "input_ids": pad_sequences([row.input_ids for row in rows], pad_token_id),
        "attention_mask": pad_sequences([[1] * len(row.input_ids) for row in rows], 0),
        "completion_mask": pad_sequences([row.completion_mask for row in rows], 0),
    }


def completion_token_weights(tokenizer, pair: TextPair, num_tokens: int) -> list[float]:
    """Per completion token (``num_tokens`` of them, eos included) the weight of the ``weighted_spans``
    it overlaps (the last such span), else 1; token spans come from :func:`split_continuation`
    (a fast tokenizer's offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("weighted_spans need a fast tokenizer (offset mapping); got a slow one")
    _, _, spans = split_continuation(tokenizer, pair.prompt, pair.completion)
    weights = []
    for start, end in spans:
        weight = 1.0
        for span_start, span_end, span_weight in pair.weighted_spans:
            if start < span_end and span_start < end:
                weight = span_weight
        weights.append(weight)
    return (weights + [1.0])[:num_tokens]


class SFTCollator:
    """Batches :class:`TextPair` s for :class:`SFTObjective`; ``completion_only=False`` scores every token.
    When a pair has ``weighted_spans`` the batch also carries ``loss_weights`` (aligned with ``input_ids``)."""

    def __init__(self, tokenizer, max_length: int = 256, completion_only: bool = True) -> None:
        self.tokenizer, self.max_length, self.completion_only = tokenizer, max_length, completion_only

    def __call__(self, pairs: Sequence[TextPair]) -> dict[str, torch.Tensor]:
        encoded = [encode_pair(self.tokenizer, p.prompt, p.completion, self.max_length) for p in pairs]
        batch = sequence_batch(encoded, self.tokenizer.pad_token_id)
        if not self.completion_only:
            batch["completion_mask"] = batch["attention_mask"].clone()
        if any(p.weighted_spans for p in pairs):
            rows = [
                [1.0] * len(prompt) + completion_token_weights(self.tokenizer, pair, len(completion))
                for pair, (prompt, completion) in zip(pairs, encoded)
            ]
            width = batch["input_ids"].shape[1]
            batch["loss_weights"] = torch.tensor([row + [0.0] * (width - len(row)) for row in rows])
        return batch


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


class DPOCollator:
    """Batches :class:`PreferencePair` s as TRL does: rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``."""

    def __init__(self, tokenizer, max_length: int = 256) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, pairs: Sequence[PreferencePair]) -> dict[str, torch.Tensor]:
        rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
        encoded = [encode_pair(self.tokenizer, prompt, completion, self.max_length) for prompt, completion in rows]
        return sequence_batch(encoded, self.tokenizer.pad_token_id)


@dataclass
class PolicySample:
    """One rollout for policy-gradient training: token ids, its advantage and the sampler's logprobs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None = None
    kl_weight: float = 1.0
    extras: dict[str, float] = field(default_factory=dict)  # per-sample values a recipe's objective reads


class GRPOCollator:
    """Batches :class:`PolicySample` s in TRL's layout: left-padded prompts, right-padded completions;
    each key of the samples' ``extras`` becomes a float tensor of the batch."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: Sequence[PolicySample]) -> dict[str, torch.Tensor]:
        prompts = [s.prompt_ids for s in samples]
        completions = [s.completion_ids for s in samples]
        batch = {
            "prompt_ids": pad_sequences(prompts, self.pad_token_id, left=True),
            "prompt_mask": pad_sequences([[1] * len(p) for p in prompts], 0, left=True),
            "completion_ids": pad_sequences(completions, self.pad_token_id),
            "completion_mask": pad_sequences([[1] * len(c) for c in completions], 0),
            "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
            "kl_weight": torch.tensor([s.kl_weight for s in samples], dtype=torch.float32),
        }
        for key in samples[0].extras:
            batch[key] = torch.tensor([s.extras[key] for s in samples], dtype=torch.float32)
        if all(s.old_logprobs is not None for s in samples):
            width = batch["completion_ids"].shape[1]
            batch["old_per_token_logps"] = torch.tensor(
                [s.old_logprobs + [0.0] * (width - len(s.old_logprobs)) for s in samples], dtype=torch.float32
            )
        return batch


# ----------------------------------------------------------------- objectives


def completion_token_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs of a :func:`sequence_batch` and the matching (shifted) completion mask."""
    mask = batch["completion_mask"][:, 1:]
    logprobs = token_logprobs(model, batch["input_ids"], batch["attention_mask"], mask=mask)
    return logprobs, mask.to(logprobs.dtype)


class SFTObjective(Objective):
    """Mean NLL over the completion tokens of a batch (rejection-sampling fine-tuning); with the
    collator's ``loss_weights`` the weighted mean ``sum_t w_t (-log pi(y_t)) / sum_t w_t``."""

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs, mask = completion_token_logprobs(model, batch)
        tokens = float(mask.sum())
        if "loss_weights" in batch:
            mask = mask * batch["loss_weights"][:, 1:].to(logprobs.dtype)
        loss = -(logprobs * mask).sum() / mask.sum().clamp(min=1.0)
        return loss, {"tokens": tokens}


class DPOObjective(Objective):
    """DPO sigmoid loss against ``reference`` (frozen); see the module docstring for the equation."""

    def __init__(self, reference: nn.Module, beta: float = 0.1) -> None:
        self.reference, self.beta = reference, beta

    def setup(self, accelerator) -> None:
        self.reference.to(accelerator.device)

    def sequence_logprobs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logprobs, mask = completion_token_logprobs(model, batch)
        return (logprobs * mask).sum(-1)

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = self.sequence_logprobs(model, batch).chunk(2)
        with torch.no_grad():
            ref_chosen, ref_rejected = self.sequence_logprobs(self.reference, batch).chunk(2)
        chosen_reward = self.beta * (chosen - ref_chosen)
        rejected_reward = self.beta * (rejected - ref_rejected)
        margin = chosen_reward - rejected_reward
        loss = -F.logsigmoid(margin).mean()
        logs = {"reward_margin": float(margin.detach().mean()), "reward_accuracy": float((margin > 0).float().mean())}
        return loss, logs


class GRPOObjective(Objective):
    """Clipped policy gradient with a k3 KL penalty to ``reference``; see the module docstring.

    ``batch["kl_weight"]`` (per sequence, default 1) multiplies the KL term, which is how SCoRe puts a
    strong KL constraint on its first turn only. ``kl_importance_correction`` multiplies the k3 term by
    the ratio ``r_t`` (samples come from ``pi_old``, not ``pi``; TRL's ``use_bias_correction_kl``).
    Only the tokens of ``batch["score_mask"]`` (default: the ``completion_mask``) are scored; the others'
    logprobs are 0. ``old_per_token_logps`` defaults to the detached
    current logprobs (one update per rollout: ratio 1, as in TRL with ``num_iterations=1``).
    """

    def __init__(
        self,
        reference: nn.Module | None = None,
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        loss_type: str = "grpo",
        max_completion_length: int | None = None,
        temperature: float = 1.0,
        kl_importance_correction: bool = False,
    ) -> None:
        if loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {GRPO_LOSS_TYPES}, got {loss_type!r}")
        if loss_type == "dr_grpo" and not max_completion_length:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length")
        if beta and reference is None:
            raise ValueError(f"beta={beta} needs a reference model (or beta=0)")
        self.reference, self.beta, self.loss_type = reference, beta, loss_type
        self.epsilon_low, self.epsilon_high = epsilon_low, epsilon_high
        self.max_completion_length, self.temperature = max_completion_length, temperature
        self.kl_importance_correction = kl_importance_correction

    def setup(self, accelerator) -> None:
        if self.reference is not None:
            self.reference.to(accelerator.device)

    def completion_logprobs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        return token_logprobs(
            model, input_ids, attention_mask, self.temperature, last=batch["completion_ids"].shape[1],
            mask=batch.get("score_mask", batch["completion_mask"]),
        )

    def reduce(self, per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "grpo":
            return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        if self.loss_type == "bnpo":
            return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        if self.loss_type == "dapo":
            return (per_token_loss * mask).sum() / mean_over_processes(mask.sum().detach()).clamp(min=1.0)
        return (per_token_loss * mask).sum() / (per_token_loss.shape[0] * self.max_completion_length)

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy_loss(self.completion_logprobs(model, batch), batch)

    @staticmethod
    def rows_nll(logprobs: torch.Tensor, batch: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """``sum_i r_i NLL_i / sum_i r_i``, ``NLL_i`` row ``i``'s mean negative log-likelihood per completion
        token: the SFT term that subclasses add over the rows ``rows`` marks (ExPO's explanations, SPC's
        replayed warm-up examples). ``rows`` must mark at least one row."""
        mask = batch["completion_mask"].to(logprobs.dtype)
        nll = -(logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return (nll * rows).sum() / rows.sum()

    def policy_loss(
        self, logprobs: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped surrogate + KL loss from the policy's completion ``logprobs`` (one forward pass
        that subclasses adding their own terms, e.g. LaSeR's MSE or ExPO's SFT, can share)."""
        mask = batch["completion_mask"].to(logprobs.dtype)
        old = batch.get("old_per_token_logps")
        old = logprobs.detach() if old is None else old
        ratio = torch.exp(logprobs - old)
        advantages = batch["advantages"].unsqueeze(1)
        clipped = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        per_token_loss = -torch.min(ratio * advantages, clipped * advantages)
        logs = {"clip_fraction": float(((ratio != clipped).float() * mask).sum() / mask.sum().clamp(min=1))}
        if self.beta:
            with torch.no_grad():
                ref = batch.get("ref_per_token_logps")
                ref = self.completion_logprobs(self.reference, batch) if ref is None else ref
            log_ratio = ref - logprobs
            kl = torch.exp(log_ratio) - log_ratio - 1
            if self.kl_importance_correction:
                kl = kl * ratio
            weight = batch.get("kl_weight", torch.ones_like(advantages[:, 0])).unsqueeze(1)
            per_token_loss = per_token_loss + self.beta * weight * kl
            logs["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
        return self.reduce(per_token_loss, mask), logs
