"""Accuracy against training steps of a generation run, from its resumable checkpoints (docs/srum.md, fourteenth pass).

Each ``checkpoints/step-N`` of a ``selfgen train unified`` run is rebuilt as the model the run would export at that
step (the EMA weights, as the export does) and judged, with the rule judge, on

* the single-object VALIDATION set (``train.unified.single_object_validation``: 26 training-split ``colour``/``size``
  prompts x 2 noises, seed 100, 20 Euler steps, guidance 3; the same images as the eleventh-thirteenth passes), and
* all categories on validation: ``heldout_prompts(8, 100, split="train")`` (8 training-split prompts per category,
  one noise each, the same generation settings), accuracy per category and overall.

Writes ``step-N.json`` (the reports, per-image verdicts included, for paired comparisons), ``step-N.npz`` (the images,
to re-judge without regenerating) and ``step-N.png`` (first
sample of each single-object prompt, then the all-category images) per checkpoint; skips a checkpoint whose json
exists, so it can be rerun while the run trains; steps named after the run folder limit it to those checkpoints.
The run folder may instead be an exported pipeline (``assets/unified-shapes``), judged the same way. Prints the curve.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/srum_checkpoint_curve.py outputs/curve/blocks-long \
        outputs/unified-shapes-conv-blocks-long 500 1000 2000   # ~30 CPU s per checkpoint (10 min at nice 15 here)
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from selfgen import UnifiedPipeline
from selfgen.eval.plots import save_image_grid
from selfgen.train.unified import (
    checkpoint_pipeline, compositional_accuracy, heldout_prompts, single_object_validation,
)

SEED, PER_CATEGORY = 100, 8


def load(folder: Path) -> UnifiedPipeline:
    """An exported pipeline folder as it is, a ``checkpoints/step-N`` folder as its EMA model (with the run's frozen
    autoencoder when it generates latents)."""
    if (folder / "model_index.json").is_file():
        return UnifiedPipeline.from_pretrained(folder)
    return checkpoint_pipeline(folder)


def evaluate(checkpoint: Path, out: Path) -> dict:
    pipe = load(checkpoint)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        single, single_images, prompts = single_object_validation(pipe, SEED)
        all_prompts = heldout_prompts(PER_CATEGORY, SEED, split="train")
        overall, all_images, _ = compositional_accuracy(pipe, all_prompts, seed=SEED, num_inference_steps=20, guidance_scale=3.0)
    record = {"checkpoint": str(checkpoint), "single_object": single, "all_categories": overall}
    (out / f"{checkpoint.name}.json").write_text(json.dumps(record, indent=1))
    np.savez_compressed(out / f"{checkpoint.name}.npz", single=single_images, all_categories=all_images)
    save_image_grid(np.concatenate([single_images[::2], all_images]), out / f"{checkpoint.name}.png", columns=8,
                    tile_labels=prompts + all_prompts,
                    title=f"{checkpoint.name}: single-object validation (first noise), then 8 validation prompts per "
                          f"category (seed {SEED}, 20 steps, guidance 3)")
    return record


def main() -> None:
    out, run, steps = Path(sys.argv[1]), Path(sys.argv[2]), {int(step) for step in sys.argv[3:]}
    out.mkdir(parents=True, exist_ok=True)
    if (run / "model_index.json").is_file():  # one exported pipeline (e.g. assets/unified-shapes, for comparison)
        checkpoints = [run]
    else:
        checkpoints = sorted((run / "checkpoints").glob("step-*"), key=lambda c: int(c.name.split("-")[1]))
        checkpoints = [c for c in checkpoints if not steps or int(c.name.split("-")[1]) in steps]
    print("| step | single-object accuracy [95%] | one component (of 52) | all categories overall | per category |")
    for checkpoint in checkpoints:
        done = out / f"{checkpoint.name}.json"
        record = json.loads(done.read_text()) if done.exists() else evaluate(checkpoint, out)
        single, overall = record["single_object"], record["all_categories"]
        categories = " / ".join(f"{k} {v:.2f}" for k, v in overall.items() if k not in ("overall", "pooled", "pooled_se"))
        print(f"| {checkpoint.name} | {single['accuracy']:.3f} {single['ci']} | {single['asked_colour_components']['1']} "
              f"| {overall['overall']:.3f} | {categories} |", flush=True)


if __name__ == "__main__":
    main()
