"""Speed of the LLM core on the bundled tiny LM (``assets/lm-arith``), in one process.

    OMP_NUM_THREADS=1 python benchmarks/llm.py [--model assets/lm-arith] [--prompts 64] [--new_tokens 48] [--repeats 3]

1. Rollout tokens/s: ``generate_rollouts`` (``model.generate`` with the KV cache) vs the naive loop
   that re-runs the whole sequence every token (``use_cache=False``), same prompts, same seed,
   ``min_new_tokens = max_new_tokens`` so both produce the same number of tokens.
2. One GRPO update (loss + backward + AdamW step) on the same model and the same batch: ours
   (:class:`~selfgen.train.llm.objectives.GRPOObjective`) vs TRL's ``GRPOTrainer._compute_loss``
   (when trl is installed). Generation is excluded from both; the ratio is time / our time.

Rollout numbers are medians of ``--repeats`` runs after one warm-up; the two GRPO updates are timed
in alternation (after two warm-ups each) so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import torch

from selfgen.data.tasks import ArithmeticTask, prompt_text
from selfgen.train.llm.modeling import frozen_copy, load_policy
from selfgen.train.llm.objectives import GRPOCollator, GRPOObjective, PolicySample
from selfgen.train.llm.rollout import SamplingParams, generate_rollouts
from timing import interleaved_medians


def rollout_speed(model, tokenizer, prompts: list[str], new_tokens: int, repeats: int) -> dict[str, float]:
    speeds = {}
    for name, use_cache in (("kv_cache", True), ("reforward", False)):
        params = SamplingParams(
            temperature=1.0, max_new_tokens=new_tokens, use_cache=use_cache, batch_size=len(prompts)
        )
        generation_config = model.generation_config
        generation_config.min_new_tokens = new_tokens
        seconds = interleaved_medians({"rollout": lambda: generate_rollouts(model, tokenizer, prompts, params, seed=0)}, repeats)["rollout"]
        speeds[name] = len(prompts) * new_tokens / seconds
    model.generation_config.min_new_tokens = None
    return speeds


def grpo_batch(model, tokenizer, prompts: list[str], new_tokens: int) -> dict[str, torch.Tensor]:
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
    rollouts = generate_rollouts(model, tokenizer, prompts, params, seed=1)
    generator = torch.Generator().manual_seed(0)
    advantages = torch.randn(len(rollouts), generator=generator)
    samples = [PolicySample(r.prompt_ids, r.completion_ids, float(a), r.logprobs) for r, a in zip(rollouts, advantages)]
    batch = GRPOCollator(tokenizer.pad_token_id)(samples)
    with torch.no_grad():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/lm-arith")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_policy(args.model)
    problems = ArithmeticTask("add", 1, 4).sample(args.prompts, seed=0)
    prompts = [prompt_text(p.question) for p in problems]

    speeds = rollout_speed(model, tokenizer, prompts, args.new_tokens, args.repeats)
    print(f"{'rollout':<28}{'tokens/s':>12}{'ratio':>8}")
    for name, speed in speeds.items():
        print(f"{name:<28}{speed:>12.0f}{speed / speeds['reforward']:>8.2f}")

    batch = grpo_batch(model, tokenizer, prompts, args.new_tokens)
    objective = GRPOObjective(frozen_copy(model), beta=0.04, loss_type="grpo")
    policy = model.train()
    steps = {"selfgen GRPOObjective": update_step(policy, lambda: objective.compute_loss(policy, dict(batch))[0])}
    with tempfile.TemporaryDirectory() as output_dir:
        trl_run = trl_policy_and_loss(args.model, batch, args.new_tokens, output_dir)
        if trl_run is not None:
            steps["trl GRPOTrainer"] = update_step(*trl_run)
        seconds = interleaved_medians(steps, args.repeats, warmups=2)
    ours = seconds["selfgen GRPOObjective"]
    print(f"\n{'one GRPO update':<28}{'seconds':>12}{'ratio':>8}")
    for name, value in seconds.items():
        print(f"{name:<28}{value:>12.4f}{value / ours:>8.2f}")
    if trl_run is None:
        print("trl not installed: no TRL reference")

if __name__ == "__main__":
    main()
