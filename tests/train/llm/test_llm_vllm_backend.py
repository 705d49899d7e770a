"""The vLLM rollout backend's CPU-checkable parts: scoring externally sampled ids reproduces the
in-process rollouts exactly, and asking for vLLM where it cannot run is a clear error."""

from pathlib import Path

import pytest
import torch

from selfgen.train.llm.driver import IterativeConfig
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts
from selfgen.train.llm.vllm_backend import VLLMRollouts, score_sampled_ids

ASSET = Path(__file__).resolve().parents[3] / "assets" / "lm-arith"


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_scoring_sampled_ids_matches_in_process_rollouts(temperature):
    model, tokenizer = load_policy(ASSET)
    prompts = ["Q:12+345\n", "Q:7+8\n", "Q:999+1\n"]
    num_samples = 1 if temperature == 0 else 2
    params = SamplingParams(temperature=temperature, num_samples=num_samples, max_new_tokens=24, stop_strings=(",",), batch_size=4)
    reference = generate_rollouts(model, tokenizer, prompts, params, seed=3)
    # the raw sampled ids an engine would return: the kept ids plus junk after the eos / stop string
    sampled = [r.completion_ids + [tokenizer.pad_token_id] * 3 for r in reference]
    prompt_ids = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in prompts]
    scored = score_sampled_ids(model, tokenizer, prompts, prompt_ids, sampled, params)
    assert [(r.prompt_index, r.text, r.completion_ids, r.finished) for r in scored] == [
        (r.prompt_index, r.text, r.completion_ids, r.finished) for r in reference
    ]
    for ours, theirs in zip(scored, reference):
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=1e-4, rtol=1e-4)


def test_vllm_backend_without_vllm_or_gpu_is_a_clear_error():
    try:
        import vllm  # noqa: F401

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if available:
        pytest.skip("vLLM and a GPU are present")
    with pytest.raises(ValueError, match="rollout_backend='vllm'"):
        VLLMRollouts()
    with pytest.raises(ValueError, match="rollout_backend must be one of"):
        IterativeConfig(rollout_backend="sglang")
