"""Is the unified model's generation path the reason it draws blobs? (docs/srum.md, thirteenth pass.)

Generators trained one after the other at the same CPU-time budget on SINGLE-OBJECT scenes only (the ``colour``
and ``size`` categories of the training split), with the same data stream (seed 0), batch, optimiser, lr, EMA,
flow-matching objective (``noisy_pair``: ``x_s = (1 - s) x0 + s eps``, ``s ~ U(0, 1)``, target ``eps - x0``, 10%
prompt dropout) and the same sampler (``UnifiedPipeline.generate``: 20 Euler steps, guidance 3):

* ``unified``: the unified model's generation path as ``configs/unified_shapes_conv_stage1.yaml`` builds it
  (dim 128, 4 MoT layers, 4x4 generation patches, 32-channel 3x3 conv stem/head), understanding loss off;
* ``unified_p2``: the same with 2x2 generation patches (256 image tokens instead of 64);
* ``unified_blocks``: 4x4 patches with 2 timestep-conditioned residual conv blocks (``ResnetBlock2D``, 32 channels,
  zero-initialised) after the conv stem and 2 before the conv head (``generation_conv_blocks: 2``);
* ``unet``: a reference generator, a diffusers ``UNet2DConditionModel`` (32/64/128 channels, cross-attention on
  the prompt's token embeddings + learned positions, padding masked), the same inputs and outputs.

Each arm is judged on the 26 single-object VALIDATION prompts x 2 noises of ``srum_single_object_control.py``
(training-split prompts, fresh noise; the same prompts and noise for every arm) by the rule judge.

    OMP_NUM_THREADS=1 python benchmarks/srum_generator_reference.py outputs/diag/reference 450 0 unified unet unified_p2
    # args: output folder, CPU seconds per arm, training seed (data order and initialisation), arms (one after the
    # other). Writes <arm>.json, <arm>.pt, <arm>_images.npy, <arm>.png.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch.utils.data import DataLoader

from selfgen.data.scenes import MAX_PROMPT_TOKENS, PAD_ID, VOCAB, ScenesDataset
from selfgen.eval.plots import save_image_grid
from selfgen.models.unified import UnifiedTransformer
from selfgen.train.losses import noisy_pair
from selfgen.train.unified import build_pipeline, collate, empty_prompt_like, single_object_validation

BATCH, LR, WARMUP, EMA, CFG_DROPOUT = 32, 1e-3, 30, 0.99, 0.1
VAL_SEED, VAL_SAMPLES = 100, 2


class ReferenceGenerator(ModelMixin, ConfigMixin):
    """``v_theta(x_sigma, sigma, prompt)`` from a small conditional UNet that cross-attends to the prompt's token
    embeddings (+ learned positions); padding is masked. Called like ``UnifiedTransformer`` for generation."""

    @register_to_config
    def __init__(self, vocab_size: int = len(VOCAB), sample_size: int = 32, in_channels: int = 3, text_dim: int = 128) -> None:
        super().__init__()
        self.token_embed = torch.nn.Embedding(vocab_size, text_dim)
        self.text_pos = torch.nn.Parameter(torch.randn(1, MAX_PROMPT_TOKENS, text_dim) * 0.02)
        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            block_out_channels=(32, 64, 128), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=text_dim, attention_head_dim=16, norm_num_groups=8,
        )

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, prompt_ids: torch.Tensor) -> BaseOutput:
        text = self.token_embed(prompt_ids) + self.text_pos[:, : prompt_ids.shape[1]]
        mask = (prompt_ids != PAD_ID).to(text.dtype)
        timestep = timestep.expand(sample.shape[0]) if timestep.ndim == 0 else timestep
        velocity = self.unet(sample, timestep, encoder_hidden_states=text, encoder_attention_mask=mask).sample
        return BaseOutput(sample=velocity)


def build(arm: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arm == "unet":
        return ReferenceGenerator()
    patch, blocks = {"unified": (4, 0), "unified_p2": (2, 0), "unified_blocks": (4, 2)}[arm]
    return UnifiedTransformer(dim=128, num_layers=4, num_heads=4, patch_size=4, generation_patch_size=patch,
                              generation_conv_channels=32, generation_conv_blocks=blocks)


def train(arm: str, cpu_seconds: float, seed: int) -> tuple[torch.nn.Module, dict]:
    """Flow matching on single-object scenes until ``cpu_seconds`` of process CPU time are spent."""
    model = build(arm, seed)
    ema = build(arm, seed).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    data = ScenesDataset(num_examples=200000, seed=seed, categories=("colour", "size"))
    loader = iter(DataLoader(data, batch_size=BATCH, shuffle=False, collate_fn=collate))
    torch.manual_seed(seed)
    start_cpu, start_wall, losses, step = time.process_time(), time.time(), [], 0
    while time.process_time() - start_cpu < cpu_seconds:
        batch = next(loader)
        images, ids = batch["pixel_values"], batch["prompt_ids"]
        drop = torch.rand(len(images)) < CFG_DROPOUT
        ids = torch.where(drop[:, None], empty_prompt_like(ids), ids)
        noisy, sigmas, target = noisy_pair(images)
        loss = F.mse_loss(model(sample=noisy, timestep=sigmas * 1000, prompt_ids=ids).sample, target)
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - EMA)
        losses.append(loss.item())
        step += 1
    record = {
        "arm": arm, "seed": seed, "steps": step, "cpu_s": round(time.process_time() - start_cpu, 1),
        "wall_s": round(time.time() - start_wall, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first_50": round(float(np.mean(losses[:50])), 4), "loss_last_50": round(float(np.mean(losses[-50:])), 4),
    }
    return ema.eval(), record


def validate(model: torch.nn.Module) -> tuple[dict, np.ndarray, list[str]]:
    """Rule-judge accuracy on the single-object validation prompts (``train.unified.single_object_validation``)."""
    pipe = build_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    return single_object_validation(pipe, VAL_SEED, VAL_SAMPLES)


def main() -> None:
    out, cpu_seconds, seed, arms = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    out.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        model, record = train(arm, cpu_seconds, seed)
        torch.save(model.state_dict(), out / f"{arm}.pt")
        with torch.no_grad():
            metrics, images, prompts = validate(model)
        record.update(metrics)
        (out / f"{arm}.json").write_text(json.dumps(record, indent=1))
        np.save(out / f"{arm}_images.npy", images)
        print(json.dumps({k: v for k, v in record.items() if k != "per_image_right"}), flush=True)
        save_image_grid(images, out / f"{arm}.png", columns=VAL_SAMPLES * 13, tile_labels=[p for p in prompts for _ in range(2)],
                        title=f"{arm}: {record['steps']} steps, {record['cpu_s']} CPU s; single-object validation "
                              f"prompts x 2 noises (seed 100, 20 steps, guidance 3); accuracy {record['accuracy']}")


if __name__ == "__main__":
    main()
