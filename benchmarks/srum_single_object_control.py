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

from selfgen import UnifiedPipeline
from selfgen.eval.plots import save_image_grid
from selfgen.train.unified import single_object_validation

SAMPLES = 2
out, tiles, labels = {}, [], []
for path in sys.argv[2:]:
    pipe = UnifiedPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    report, images, prompts = single_object_validation(pipe, samples_per_prompt=SAMPLES)
    out[path] = {k: v for k, v in report.items() if k != "per_image_right"}
    tiles.append(images[::SAMPLES])
    labels.append(path.split("/")[-2])
order = "; ".join(f"rows {2 * i + 1}-{2 * i + 2}: {label}" for i, label in enumerate(labels))
save_image_grid(np.concatenate(tiles), sys.argv[1], columns=13, tile_labels=prompts * len(labels),
                title=f"single-object validation prompts, first sample (seed 100, 20 steps, guidance 3). {order}")
print(json.dumps(out, indent=1))
