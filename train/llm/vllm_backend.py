"""Optional vLLM rollout backend (``rollout_backend: vllm``), as TRL's ``use_vllm`` in colocate mode:
vLLM samples the token ids, the policy itself scores them.

A recipe's sampling goes through :meth:`~selfgen.train.llm.driver.IterativeTrainer.generate`; with this
backend the engine is built once, in-process (``distributed_executor_backend="external_launcher"``, as
TRL does), from a saved copy of the first policy it sees. Whenever the driver has updated the policy
since the last sync, the new weights are pushed into the live engine - ``model_runner.model.load_weights``
with ``(name, tensor)`` pairs from ``named_parameters()`` (tied weights once), followed by
``reset_prefix_cache()``, TRL's ``VLLMGeneration.sync_weights`` path - instead of saving and rebuilding.
Only a policy of a different architecture (a new config, e.g. RLCCF swapping in another member)
rebuilds the engine. Stop strings go to vLLM (``stop=``, kept in the output so that
:func:`~selfgen.train.llm.rollout.cut_at_stop` cuts exactly as the in-process path does).

vLLM returns the sampled ids only; :func:`~selfgen.train.llm.rollout.score_sampled_ids` then computes
each token's logprob with one forward pass of the policy under ``softmax(logits / T)``, so ``Rollout``
objects are the same whichever backend sampled them (GRPO's ``pi_old`` keeps TRL's convention; vLLM's
own logprobs are not used).

Status: unproven. vLLM needs CUDA and is not installed where the test suite runs; the weight iteration,
the engine's update calls and the stop-string plumbing are tested against a fake engine, the scoring
against the in-process path. Asking for the backend without vLLM or without a GPU is a ``ValueError``
naming ``rollout_backend``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .rollout import Rollout, SamplingParams, score_sampled_ids

__all__ = ["VLLMRollouts", "check_vllm_available", "named_weights", "score_sampled_ids", "vllm_sampling_options"]


def check_vllm_available() -> None:
    """``ValueError`` naming ``rollout_backend`` unless vLLM imports and a CUDA device is present."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ValueError("rollout_backend='vllm' needs vLLM: pip install vllm (or use rollout_backend='generate')") from None
    if not torch.cuda.is_available():
        raise ValueError("rollout_backend='vllm' needs a CUDA GPU; on CPU use rollout_backend='generate'")


def named_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs in the checkpoint's naming that vLLM's ``load_weights`` expects: every
    parameter once (tied weights are not repeated), as TRL's weight sync sends them."""
    return ((name, param.detach()) for name, param in model.named_parameters())


def vllm_sampling_options(params: SamplingParams, seed: int) -> dict:
    """``vllm.SamplingParams`` keyword arguments matching our :class:`SamplingParams`."""
    return dict(
        n=params.num_samples, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
        seed=seed, stop=list(params.stop_strings), include_stop_str_in_output=True,
    )


def build_vllm_engine(folder: str, gpu_memory_utilization: float):
    """An in-process ``vllm.LLM`` over a saved model folder (single process: rank 0 of 1 unless launched)."""
    from vllm import LLM

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}.items():
        os.environ.setdefault(key, value)
    return LLM(
        model=folder, gpu_memory_utilization=gpu_memory_utilization, distributed_executor_backend="external_launcher"
    )


def vllm_sampling_params(**options):
    from vllm import SamplingParams as VLLMSamplingParams

    return VLLMSamplingParams(**options)


class VLLMRollouts:
    """A vLLM engine over the policy's latest weights; :meth:`generate` mirrors ``generate_rollouts``.

    ``engine_factory(folder)`` and ``sampling_params`` replace vLLM's ``LLM`` and ``SamplingParams``
    (tests pass fakes; by default vLLM's own, which must be importable with a GPU present)."""

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        engine_factory: Callable[[str], object] | None = None,
        sampling_params: Callable[..., object] = vllm_sampling_params,
    ) -> None:
        if engine_factory is None:
            check_vllm_available()
            engine_factory = lambda folder: build_vllm_engine(folder, gpu_memory_utilization)  # noqa: E731
        self.engine_factory, self.sampling_params = engine_factory, sampling_params
        self.engine = None
        self.architecture: str | None = None
        self.synced_version: tuple | None = None
        self.weights_dir: str | None = None

    def sync(self, model: nn.Module, tokenizer, version: tuple) -> None:
        """Make the engine sample from ``model`` unless ``version`` (the driver's ``(id(policy),
        policy_version)``) is already loaded: new weights of the same architecture go into the live engine,
        a different architecture (or the first call) builds it from a saved copy."""
        if version == self.synced_version:
            return
        architecture = model.config.to_json_string()
        if self.engine is None or architecture != self.architecture:
            self.close()
            self.weights_dir = tempfile.mkdtemp(prefix="selfgen-vllm-")
            model.save_pretrained(self.weights_dir)
            tokenizer.save_pretrained(self.weights_dir)
            self.engine, self.architecture = self.engine_factory(self.weights_dir), architecture
        else:
            runner_model = self.engine.llm_engine.model_executor.driver_worker.model_runner.model
            for name, tensor in named_weights(model):
                runner_model.load_weights([(name, tensor)])
            self.engine.reset_prefix_cache()
        self.synced_version = version

    def generate(
        self, model: nn.Module, tokenizer, prompts: Sequence[str], params: SamplingParams, version: tuple, seed: int = 0
    ) -> list[Rollout]:
        self.sync(model, tokenizer, version)
        prompt_ids = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in prompts]
        sampling = self.sampling_params(**vllm_sampling_options(params, seed))
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
