"""Speed and memory of the LLM core, one run (each memory case in a fresh process).

    OMP_NUM_THREADS=2 python benchmarks/llm.py [--prompts 64] [--new_tokens 64] [--repeats 3]

1. Rollout tokens/s on the bundled tiny LM (``assets/lm-arith``): ``generate_rollouts`` (``generate``
   with the KV cache) vs the naive loop that re-runs the whole sequence every token
   (``use_cache=False``), same prompts and seed, ``min_new_tokens = max_new_tokens``.
2. Rollout memory at Qwen2's 151,936-token vocabulary (a tiny random ``Qwen2ForCausalLM`` config with a
   word-level tokenizer over the same vocabulary, built offline): peak resident-memory growth (Linux
   ``VmHWM``, reset before the call) of plain ``model.generate`` vs ``generate_rollouts`` (``generate``
   keeping token ids only + the chunked scoring pass), ``--prompts`` x ``--new_tokens``, each case in its
   own process; target ``generate_rollouts / generate <= 1.5``. Seconds of each are printed too.
3. One GRPO update (loss + backward + AdamW step) on a tiny Qwen2 config with a 32,768-token vocabulary,
   same batch (``--prompts`` rollouts of ``--new_tokens`` tokens): ours
   (:class:`~selfgen.train.llm.objectives.GRPOObjective`) vs TRL's ``GRPOTrainer._compute_loss`` on the
   same saved model; generation excluded, updates timed in alternation after two warm-ups each;
   target TRL / ours >= 1.5.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from selfgen.data.tasks import ArithmeticTask, prompt_text
from selfgen.train.llm.modeling import ALPHABET, SPECIAL_TOKENS, frozen_copy, load_policy
from selfgen.train.llm.objectives import GRPOCollator, GRPOObjective, PolicySample
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts
from timing import interleaved_medians

QWEN2_VOCAB = 151_936


def word_level_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """One token per character of the arithmetic alphabet, filler tokens up to ``vocab_size``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(SPECIAL_TOKENS.values()) + sorted(set(ALPHABET))
    tokens += [f"<{index}>" for index in range(vocab_size - len(tokens))]
    backend = Tokenizer(models.WordLevel({token: index for index, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_qwen2(vocab_size: int, hidden_size: int, tokenizer) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return Qwen2ForCausalLM(config).eval()


def arithmetic_prompts(count: int) -> list[str]:
    return [prompt_text(p.question) for p in ArithmeticTask("add", 1, 4).sample(count, seed=0)]


# ----------------------------------------------------------------- 1. rollout speed


def rollout_speed(model, tokenizer, prompts: list[str], new_tokens: int, repeats: int) -> dict[str, float]:
    speeds = {}
    model.generation_config.min_new_tokens = new_tokens
    for name, use_cache in (("kv_cache", True), ("reforward", False)):
        params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, use_cache=use_cache, batch_size=len(prompts))
        run = {"rollout": lambda: generate_rollouts(model, tokenizer, prompts, params, seed=0)}
        speeds[name] = len(prompts) * new_tokens / interleaved_medians(run, repeats)["rollout"]
    model.generation_config.min_new_tokens = None
    return speeds


# ----------------------------------------------------------------- 2. rollout memory


def peak_rss_growth(step: Callable[[], object]) -> tuple[float, float]:
    """(GB of peak resident memory above the level before ``step``, seconds) - Linux ``VmHWM``, reset first."""

    def status(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current resident size
    before = status("VmRSS")
    start = time.perf_counter()
    step()
    return (status("VmHWM") - before) / 2**30, time.perf_counter() - start


def memory_case(case: str, prompts_count: int, new_tokens: int) -> dict[str, float]:
    """One memory measurement (run in a fresh process by :func:`rollout_memory`)."""
    tokenizer = word_level_tokenizer(QWEN2_VOCAB)
    model = tiny_qwen2(QWEN2_VOCAB, 64, tokenizer)
    prompts = arithmetic_prompts(prompts_count)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, batch_size=len(prompts))
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    if case == "generate":
        step = lambda: model.generate(  # noqa: E731
            **encoded, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    else:
        step = lambda: generate_rollouts(model, tokenizer, prompts, params, seed=0)  # noqa: E731
    with torch.no_grad():
        gigabytes, seconds = peak_rss_growth(step)
    return {"peak_gb": gigabytes, "seconds": seconds}


def rollout_memory(prompts_count: int, new_tokens: int) -> dict[str, dict[str, float]]:
    results = {}
    for case in ("generate", "generate_rollouts"):
        command = [sys.executable, __file__, "--memory_case", case, "--prompts", str(prompts_count), "--new_tokens", str(new_tokens)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[case] = json.loads(output.strip().splitlines()[-1])
    return results


# ----------------------------------------------------------------- 3. one GRPO update vs TRL


def grpo_batch(model, tokenizer, prompts: list[str], new_tokens: int) -> dict[str, torch.Tensor]:
    model.generation_config.min_new_tokens = new_tokens
    rollouts = generate_rollouts(model, tokenizer, prompts, SamplingParams(temperature=1.0, max_new_tokens=new_tokens), seed=1)
    model.generation_config.min_new_tokens = None
    advantages = torch.randn(len(rollouts), generator=torch.Generator().manual_seed(0))
    samples = [PolicySample(r.prompt_ids, r.completion_ids, float(a), r.logprobs) for r, a in zip(rollouts, advantages)]
    batch = GRPOCollator(tokenizer.pad_token_id)(samples)
    batch["ref_per_token_logps"] = batch["old_per_token_logps"].clone()
    return batch


def update_step(model, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One update: loss, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def trl_policy_and_loss(model_path: str, batch: dict[str, torch.Tensor], new_tokens: int, output_dir: str):
    """TRL's GRPOTrainer on the same model folder, and its loss on ``batch`` (None without trl)."""
    try:
        import trl
        from datasets import Dataset
    except ImportError:
        return None
    args = trl.GRPOConfig(
        output_dir=output_dir, per_device_train_batch_size=8, num_generations=8, max_completion_length=new_tokens,
        beta=0.04, loss_type="grpo", use_bias_correction_kl=False, report_to="none", use_cpu=True, bf16=False,
    )
    trainer = trl.GRPOTrainer(
        model=model_path, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_list([{"prompt": "Q:1+1\n"}] * 8),
    )
    trainer.current_gradient_accumulation_steps = 1
    policy = trainer.model.train()
    return policy, lambda: trainer._compute_loss(policy, dict(batch))


def grpo_update_speed(prompts: list[str], new_tokens: int, repeats: int) -> dict[str, float]:
    tokenizer = word_level_tokenizer(32_768)
    model = tiny_qwen2(32_768, 128, tokenizer)
    batch = grpo_batch(model, tokenizer, prompts, new_tokens)
    objective = GRPOObjective(frozen_copy(model), beta=0.04, loss_type="grpo")
    with tempfile.TemporaryDirectory() as output_dir:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        policy = model.train()
        steps = {"selfgen GRPOObjective": update_step(policy, lambda: objective.compute_loss(policy, dict(batch))[0])}
        trl_run = trl_policy_and_loss(output_dir, batch, new_tokens, output_dir + "/trl")
        if trl_run is not None:
            steps["trl GRPOTrainer"] = update_step(*trl_run)
        return interleaved_medians(steps, repeats, warmups=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/lm-arith")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory_case", choices=("generate", "generate_rollouts"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.prompts, args.new_tokens)))
        return
    prompts = arithmetic_prompts(args.prompts)

    model, tokenizer = load_policy(args.model)
    speeds = rollout_speed(model, tokenizer, prompts, args.new_tokens, args.repeats)
    print(f"{'rollout (' + args.model + ')':<34}{'tokens/s':>12}{'ratio':>8}")
    for name, speed in speeds.items():
        print(f"{name:<34}{speed:>12.0f}{speed / speeds['reforward']:>8.2f}")

    memory = rollout_memory(args.prompts, args.new_tokens)
    plain = memory["generate"]
    print(f"\n{f'rollout memory, vocab {QWEN2_VOCAB:,}':<34}{'peak +GB':>12}{'ratio':>8}{'seconds':>10}")
    for name, values in memory.items():
        print(f"{name:<34}{values['peak_gb']:>12.3f}{values['peak_gb'] / plain['peak_gb']:>8.2f}{values['seconds']:>10.2f}")

    seconds = grpo_update_speed(prompts, args.new_tokens, args.repeats)
    ours = seconds["selfgen GRPOObjective"]
    print(f"\n{'one GRPO update, vocab 32,768':<34}{'seconds':>12}{'ratio':>8}")
    for name, value in seconds.items():
        print(f"{name:<34}{value:>12.4f}{value / ours:>8.2f}")
    if len(seconds) == 1:
        print("trl not installed: no TRL reference")


if __name__ == "__main__":
    main()
