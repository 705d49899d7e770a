"""Multi-round attempt -> feedback -> revision sampling with KV-cache continuation.

Usage (any transformers causal LM + tokenizer + :class:`~selfgen.train.llm.prompts.PromptFormat`)::

    episodes = sample_revisions(model, tokenizer, fmt, problems, rounds=3, max_new_tokens=(64, 48, 48),
                                feedback=VerifierFeedback(task), verify=lambda p, text: task.verify(p, text))
    episodes[i].texts / .answers / .correct / .new_tokens   # one entry per round; .turns[t].rollout for training
    # in a recipe: self.revisions(problems, rounds=2, feedback=...) (IterativeTrainer; config budgets, timing, vLLM)

An episode of problem ``x`` is ``y1 ~ pi(.|c1)``, ``f1 = feedback(x, y1)``, ``y2 ~ pi(.|c2)`` with
``c2 = c1 + y1 + suffix(f1)``, and so on for ``rounds`` rounds: ``c1`` is the format's prompt and
``suffix(f)`` what :meth:`PromptFormat.revision_suffix` puts after an attempt (the arithmetic format:
``\\nF:Y|N|N<k>`` when there is feedback, then ``\\nR:\\n``; a chat format: the end of the assistant
turn and a user turn). Round ``t`` has its own token budget ``max_new_tokens[t]`` and temperature.

Feedback is a callable ``feedback(problems, attempts) -> [Feedback | None]``: :func:`no_feedback`
(SCoRe's plain "revise" turn), :class:`VerifierFeedback` (an oracle ``F:Y``/``F:N``, or with
``steps=True`` the rule critic's ``F:N<k>``), :class:`CriticFeedback` (a model writes its own
``F:`` line after :meth:`PromptFormat.feedback_request`), or any user function.

**KV-cache continuation** (``kv_cache=True``, the default): each batch of episodes keeps one
transformers cache across its rounds. The next round's input is the previous round's sampled tokens
(already in the cache up to the last one) followed by the feedback suffix's tokens, left-padded as a
block; tokens past an attempt's eos (and the eos itself) and the padding are masked out, and
``generate`` derives position ids from the attention mask, so the continued conversation is the
unpadded conversation. Only the new tokens are encoded. ``kv_cache=False`` re-encodes each round's
whole context from its text (``generate_rollouts``, or the ``generate`` callable, e.g. a vLLM
backend); with a tokenizer whose encoding of the concatenated text equals the concatenation of the
parts' encodings (the bundled character tokenizer) both give the same tokens (tested). Each round's
:class:`~selfgen.train.llm.rollout.Rollout` carries the full context's ids as ``prompt_ids`` and
the round's completion ids and per-token logprobs from a scoring pass, as every rollout does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn

from ...data.problems import Problem
from ...data.reasoning import Feedback, parse_feedback, step_feedback, verifier_feedback
from ...data.tasks import Task
from .objectives import pad_sequences
from .prompts import PromptFormat
from .rollout import Rollout, SamplingParams, generate_rollouts, score_sampled_ids

FeedbackFn = Callable[[Sequence[Problem], Sequence[str]], Sequence[Feedback | None]]
VerifyFn = Callable[[Problem, str], bool]
CACHE_ARGUMENT = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"  # generate()'s name
GenerateFn = Callable[[list[str], SamplingParams, int], list[Rollout]]


def no_feedback(problems: Sequence[Problem], attempts: Sequence[str]) -> list[Feedback | None]:
    """No feedback line: the plain revision request (SCoRe's ``R:`` turn)."""
    return [None] * len(attempts)


@dataclass
class VerifierFeedback:
    """The task's verifier as feedback: ``F:Y``/``F:N`` (oracle verdict), with ``steps`` the rule
    critic's first wrong step ``F:N<k>`` (:func:`~selfgen.data.reasoning.step_feedback`)."""

    task: Task
    fmt: PromptFormat = field(default_factory=PromptFormat)
    steps: bool = False

    def __call__(self, problems: Sequence[Problem], attempts: Sequence[str]) -> list[Feedback]:
        write = step_feedback if self.steps else verifier_feedback
        return [write(self.task, p, a, self.fmt.answer) for p, a in zip(problems, attempts, strict=True)]


@dataclass
class CriticFeedback:
    """A critic model's own feedback: greedy continuation of ``fmt.feedback_request(question, attempt)``
    read by :func:`~selfgen.data.reasoning.parse_feedback` (``None``, i.e. a plain revision request,
    when it writes none)."""

    model: nn.Module
    tokenizer: object
    fmt: PromptFormat = field(default_factory=PromptFormat)
    max_new_tokens: int = 8
    batch_size: int = 128

    def __call__(self, problems: Sequence[Problem], attempts: Sequence[str]) -> list[Feedback | None]:
        prompts = [self.fmt.feedback_request(p.question, a) for p, a in zip(problems, attempts, strict=True)]
        params = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        return [parse_feedback(r.text) for r in generate_rollouts(self.model, self.tokenizer, prompts, params)]


@dataclass
class Turn:
    """One round of an episode: the rollout (context, completion, logprobs), the answer read from it,
    the verifier's verdict (``None`` without ``verify``) and the feedback shown after it (``None`` for
    the last round or no feedback)."""

    rollout: Rollout
    answer: str | None
    correct: bool | None
    feedback: Feedback | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.rollout.completion_ids)

    @property
    def context_tokens(self) -> int:
        return len(self.rollout.prompt_ids)


@dataclass
class Episode:
    problem_index: int
    problem: Problem
    turns: list[Turn]

    @property
    def texts(self) -> list[str]:
        return [turn.rollout.text for turn in self.turns]

    @property
    def answers(self) -> list[str | None]:
        return [turn.answer for turn in self.turns]

    @property
    def correct(self) -> list[bool | None]:
        return [turn.correct for turn in self.turns]

    @property
    def new_tokens(self) -> list[int]:
        return [turn.new_tokens for turn in self.turns]


def per_round(value, rounds: int, name: str) -> list:
    """``value`` for every round: a scalar repeated, or a sequence of exactly ``rounds`` values."""
    if isinstance(value, (int, float)):
        return [value] * rounds
    values = list(value)
    if len(values) != rounds:
        raise ValueError(f"{name} must be one value or one per round ({rounds}), got {len(values)}: {values}")
    return values


class CachedConversations:
    """A batch of conversations continued through one KV cache (see the module docstring).

    ``input_ids``/``attention_mask`` hold every token so far (masked where padding or past an eos);
    ``cache`` holds the keys/values of all but the last token after a :meth:`generate`, and
    ``last_output`` that call's ``generate`` output (with ``output_logits=True``: the raw logits)."""

    def __init__(self, model: nn.Module, tokenizer, prompt_ids: Sequence[list[int]]) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.input_ids = pad_sequences(list(prompt_ids), tokenizer.pad_token_id, left=True).to(self.device)
        self.attention_mask = pad_sequences([[1] * len(ids) for ids in prompt_ids], 0, left=True).to(self.device)
        self.cache = None

    def append(self, suffixes: Sequence[list[int]]) -> None:
        """Append each row's ``suffixes[i]`` (the block left-padded, the padding masked)."""
        ids = pad_sequences(list(suffixes), self.tokenizer.pad_token_id, left=True).to(self.device)
        mask = pad_sequences([[1] * len(s) for s in suffixes], 0, left=True).to(self.device)
        self.input_ids = torch.cat([self.input_ids, ids], dim=1)
        self.attention_mask = torch.cat([self.attention_mask, mask], dim=1)

    @torch.no_grad()
    def generate(self, params: SamplingParams, **generate_kwargs) -> list[list[int]]:
        """Sample up to ``params.max_new_tokens`` per row; keeps the tokens before each row's eos in the
        conversation (mask 1) and returns every row's sampled ids (eos and what follows included)."""
        greedy = params.temperature == 0
        sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        out = self.model.generate(
            input_ids=self.input_ids, attention_mask=self.attention_mask, **{CACHE_ARGUMENT: self.cache},
            do_sample=not greedy, **sampling, max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
            use_cache=True, return_dict_in_generate=True, **generate_kwargs,
        )
        new = out.sequences[:, self.input_ids.shape[1] :]
        eos = self.tokenizer.eos_token_id
        kept = torch.cumsum((new == eos).long(), dim=1) == 0  # strictly before the first eos
        cache = getattr(out, "cache", None)
        self.input_ids, self.cache = out.sequences, out.past_key_values if cache is None else cache
        self.attention_mask = torch.cat([self.attention_mask, kept.long()], dim=1)
        self.last_output = out
        return new.tolist()


def _context_ids(ids: list[int], eos_id: int) -> list[int]:
    """A completion's ids as they continue the conversation: without the trailing eos."""
    return ids[:-1] if ids and ids[-1] == eos_id else ids


@torch.no_grad()
def sample_revisions(
    model: nn.Module,
    tokenizer,
    fmt: PromptFormat,
    problems: Sequence[Problem],
    *,
    rounds: int = 2,
    max_new_tokens: int | Sequence[int] = 64,
    temperature: float | Sequence[float] = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    feedback: FeedbackFn = no_feedback,
    verify: VerifyFn | None = None,
    first_attempts: Sequence[str] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    kv_cache: bool = True,
    generate: GenerateFn | None = None,
) -> list[Episode]:
    """``num_samples`` episodes of ``rounds`` rounds per problem (problem 0's first), see the module docstring.

    ``first_attempts`` (one per problem x sample) replaces round 1's sampling by given attempts (e.g.
    samples drawn before); their rollouts have no logprobs. ``generate`` (``(prompts, params, seed)
    -> rollouts``, e.g. ``IterativeTrainer.generate`` on a vLLM backend) implies ``kv_cache=False``.
    """
    if rounds < 1 or num_samples < 1 or not problems:
        raise ValueError(f"sample_revisions needs rounds >= 1, num_samples >= 1 and problems; got {rounds}, {num_samples}, {len(problems)}")
    if tokenizer.padding_side != "left":
        raise ValueError("sample_revisions needs tokenizer.padding_side='left' (decoder-only batching)")
    budgets = per_round(max_new_tokens, rounds, "max_new_tokens")
    temperatures = per_round(temperature, rounds, "temperature")
    rows = [(i, p) for i, p in enumerate(problems) for _ in range(num_samples)]
    if first_attempts is not None and len(first_attempts) != len(rows):
        raise ValueError(f"first_attempts must have one attempt per problem x sample ({len(rows)}), got {len(first_attempts)}")
    params = [
        SamplingParams(temperature=t, top_p=top_p, max_new_tokens=b, batch_size=batch_size)
        for t, b in zip(temperatures, budgets)
    ]
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    episodes = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        given = None if first_attempts is None else list(first_attempts[start : start + batch_size])
        run = _run_cached if kv_cache and generate is None else _run_reencoded
        turns = run(model, tokenizer, fmt, [p for _, p in chunk], params, feedback, verify, given, generate, seed)
        for (i, p), row_turns in zip(chunk, turns):
            for turn in row_turns:
                turn.rollout.prompt_index = i  # the problem's index, as generate_rollouts' prompt_index
            episodes.append(Episode(i, p, row_turns))
    model.train(was_training)
    return episodes


def _judge(fmt: PromptFormat, verify: VerifyFn | None, problems, rollouts) -> list[Turn]:
    return [
        Turn(r, fmt.answer(r.text), None if verify is None else bool(verify(p, r.text)))
        for p, r in zip(problems, rollouts)
    ]


def _given_rollouts(tokenizer, fmt: PromptFormat, problems, attempts: list[str]) -> list[Rollout]:
    rollouts = []
    for index, (problem, attempt) in enumerate(zip(problems, attempts)):
        prompt = fmt.prompt(problem.question)
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        rollouts.append(Rollout(index, prompt, attempt, ids, tokenizer(attempt, add_special_tokens=False).input_ids, []))
    return rollouts


def _give_feedback(turns: list[Turn], problems, feedback: FeedbackFn) -> None:
    notes = list(feedback(problems, [turn.rollout.text for turn in turns]))
    if len(notes) != len(turns):
        raise ValueError(f"feedback returned {len(notes)} items for {len(turns)} attempts")
    for turn, note in zip(turns, notes):
        turn.feedback = note


def _run_cached(model, tokenizer, fmt, problems, params, feedback, verify, given, generate, seed) -> list[list[Turn]]:
    eos = tokenizer.eos_token_id
    if given is not None:
        first = _given_rollouts(tokenizer, fmt, problems, given)
        conversation = CachedConversations(model, tokenizer, [r.prompt_ids + r.completion_ids for r in first])
        history, contexts, context_ids = [_judge(fmt, verify, problems, first)], None, None
    else:
        contexts = [fmt.prompt(p.question) for p in problems]
        context_ids = [tokenizer(c, add_special_tokens=False).input_ids for c in contexts]
        conversation, history = CachedConversations(model, tokenizer, context_ids), []
    for round_params in params[len(history) :]:
        if history:
            last = history[-1]
            _give_feedback(last, problems, feedback)
            suffixes = [fmt.revision_suffix(p.question, t.rollout.text, t.feedback) for p, t in zip(problems, last)]
            suffix_ids = [tokenizer(s, add_special_tokens=False).input_ids for s in suffixes]
            conversation.append(suffix_ids)
            contexts = [t.rollout.prompt + t.rollout.text + s for t, s in zip(last, suffixes)]
            context_ids = [
                t.rollout.prompt_ids + _context_ids(t.rollout.completion_ids, eos) + s for t, s in zip(last, suffix_ids)
            ]
        sampled = conversation.generate(round_params)
        rollouts = score_sampled_ids(model, tokenizer, contexts, context_ids, sampled, round_params)
        history.append(_judge(fmt, verify, problems, rollouts))
    return [list(row) for row in zip(*history)]


def _run_reencoded(model, tokenizer, fmt, problems, params, feedback, verify, given, generate, seed) -> list[list[Turn]]:
    history = [] if given is None else [_judge(fmt, verify, problems, _given_rollouts(tokenizer, fmt, problems, given))]
    contexts = [fmt.prompt(p.question) for p in problems]
    for index, round_params in enumerate(params[len(history) :], start=len(history)):
        if history:
            last = history[-1]
            _give_feedback(last, problems, feedback)
            contexts = [
                t.rollout.prompt + t.rollout.text + fmt.revision_suffix(p.question, t.rollout.text, t.feedback)
                for p, t in zip(problems, last)
            ]
        if generate is not None:
            rollouts = generate(contexts, round_params, seed + index)
        else:
            rollouts = generate_rollouts(model, tokenizer, contexts, round_params, seed=seed + index)
        history.append(_judge(fmt, verify, problems, rollouts))
    return [list(row) for row in zip(*history)]
