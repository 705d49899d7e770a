"""Seconds per SRUM round, split into generate / self-reward / update, in fp32 and bf16 autocast.

    python benchmarks/srum.py [--model assets/unified-shapes] [--prompts 64] [--steps 20] [--repeats 2]

Both precisions run the same round (same prompts, seeds, sampler steps and number of updates) on
the same checkpoint, one after another in one process; the first round of each precision is a
warm-up and is not timed. The ratio column is fp32 seconds divided by bf16 seconds (> 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selfgen.pipelines.unified import UnifiedPipeline
from selfgen.train.srum import SRUMConfig
from selfgen.train.srum_shapes import shapes_trainer

PHASES = ("seconds_generate", "seconds_reward", "seconds_update")


def time_round(model: str, mixed_precision: str, prompts: int, steps: int, repeats: int) -> dict[str, float]:
    """Mean seconds per phase over ``repeats`` timed rounds (after one warm-up round)."""
    totals = dict.fromkeys(PHASES, 0.0)
    with tempfile.TemporaryDirectory() as directory:
        config = SRUMConfig(
            pretrained=model,
            output_dir=directory,
            export_dir=str(Path(directory) / "final"),
            mixed_precision=mixed_precision,
            prompts_per_round=prompts,
            max_train_steps=steps,
            train_batch_size=min(32, prompts),
            num_rounds=repeats + 1,
            checkpointing_steps=0,
            report_to=None,
        )
        umm = UnifiedPipeline.from_pretrained(model)
        umm.set_progress_bar_config(disable=True)
        trainer = shapes_trainer(umm, config)
        for round_index in range(1, repeats + 2):
            logs = trainer.run_round(round_index)
            if round_index > 1:
                for phase in PHASES:
                    totals[phase] += logs[phase] / repeats
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/unified-shapes")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="updates per round")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results = {
        precision: time_round(args.model, precision, args.prompts, args.steps, args.repeats)
        for precision in ("no", "bf16")
    }
    print(f"SRUM round: {args.prompts} prompts, {args.steps} updates, mean of {args.repeats} rounds")
    print(f"{'phase':<10} {'fp32 s':>8} {'bf16 s':>8} {'fp32/bf16':>10}")
    for phase in PHASES + ("total",):
        fp32 = sum(results["no"].values()) if phase == "total" else results["no"][phase]
        bf16 = sum(results["bf16"].values()) if phase == "total" else results["bf16"][phase]
        print(f"{phase.removeprefix('seconds_'):<10} {fp32:>8.2f} {bf16:>8.2f} {fp32 / bf16:>10.2f}")


if __name__ == "__main__":
    main()
