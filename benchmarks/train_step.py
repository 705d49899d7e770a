"""Steps/s of the digits DDPM example: the Trainer in fp32 and bf16 autocast vs a plain PyTorch loop.

    python benchmarks/train_step.py [--steps 60] [--warmup 10] [--batch_size 64]

Both loops train the same UNet (configs/ddpm_digits.yaml's architecture) on the same digits
batches with the same AdamW, clipping and loss; the plain loop is the minimal hand-written
``for batch: loss.backward(); clip; step`` with ``torch.autocast`` for bf16. The overhead ratio is
plain steps/s divided by Trainer steps/s (1.00 = no overhead; target <= 1.05). Timings are taken
between the end of warm-up step ``warmup`` and the last step, in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from selfgen.data.digits import DigitsDataset
from selfgen.train.config import load_config
from selfgen.train.ddpm import DDPMConfig, NoisePredictionObjective, build_unet
from selfgen.train.trainer import Trainer, TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_step_end(self, trainer, logs) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        self.end, self.steps = now, trainer.global_step - self.warmup


def trainer_steps_per_sec(config: DDPMConfig, warmup: int) -> float:
    set_seed(config.seed)
    timer = StepTimer(warmup)
    trainer = Trainer(
        build_unet(config),
        NoisePredictionObjective(DDPMScheduler()),
        DigitsDataset("train", config.resolution),
        config,
        export_fn=lambda model, directory: directory.mkdir(),
        callbacks=[timer],
    )
    trainer.train()
    return timer.steps / (timer.end - timer.start)


def plain_steps_per_sec(config: DDPMConfig, warmup: int) -> float:
    set_seed(config.seed)
    model = build_unet(config)
    objective = NoisePredictionObjective(DDPMScheduler())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    loader = DataLoader(DigitsDataset("train", config.resolution), batch_size=config.train_batch_size, shuffle=True, drop_last=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.mixed_precision == "bf16" else contextlib.nullcontext()
    step, start = 0, 0.0
    while step < config.max_train_steps:
        for batch in loader:
            with autocast:
                loss, _ = objective.compute_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == warmup:
                start = time.perf_counter()
            if step == config.max_train_steps:
                break
    return (step - warmup) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as output_dir:
        for precision in ("no", "bf16"):
            overrides = dict(
                output_dir=output_dir, export_dir=f"{output_dir}/export",  # never the bundled asset
                max_train_steps=args.steps, train_batch_size=args.batch_size,
                mixed_precision=precision, use_ema=False, checkpointing_steps=0, report_to=None, logging_steps=10**9,
                lr_scheduler="constant", lr_warmup_steps=0,
            )
            config = load_config(DDPMConfig, "configs/ddpm_digits.yaml", overrides)
            plain = plain_steps_per_sec(config, args.warmup)
            ours = trainer_steps_per_sec(config, args.warmup)
            rows.append((precision, ours, plain))
    fp32_trainer = rows[0][1]
    print(f"digits DDPM, batch {args.batch_size}, {args.steps - args.warmup} timed steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'precision':<10}{'Trainer steps/s':>17}{'plain steps/s':>15}{'overhead (plain/Trainer)':>26}{'speed-up vs fp32':>18}")
    for precision, ours, plain in rows:
        print(f"{precision:<10}{ours:>17.2f}{plain:>15.2f}{plain / ours:>26.3f}{ours / fp32_trainer:>18.2f}")


if __name__ == "__main__":
    main()
