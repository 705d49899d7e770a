"""Held-out compositional accuracy of generators, paired by prompt over noise seeds (docs/srum.md, twelfth pass).

Every model draws the same held-out prompts (``heldout_prompts(16, seed=0)``, the 57 prompts ``selfgen eval srum``
uses) from the same noise: ``SAMPLES`` images per prompt per noise seed, at the SRUM loop's sampler settings (16 Euler
steps, guidance 3; seed 0 is exactly ``selfgen eval srum --samples_per_prompt 4``'s generation). The rule judge
scores each image; per model: pooled and per-category accuracy, single-object (``colour``/``size``) accuracy; per
model after the first: the difference to the first, per prompt (mean over all seeds' images), with its standard
error over prompts, and per seed. Writes ``<out>.json`` and ``<out>.png`` (first sample of each prompt, one row per
model, seed 0). Generation only: the judge is not re-measured (compare the understanding weights instead).

    python benchmarks/srum_heldout_paired.py heldout outputs/unified-shapes-conv-repair-long/pipeline \
        outputs/unified-shapes-conv-adaln/pipeline        # ~6 min per model here (2 seeds x 228 images)
"""
import json
import sys

import numpy as np
import torch

from selfgen import UnifiedPipeline
from selfgen.data.scenes import parse_prompt
from selfgen.eval.plots import save_image_grid
from selfgen.eval.scenes import judge_image
from selfgen.eval.statistics import mean_difference, standard_error
from selfgen.train.unified import heldout_prompts

SEEDS, SAMPLES, SINGLE = (0, 1), 4, ("colour", "size")


def judged(path: str, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(seeds, prompts, SAMPLES)`` rule-judge verdicts and the first image of each prompt at seed 0."""
    pipe = UnifiedPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    repeated = [prompt for prompt in prompts for _ in range(SAMPLES)]
    verdicts, first = [], None
    for seed in SEEDS:
        images = pipe.generate(repeated, num_inference_steps=16, guidance_scale=3.0,
                               generator=torch.Generator().manual_seed(seed), output_type="np").images
        verdicts.append([judge_image(image, prompt) for image, prompt in zip(images, repeated)])
        first = images[::SAMPLES] if first is None else first
        print(path, "seed", seed, float(np.mean(verdicts[-1])), file=sys.stderr, flush=True)
    return np.array(verdicts, dtype=float).reshape(len(SEEDS), len(prompts), SAMPLES), first


def summary(right: np.ndarray, categories: np.ndarray) -> dict:
    per_prompt = right.mean((0, 2))
    single = np.isin(categories, SINGLE)
    return {
        "pooled": round(float(per_prompt.mean()), 4), "pooled_se": round(standard_error(per_prompt), 4),
        "per_seed": [round(float(r.mean()), 4) for r in right],
        "single_object": round(float(per_prompt[single].mean()), 4),
        "single_object_se": round(standard_error(per_prompt[single]), 4),
        "per_category": {c: round(float(per_prompt[categories == c].mean()), 3) for c in dict.fromkeys(categories)},
    }


def main(out: str, paths: list[str]) -> None:
    prompts = heldout_prompts(16, 0)
    categories = np.array([parse_prompt(prompt).category for prompt in prompts])
    single = np.isin(categories, SINGLE)
    results, rows = {"prompts": len(prompts), "seeds": list(SEEDS), "samples_per_seed": SAMPLES, "models": {}}, []
    reference = None
    for path in paths:
        right, first = judged(path, prompts)
        rows.append(first)
        record = summary(right, categories)
        if reference is not None:
            diff, se = mean_difference(reference.mean((0, 2)), right.mean((0, 2)))
            sdiff, sse = mean_difference(reference.mean((0, 2))[single], right.mean((0, 2))[single])
            record["paired_vs_first"] = {"difference": round(diff, 4), "se": round(se, 4),
                                         "single_object": round(sdiff, 4), "single_object_se": round(sse, 4),
                                         "per_seed": [round(mean_difference(a.mean(1), b.mean(1))[0], 4)
                                                      for a, b in zip(reference, right)]}
        reference = right if reference is None else reference
        results["models"][path] = record
    save_image_grid(np.concatenate(rows), f"{out}.png", columns=19, tile_labels=prompts * len(paths),
                    title="held-out prompts, first sample (seed 0; 16 steps, guidance 3); rows: " + " | ".join(paths))
    print(json.dumps(results, indent=1))
    with open(f"{out}.json", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
