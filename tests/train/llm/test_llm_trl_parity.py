"""Our DPO and GRPO losses equal TRL's on identical inputs (same model, same batch)."""

import pytest
import torch

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402

from selfgen.train.llm.modeling import build_char_tokenizer, build_tiny_llama, frozen_copy  # noqa: E402
from selfgen.train.llm.objectives import (  # noqa: E402
    DPOCollator,
    DPOObjective,
    GRPOObjective,
    PreferencePair,
    completion_token_logprobs,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_llama(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _perturb(model, scale=0.02, seed=1):
    """Move the policy away from its reference so ratios and KL terms are non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def _grpo_inputs(tokenizer, policy):
    torch.manual_seed(3)
    prompt_ids = torch.randint(5, len(tokenizer), (4, 6))
    completion_ids = torch.randint(5, len(tokenizer), (4, 7))
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0
    completion_mask[3, 2:] = 0
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.2, -0.7, 0.3, -0.8]),
    }
    with torch.no_grad():
        current = GRPOObjective(beta=0.0).completion_logprobs(policy, inputs)
    inputs["old_per_token_logps"] = current + 0.3 * torch.randn(current.shape)  # ratios beyond the clip range
    inputs["ref_per_token_logps"] = current - 0.5 * torch.rand(current.shape)
    return inputs


@pytest.mark.parametrize(
    ("loss_type", "kl_correction"),
    [("grpo", False), ("grpo", True), ("bnpo", True), ("dr_grpo", False), ("dr_grpo", True), ("dapo", False)],
)
def test_grpo_loss_matches_trl(model_dir, tmp_path, loss_type, kl_correction):
    args = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=7,
        beta=0.1, epsilon=0.2, epsilon_high=0.28, loss_type=loss_type, use_bias_correction_kl=kl_correction, report_to="none", use_cpu=True, bf16=False,
    )
    dataset = Dataset.from_list([{"prompt": "Q:1+2\n"}] * 4)
    reference_trainer = trl.GRPOTrainer(
        model=str(model_dir), reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args, train_dataset=dataset,
    )
    reference_trainer.current_gradient_accumulation_steps = 1
    policy = reference_trainer.model.train()
    _perturb(policy)
    inputs = _grpo_inputs(reference_trainer.processing_class, policy)
    # TRL's dapo divides by `num_items_in_batch`: the generation batch's completion tokens (one batch here)
    inputs["num_items_in_batch"] = inputs["completion_mask"].sum()
    theirs = reference_trainer._compute_loss(policy, dict(inputs))
    ours_objective = GRPOObjective(
        reference=frozen_copy(policy), beta=0.1, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
        max_completion_length=7, kl_importance_correction=kl_correction,
    )
    ours, logs = ours_objective.compute_loss(policy, dict(inputs))
    assert logs["clip_fraction"] > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # and gradients agree too
    grad_ours = torch.autograd.grad(ours, policy.model.embed_tokens.weight)[0]
    grad_theirs = torch.autograd.grad(reference_trainer._compute_loss(policy, dict(inputs)), policy.model.embed_tokens.weight)[0]
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-4, atol=1e-7)


def test_dpo_loss_matches_trl(model_dir, tmp_path):
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.1, report_to="none", use_cpu=True, bf16=False, per_device_train_batch_size=2,
    )
    pairs = [
        PreferencePair("Q:12+5\n", "S:2+5+0=7,1+0+0=1\nA:17", "S:2+5+0=8\nA:18"),
        PreferencePair("Q:3,4,2>14\n", "S:3*4=12,12+2=14\nA:14", "S:3+4=7\nA:7"),
    ]
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    reference_trainer = trl.DPOTrainer(model=str(model_dir), args=args, train_dataset=dataset)
    policy = reference_trainer.model.train()
    _perturb(policy)
    batch = DPOCollator(reference_trainer.processing_class)(pairs)
    theirs = reference_trainer._compute_loss(policy, dict(batch), return_outputs=False)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    ours, logs = DPOObjective(reference_trainer.ref_model, beta=0.1).compute_loss(policy, dict(batch))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert logs["reward_margin"] != 0


def test_dpo_loss_is_log2_when_policy_equals_reference(model_dir):
    from selfgen.train.llm.modeling import load_policy

    policy, tokenizer = load_policy(model_dir)
    batch = DPOCollator(tokenizer)([PreferencePair("Q:1+1\n", "S:1+1+0=2\nA:2", "A:3")])
    loss, _ = DPOObjective(frozen_copy(policy), beta=0.5).compute_loss(policy, batch)
    torch.testing.assert_close(loss, torch.tensor(0.6931472), rtol=1e-5, atol=1e-6)
    logprobs, mask = completion_token_logprobs(policy, batch)
    assert mask[0].sum() == len("S:1+1+0=2\nA:2") + 1  # completion tokens + eos are scored, prompt is not
