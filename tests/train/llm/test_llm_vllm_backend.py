"""The vLLM rollout backend's CPU-checkable parts: scoring externally sampled ids reproduces the
in-process rollouts exactly, and asking for vLLM where it cannot run is a clear error."""

import copy
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


class FakeEngine:
    """Records what the backend does to a vLLM ``LLM``: built from ``folder``, weights loaded in place,
    prefix cache reset, ``generate`` answering with fixed completions."""

    def __init__(self, folder, completions):
        self.folder, self.completions = folder, completions
        self.loaded, self.resets, self.sampling = [], 0, []
        runner = type("Runner", (), {"model": type("Model", (), {"load_weights": lambda _, pairs: self.loaded.extend(pairs)})()})()
        worker = type("Worker", (), {"model_runner": runner})()
        executor = type("Executor", (), {"driver_worker": worker})()
        self.llm_engine = type("LLMEngine", (), {"model_executor": executor})()
        self.has_config = (Path(folder) / "config.json").is_file()

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, sampling, use_tqdm=False):
        self.sampling.append(sampling)
        n = sampling["n"]
        completion = lambda ids: type("Completion", (), {"token_ids": ids})()  # noqa: E731
        return [type("Output", (), {"outputs": [completion(self.completions[i * n + j]) for j in range(n)]})() for i in range(len(prompts))]


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="assets/lm-arith not built")
def test_vllm_backend_loads_new_weights_into_the_live_engine_and_passes_stop_strings():
    model, tokenizer = load_policy(ASSET)
    ids = tokenizer("S:1+2+0=3,\nA:3", add_special_tokens=False).input_ids
    engines = []
    factory = lambda folder: engines.append(FakeEngine(folder, [ids, ids[:4]])) or engines[-1]  # noqa: E731
    backend = VLLMRollouts(engine_factory=factory, sampling_params=dict)
    params = SamplingParams(temperature=0.7, num_samples=2, max_new_tokens=24, stop_strings=(",",))
    rollouts = backend.generate(model, tokenizer, ["Q:1+2\n"], params, version=(id(model), 0), seed=4)
    assert len(engines) == 1 and engines[0].has_config and engines[0].loaded == []
    assert engines[0].sampling[0]["stop"] == [","] and engines[0].sampling[0]["include_stop_str_in_output"]
    assert engines[0].sampling[0]["seed"] == 4 and engines[0].sampling[0]["max_tokens"] == 24
    assert [r.text for r in rollouts] == ["S:1+2+0=3", "S:1+"] and [r.finished for r in rollouts] == [True, False]
    assert rollouts[0].completion_ids == ids[: len("S:1+2+0=3,")]
    backend.generate(model, tokenizer, ["Q:1+2\n"], params, version=(id(model), 0))  # same version: nothing to do
    assert engines[0].loaded == [] and engines[0].resets == 0
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # tied to the embedding: sent once, under one name
    backend.generate(model, tokenizer, ["Q:1+2\n"], params, version=(id(model), 1))
    assert len(engines) == 1 and engines[0].resets == 1
    names = [name for name, _ in engines[0].loaded]
    assert names == [name for name, _ in model.named_parameters()] and len(names) == len(set(names))
    sent = dict(engines[0].loaded)
    assert all(torch.equal(sent[name], param) for name, param in model.named_parameters())
    other = copy.deepcopy(model)
    other.config.num_hidden_layers += 1  # another architecture (e.g. an RLCCF member): a new engine
    backend.generate(other, tokenizer, ["Q:1+2\n"], params, version=(id(other), 0))
    assert len(engines) == 2
    backend.close()
