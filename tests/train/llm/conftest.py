"""Fixtures shared by the LLM tests."""

import pytest
import torch

from selfgen.train.llm.modeling import build_char_tokenizer, build_tiny_llama


@pytest.fixture(scope="module")
def policy():
    """A seeded, randomly initialised 2-layer Llama on the character tokenizer, in eval mode."""
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_llama(tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return model.eval(), tokenizer
