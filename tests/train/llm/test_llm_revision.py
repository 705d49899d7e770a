"""The multi-round attempt -> feedback -> revision sampler: the KV-cache continuation equals a
from-scratch re-encode, feedback lands in the context, budgets are per round, and the per-round
records (texts, answers, verdicts, token counts) are those of the conversation."""

import pytest
import torch

from selfgen.data.reasoning import Feedback
from selfgen.data.tasks import ArithmeticTask
from selfgen.train.llm.objectives import token_logprobs
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.revision import CachedConversations, VerifierFeedback, no_feedback, sample_revisions
from selfgen.train.llm.rollout import SamplingParams

TASK = ArithmeticTask("add", 1, 3)
FMT = PromptFormat()


def verify(problem, text):
    return TASK.verify(problem, text, FMT.answer)


def test_cached_continuation_logits_equal_a_from_scratch_forward(policy):
    model, tokenizer = policy
    prompts = [tokenizer(t, add_special_tokens=False).input_ids for t in ["Q:1+2\n", "Q:345+78\n", "Q:9*7\n"]]
    conversation = CachedConversations(model, tokenizer, prompts)
    first = conversation.generate(SamplingParams(temperature=1.0, max_new_tokens=9))
    suffixes = [tokenizer(s, add_special_tokens=False).input_ids for s in ["\nF:Y\nR:\n", "\nR:\n", "\nF:N12\nR:\n"]]
    conversation.append(suffixes)
    conversation.generate(SamplingParams(temperature=0.0, max_new_tokens=1), output_logits=True)
    cached = conversation.last_output.logits[0]  # the first token of round 2, from the cache
    eos = tokenizer.eos_token_id
    for row, (prompt, sampled, suffix) in enumerate(zip(prompts, first, suffixes)):
        kept = sampled[: sampled.index(eos)] if eos in sampled else sampled
        ids = torch.tensor([prompt + kept + suffix])
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, -1]
        torch.testing.assert_close(cached[row], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feedback", [no_feedback, VerifierFeedback(TASK, steps=True)])
def test_kv_cache_rounds_equal_reencoded_rounds(policy, feedback):
    model, tokenizer = policy
    problems = TASK.sample(5, 3, "eval")
    kwargs = dict(rounds=3, max_new_tokens=(12, 6, 9), temperature=0.0, feedback=feedback, verify=verify, batch_size=4)
    cached = sample_revisions(model, tokenizer, FMT, problems, kv_cache=True, **kwargs)
    fresh = sample_revisions(model, tokenizer, FMT, problems, kv_cache=False, **kwargs)
    assert [e.problem_index for e in cached] == [0, 1, 2, 3, 4]
    for a, b in zip(cached, fresh):
        for ta, tb in zip(a.turns, b.turns, strict=True):
            assert ta.rollout.prompt == tb.rollout.prompt and ta.rollout.prompt_ids == tb.rollout.prompt_ids
            assert ta.rollout.completion_ids == tb.rollout.completion_ids
            torch.testing.assert_close(torch.tensor(ta.rollout.logprobs), torch.tensor(tb.rollout.logprobs), rtol=1e-4, atol=1e-4)
        assert a.new_tokens[0] <= 12 and a.new_tokens[1] <= 6 and a.new_tokens[2] <= 9  # per-round budgets


def test_context_carries_attempt_and_feedback_and_records_are_per_round(policy):
    model, tokenizer = policy
    problems = TASK.sample(3, 1, "eval")
    wrong_then = lambda ps, attempts: [Feedback(False, 2)] * len(attempts)  # noqa: E731 - a user feedback callable
    episodes = sample_revisions(
        model, tokenizer, FMT, problems, rounds=2, max_new_tokens=8, temperature=1.0, num_samples=2,
        feedback=wrong_then, verify=verify, seed=4,
    )
    assert [e.problem_index for e in episodes] == [0, 0, 1, 1, 2, 2]
    for episode in episodes:
        first, second = episode.turns
        assert second.rollout.prompt == FMT.prompt(episode.problem.question) + first.rollout.text + "\nF:N2\nR:\n"
        assert first.feedback == Feedback(False, 2) and second.feedback is None
        eos = tokenizer.eos_token_id
        kept = [i for i in first.rollout.completion_ids if i != eos]  # the attempt without its eos
        suffix = tokenizer("\nF:N2\nR:\n", add_special_tokens=False).input_ids
        assert second.rollout.prompt_ids == first.rollout.prompt_ids + kept + suffix
        assert second.context_tokens == len(second.rollout.prompt_ids) and first.new_tokens == len(first.rollout.completion_ids)
        assert episode.answers == [FMT.answer(t) for t in episode.texts]
        assert episode.correct == [verify(episode.problem, t) for t in episode.texts]
        ids = torch.tensor([second.rollout.prompt_ids + second.rollout.completion_ids])
        with torch.no_grad():
            expected = token_logprobs(model, ids, torch.ones_like(ids), temperature=1.0)[0, second.context_tokens - 1 :]
        torch.testing.assert_close(torch.tensor(second.rollout.logprobs), expected, rtol=1e-4, atol=1e-4)


def test_given_first_attempts_are_revised_and_bad_arguments_are_named(policy):
    model, tokenizer = policy
    problems = TASK.sample(2, 2, "eval")
    attempts = ["S:1+1=2\nA:2", "S:oops\nA:7"]
    episodes = sample_revisions(model, tokenizer, FMT, problems, rounds=2, temperature=0.0, first_attempts=attempts)
    assert [e.texts[0] for e in episodes] == attempts
    assert episodes[1].turns[1].rollout.prompt == FMT.prompt(problems[1].question) + attempts[1] + "\nR:\n"
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_revisions(model, tokenizer, FMT, problems, rounds=2, max_new_tokens=(4, 4, 4))
    with pytest.raises(ValueError, match="first_attempts"):
        sample_revisions(model, tokenizer, FMT, problems, rounds=2, first_attempts=attempts[:1])
