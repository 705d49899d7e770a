"""Rollouts: logprobs equal a forward pass's, the KV cache changes nothing, stop strings cut; rewards."""

import pytest
import torch

from selfgen.data.problems import Problem
from selfgen.data.tasks import ArithmeticTask
from selfgen.train.llm.objectives import group_advantages, token_logprobs
from selfgen.train.llm.rewards import CallableReward, MajorityVoteReward, OutcomeReward, ProcessReward, VerifierReward
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts


PROMPTS = ["Q:1+2\n", "Q:345+78\n", "Q:9*7\n"]  # different lengths: left padding is exercised


def test_rollout_logprobs_equal_forward_pass(policy):
    model, tokenizer = policy
    params = SamplingParams(temperature=0.7, top_p=0.9, num_samples=2, max_new_tokens=12)
    rollouts = generate_rollouts(model, tokenizer, PROMPTS, params, seed=1)
    assert [r.prompt_index for r in rollouts] == [0, 0, 1, 1, 2, 2]
    for rollout in rollouts:
        ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
        with torch.no_grad():
            expected = token_logprobs(model, ids, torch.ones_like(ids), temperature=0.7)[0, len(rollout.prompt_ids) - 1 :]
        torch.testing.assert_close(torch.tensor(rollout.logprobs), expected, rtol=1e-4, atol=1e-4)
        assert rollout.text == tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)


def test_sampling_is_seeded_and_kv_cache_matches_reforward(policy):
    model, tokenizer = policy
    params = SamplingParams(temperature=1.0, num_samples=3, max_new_tokens=10)
    first = generate_rollouts(model, tokenizer, PROMPTS, params, seed=5)
    again = generate_rollouts(model, tokenizer, PROMPTS, params, seed=5)
    assert [r.completion_ids for r in first] == [r.completion_ids for r in again]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    cached = generate_rollouts(model, tokenizer, PROMPTS, greedy)
    naive = generate_rollouts(model, tokenizer, PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=10, use_cache=False))
    assert [r.completion_ids for r in cached] == [r.completion_ids for r in naive]


def test_stop_strings_cut_text_and_ids(policy):
    model, tokenizer = policy
    full = generate_rollouts(model, tokenizer, PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=12))[0]
    stop = full.text[3:5]
    cut = generate_rollouts(model, tokenizer, PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=12, stop_strings=[stop]))[0]
    position = full.text.index(stop)
    assert cut.text == full.text[:position] and cut.finished
    assert cut.completion_ids == full.completion_ids[: position + len(stop)]
    assert len(cut.logprobs) == len(cut.completion_ids)


def test_bad_sampling_params_are_named():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_rewards_are_batched_and_typed():
    task = ArithmeticTask("add")
    problem = Problem("47+85", "132", "p")
    good, bad_step, wrong = "S:7+5+0=12,4+8+1=13\nA:132", "S:7+5+0=11,4+8+1=13\nA:132", "S:7+5+0=12\nA:131"
    assert VerifierReward(task)([problem] * 3, [good, bad_step, wrong]) == [1.0, 1.0, 0.0]
    assert ProcessReward(task)([problem] * 3, [good, bad_step, wrong]) == [1.0, 0.5, 0.5]
    assert ProcessReward(task)([problem], ["S:7+5+0=12,3+8+1=12\nA:122"]) == [0.5]  # a true sum of the wrong digits
    assert CallableReward(lambda p, c: "A:132" in c)([problem, problem], [good, wrong]) == [1.0, 0.0]
    votes = MajorityVoteReward(group_size=3)([problem] * 6, ["A:1", "A:1", "A:2", "A:5", "x", "x"])
    assert votes == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    outcome = OutcomeReward(lambda p, c: {"A:1": "win", "A:2": "draw"}.get(c, "loss"))
    assert outcome([problem] * 3, ["A:1", "A:2", "A:3"]) == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="not one of"):
        OutcomeReward(lambda p, c: "forfeit")([problem], ["A:1"])


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    advantages = group_advantages(rewards, group_size=3)
    torch.testing.assert_close(advantages[:3], torch.tensor([2 / 3, -1 / 3, -1 / 3]) / (torch.tensor([1.0, 0, 0]).std() + 1e-4))
    assert advantages[3:].abs().max() < 1e-6 or advantages[4] > 0
    with pytest.raises(ValueError, match="group_size=4"):
        group_advantages(rewards, group_size=4)
