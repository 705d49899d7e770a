"""peft LoRA adapters for any ``nn.Module`` (diffusers models included), and merging them for export.

``add_lora_adapters`` injects rank-``r`` adapters ``W + (alpha / r) B A`` (Hu et al., 2021, eq. 3)
into the targeted Linear/Conv layers and freezes everything else. ``merge_lora_adapters`` folds the
adapters into the base weights and returns a plain model of the same class and config, so the
exported pipeline loads without peft.
"""

from __future__ import annotations

import copy

from torch import nn

LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _require_peft():
    try:
        import peft
    except ImportError as error:
        raise ImportError("lora_rank > 0 needs peft: `pip install selfgen[peft]`") from error
    return peft


def default_lora_targets(model: nn.Module) -> list[str]:
    """Full names of every Linear and Conv2d layer of ``model`` whose weight is its own.

    A layer whose weight is tied to another module (a causal LM's ``lm_head`` sharing the input
    embedding) is left out: merging an adapter into it would also change the tied embedding.
    """
    owners: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        owners[id(param)] = owners.get(id(param), 0) + 1
    return [
        name for name, module in model.named_modules()
        if isinstance(module, LORA_LAYER_TYPES) and name and owners[id(module.weight)] == 1
    ]


def add_lora_adapters(
    model: nn.Module, rank: int, alpha: float | None = None, target_modules: list[str] | None = None
) -> nn.Module:
    """Inject LoRA adapters in place and leave only them trainable."""
    peft = _require_peft()
    targets = target_modules or default_lora_targets(model)
    if not targets:
        raise ValueError("LoRA found no Linear/Conv2d layer to adapt; pass lora_target_modules")
    lora_config = peft.LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, init_lora_weights=True)
    peft.inject_adapter_in_model(lora_config, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def merge_lora_adapters(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without adapters whose weights are ``W + (alpha / r) B A``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(model)
    for module in merged.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    state_dict = {
        key.replace(".base_layer.", "."): value
        for key, value in merged.state_dict().items()
        if "lora_" not in key
    }
    # diffusers models build from their config with `from_config`, transformers models with `_from_config`
    build = getattr(type(model), "from_config", None) or getattr(type(model), "_from_config", None)
    if build is None or not hasattr(model, "config"):
        raise ValueError(f"cannot rebuild {type(model).__name__} without adapters: it has no config/from_config")
    plain = build(model.config)
    plain.load_state_dict(state_dict)
    return plain.to(next(model.parameters()).device)
