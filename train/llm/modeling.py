"""Loading, building and saving the causal LMs the recipes train: any ``AutoModelForCausalLM`` + tokenizer.

The bundled tiny model is a transformers ``LlamaForCausalLM`` with a character-level
``PreTrainedTokenizerFast`` built from a fixed alphabet (no download: everything comes from local
configs). Recipes only use the generic ``AutoModelForCausalLM`` / ``AutoTokenizer`` interfaces.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ALPHABET = "0123456789+-*/=()<>,.:;?!'\" \n" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character of ``alphabet`` (plus pad/eos/unk); decoding concatenates characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate(specials + sorted(set(alphabet)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int = 384,
    max_position_embeddings: int = 256,
) -> LlamaForCausalLM:
    """A small Llama (RMSNorm, RoPE, SwiGLU) sized for CPU; weights tied to the embedding."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_policy(path: str | Path) -> tuple[nn.Module, PreTrainedTokenizerFast]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a folder (float32, eval mode, left padding)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model={str(path)!r} is not a saved causal LM folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


def tokenizer_exporter(tokenizer):
    """An ``export_fn`` for the Trainer: ``save_pretrained`` of the model (safetensors) and the tokenizer."""

    def export(model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    return export


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` (the reference policy of DPO / GRPO / SCoRe)."""
    import copy

    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference
