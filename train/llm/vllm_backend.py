"""Optional vLLM rollout backend (``rollout_backend: vllm``), as TRL's ``use_vllm``: vLLM samples the
token ids, the policy itself scores them.

A recipe's sampling goes through :meth:`~selfgen.train.llm.driver.IterativeTrainer.generate`; with this
backend the current policy is saved (``save_pretrained`` + tokenizer) to a temporary folder and loaded
into a ``vllm.LLM`` engine, rebuilt whenever the driver has updated the policy since the last sync (one
rebuild per iteration: simpler and version-proof compared with patching weights into a running engine).
vLLM returns the sampled ids only; :func:`score_sampled_ids` then computes each token's logprob with
one forward pass of the policy under ``softmax(logits / T)`` and cuts the text at eos and stop strings
exactly as the in-process path does, so ``Rollout`` objects are the same whichever backend sampled
them (GRPO's ``pi_old`` keeps TRL's convention; vLLM's own logprobs are not used).

vLLM needs CUDA: asking for the backend without vLLM installed or without a GPU is a ``ValueError``
naming ``rollout_backend``. The in-process ``generate`` path is the default and the one the test suite
runs; :func:`score_sampled_ids` is tested on CPU against it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence

import torch
from torch import nn

from .objectives import pad_sequences, token_logprobs
from .rollout import Rollout, SamplingParams, cut_at_stop


def check_vllm_available() -> None:
    """``ValueError`` naming ``rollout_backend`` unless vLLM imports and a CUDA device is present."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ValueError("rollout_backend='vllm' needs vLLM: pip install vllm (or use rollout_backend='generate')") from None
    if not torch.cuda.is_available():
        raise ValueError("rollout_backend='vllm' needs a CUDA GPU; on CPU use rollout_backend='generate'")


@torch.no_grad()
def score_sampled_ids(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[list[int]],
    sampled_ids: Sequence[list[int]],
    params: SamplingParams,
) -> list[Rollout]:
    """Rollouts from externally sampled completions: ``sampled_ids[i]`` continues prompt ``i //
    params.num_samples``; each is cut at eos / stop strings and its tokens are scored by ``model``
    (``log softmax(logits / T)[y_t]``, ``T = 1`` for greedy), as :func:`generate_rollouts` reports them."""
    temperature = params.temperature or 1.0
    device = next(model.parameters()).device
    rollouts = []
    for start in range(0, len(sampled_ids), params.batch_size):
        rows = range(start, min(start + params.batch_size, len(sampled_ids)))
        cut = [cut_at_stop(tokenizer, list(sampled_ids[row]), params.stop_strings) for row in rows]
        owners = [row // params.num_samples for row in rows]
        sequences = [prompt_ids[owner] + ids for owner, (ids, _, _) in zip(owners, cut)]
        input_ids = pad_sequences(sequences, tokenizer.pad_token_id, left=True).to(device)
        attention_mask = pad_sequences([[1] * len(s) for s in sequences], 0, left=True).to(device)
        width = max(len(ids) for ids, _, _ in cut)
        scores = token_logprobs(model, input_ids, attention_mask, temperature, last=width).cpu() if width else None
        for position, (owner, (ids, text, finished)) in enumerate(zip(owners, cut)):
            logprobs = scores[position, width - len(ids) :].tolist() if ids else []
            rollouts.append(Rollout(owner, prompts[owner], text, list(prompt_ids[owner]), ids, logprobs, finished))
    return rollouts


class VLLMRollouts:
    """A vLLM engine over the policy's latest weights; :meth:`generate` mirrors ``generate_rollouts``."""

    def __init__(self, gpu_memory_utilization: float = 0.3) -> None:
        check_vllm_available()
        self.gpu_memory_utilization = gpu_memory_utilization
        self.engine = None
        self.synced_version: tuple | None = None
        self.weights_dir: str | None = None

    def sync(self, model: nn.Module, tokenizer, version: tuple) -> None:
        """(Re)build the engine from ``model``'s weights unless ``version`` (the driver's ``(id(policy),
        policy_version)``: a new object, as RLCCF's member swap, or new weights) is already loaded."""
        if version == self.synced_version:
            return
        from vllm import LLM

        self.close()
        self.weights_dir = tempfile.mkdtemp(prefix="selfgen-vllm-")
        model.save_pretrained(self.weights_dir)
        tokenizer.save_pretrained(self.weights_dir)
        self.engine = LLM(model=self.weights_dir, gpu_memory_utilization=self.gpu_memory_utilization)
        self.synced_version = version

    def generate(
        self, model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams, version: tuple, seed: int = 0
    ) -> list[Rollout]:
        from vllm import SamplingParams as VLLMSamplingParams

        self.sync(model, tokenizer, version)
        prompt_ids = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in prompts]
        sampling = VLLMSamplingParams(
            n=params.num_samples, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, seed=seed,
        )
        outputs = self.engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, use_tqdm=False)
        sampled = [list(completion.token_ids) for output in outputs for completion in output.outputs]
        return score_sampled_ids(model, tokenizer, prompts, prompt_ids, sampled, params)

    def close(self) -> None:
        """Free the engine and its temporary weights folder."""
        self.engine = None
        if self.weights_dir is not None:
            shutil.rmtree(self.weights_dir, ignore_errors=True)
            self.weights_dir = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
