"""Whole-prompt verification with a threshold chosen on VALIDATION scenes: ``P(yes)`` of the judge on 400 rendered
held-out-prompt scenes of seed 11 (validation) picks the threshold with the best whole-prompt accuracy
(``whole_prompt_threshold``); the test scenes (seed 7, the ninth/tenth passes' report) are scored once, at 0.5
and at that threshold (docs/srum.md, eleventh pass).

    python benchmarks/srum_judge_threshold.py outputs/unified-shapes-conv-repair/pipeline   # ~3 min, one core
"""
import json
import sys

from selfgen import UnifiedPipeline
from selfgen.train.unified import judge_verification, verification_scores, whole_prompt_threshold

VALIDATION_SEED, TEST_SEED, NUM_SCENES = 11, 7, 400
pipe = UnifiedPipeline.from_pretrained(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
probability, truth, _ = verification_scores(pipe, NUM_SCENES, VALIDATION_SEED)
threshold = whole_prompt_threshold(probability, truth)
validation = {t: float(((probability[:, :2] > t) == truth[:, :2]).mean()) for t in (0.5, threshold)}
out = {"threshold": threshold, "validation_whole_prompt_accuracy": validation}
for name, t in (("test_at_0.5", 0.5), ("test_at_threshold", threshold)):
    result = judge_verification(pipe, NUM_SCENES, seed=TEST_SEED, threshold=t)
    out[name] = {k: round(v, 3) for k, v in result.items() if k.startswith(("whole_prompt", "region"))}
print(json.dumps(out, indent=1))
