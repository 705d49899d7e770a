"""Two judges on the same rendered held-out scenes, paired by scene: whole-prompt and region accuracy (``P(yes) >
0.5``) of each and their difference (B minus A) with a 95% bootstrap interval over scenes (docs/srum.md, seventeenth
pass). Default scenes: seed 11, the validation scenes that selection reads (seed 7 are the test scenes).

    python benchmarks/srum_judge_paired.py outputs/A/pipeline outputs/B/pipeline [seed]   # ~2 min per judge, one core
"""
import json
import sys

import numpy as np

from selfgen import UnifiedPipeline
from selfgen.eval.statistics import bootstrap_interval
from selfgen.train.unified import verification_scores

NUM_SCENES = 400
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 11
right = []
for path in sys.argv[1:3]:
    pipe = UnifiedPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    probability, truth, _ = verification_scores(pipe, NUM_SCENES, seed)
    right.append((probability > 0.5) == truth)  # (scenes, 4): own prompt, hard negative, two region questions
rows = np.concatenate(right, axis=1).astype(np.float64)  # columns 0-3: judge A, 4-7: judge B
out = {"seed": seed, "num_scenes": NUM_SCENES, "A": sys.argv[1], "B": sys.argv[2]}
for name, columns in (("whole_prompt", [0, 1]), ("region", [2, 3])):
    a, b = columns, [c + 4 for c in columns]

    def difference(rows: np.ndarray, a: list[int] = a, b: list[int] = b) -> float:
        return float(rows[:, b].mean() - rows[:, a].mean())

    low, high = bootstrap_interval(difference, rows, num_resamples=1000)
    out[name] = {"A": rows[:, a].mean(), "B": rows[:, b].mean(), "B_minus_A": difference(rows), "low": low, "high": high}
print(json.dumps(out, indent=1))
