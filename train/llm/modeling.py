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

from .prompts import prepare_tokenizer

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


TORCH_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_dtype(torch_dtype: str | torch.dtype) -> str | torch.dtype:
    """``"auto"`` (the checkpoint's own dtype), ``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``,
    ``"float16"``/``"fp16"`` or a ``torch.dtype``, as ``from_pretrained(dtype=...)`` takes it."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    name = DTYPE_ALIASES.get(torch_dtype, torch_dtype)
    if name not in TORCH_DTYPES:
        raise ValueError(f"torch_dtype must be one of {sorted(TORCH_DTYPES) + sorted(DTYPE_ALIASES)}, got {torch_dtype!r}")
    return TORCH_DTYPES[name]


def load_policy(path: str | Path, torch_dtype: str | torch.dtype = "float32") -> tuple[nn.Module, PreTrainedTokenizerFast]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a folder (eval mode, left padding), its weights in
    ``torch_dtype`` (:func:`resolve_dtype`; default float32, ``"auto"`` keeps the checkpoint's dtype)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model={str(path)!r} is not a saved causal LM folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(torch_dtype))
    return model.eval(), prepare_tokenizer(AutoTokenizer.from_pretrained(path))


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every ``nn.Dropout``'s probability to 0 (TRL's ``disable_dropout_in_model``), in place.

    The policy-gradient ratio ``pi / pi_old`` and the KL to the reference compare train-mode forwards
    with the eval-mode rollout scores: with dropout on they differ before any update (GPT-2 with dropout
    0.1: clip fraction 0.17 and KL 0.41 at the first GRPO step). Attention modules that hand a float
    ``attention_dropout`` to their kernel (Llama, Qwen2) get 0 as well."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model


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
