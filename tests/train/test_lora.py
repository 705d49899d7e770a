"""LoRA adapters merge into a plain model for export, for diffusers and transformers models alike."""

import pytest
import torch

from selfgen.train.lora import add_lora_adapters, merge_lora_adapters

pytest.importorskip("peft")


def _perturb_adapters(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def test_transformers_causal_lm_merges_to_plain_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config).eval()
    tokens = torch.randint(0, 32, (2, 6))
    with torch.no_grad():
        base_logits = model(tokens).logits
    add_lora_adapters(model, rank=4, target_modules=["q_proj", "v_proj"])
    assert all("lora_" in name for name, param in model.named_parameters() if param.requires_grad)
    _perturb_adapters(model)
    merged = merge_lora_adapters(model).eval()
    assert type(merged) is LlamaForCausalLM
    assert not any("lora" in key or "base_layer" in key for key in merged.state_dict())
    with torch.no_grad():
        adapted_logits, merged_logits = model(tokens).logits, merged(tokens).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged_logits, base_logits)


def test_model_without_config_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    add_lora_adapters(model, rank=2)
    with pytest.raises(ValueError, match="cannot rebuild Sequential"):
        merge_lora_adapters(model)


def test_default_targets_leave_out_a_tied_output_layer():
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfgen.train.lora import default_lora_targets

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    targets = default_lora_targets(LlamaForCausalLM(config))
    assert "lm_head" not in targets and "model.layers.0.self_attn.q_proj" in targets
    config.tie_word_embeddings = False
    assert "lm_head" in default_lora_targets(LlamaForCausalLM(config))
