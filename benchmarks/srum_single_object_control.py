"""The single-object control (docs/srum.md, eleventh pass): models judged on the single-object VALIDATION prompts
(training-split "colour" and "size" prompts, 16 each, 2 noises; 20 Euler steps, guidance 3), the same prompts and
noise for every model: rule-judge accuracy (95% bootstrap interval), what the judge says is wrong, how many
components the asked colour breaks into, and a grid of the first sample of each prompt per model.

    python benchmarks/srum_single_object_control.py out.png outputs/unified-shapes-conv-single-control/pipeline \
        outputs/unified-shapes-conv-stage1/pipeline outputs/unified-shapes-conv-repair/pipeline   # ~4 min
"""
import json
import sys

import numpy as np
import torch

from selfgen import UnifiedPipeline
from selfgen.data.scenes import parse_prompt
from selfgen.eval.plots import save_image_grid
from selfgen.eval.scenes import detect_objects, failure_reason
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.unified import heldout_prompts

SEED, SAMPLES = 100, 2
prompts = [p for p in heldout_prompts(16, SEED, split="train") if parse_prompt(p).category in ("colour", "size")]
repeated = [p for p in prompts for _ in range(SAMPLES)]
out, tiles, labels = {}, [], []
for path in sys.argv[2:]:
    pipe = UnifiedPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    images = pipe.generate(repeated, num_inference_steps=20, guidance_scale=3.0,
                           generator=torch.Generator().manual_seed(SEED), output_type="np").images
    reasons = [failure_reason(image, prompt) for image, prompt in zip(images, repeated)]
    right = np.array([r is None for r in reasons], float)
    parts = [sum(d.colour == parse_prompt(p).objects[0].colour for d in detect_objects(image))
             for image, p in zip(images, repeated)]
    shapes = {}
    for shape in ("circle", "square", "triangle"):
        chosen = [r for r, p in zip(right, repeated) if parse_prompt(p).objects[0].shape == shape]
        shapes[shape] = round(float(np.mean(chosen)), 3)
    out[path] = {
        "accuracy": round(float(right.mean()), 3),
        "ci": [round(v, 3) for v in bootstrap_interval(np.mean, right, num_resamples=500)],
        "by_shape": shapes,
        "failures": {k: reasons.count(k) for k in ("colour", "shape", "size", "count") if reasons.count(k)},
        "asked_colour_components": {str(k): parts.count(k) for k in range(3)} | {"3+": sum(n >= 3 for n in parts)},
    }
    tiles.append(images[::SAMPLES])
    labels.append(path.split("/")[-2])
order = "; ".join(f"rows {2 * i + 1}-{2 * i + 2}: {label}" for i, label in enumerate(labels))
save_image_grid(np.concatenate(tiles), sys.argv[1], columns=13, tile_labels=prompts * len(labels),
                title=f"single-object validation prompts, first sample (seed 100, 20 steps, guidance 3). {order}")
print(json.dumps(out, indent=1))
