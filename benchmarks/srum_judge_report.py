"""The SRUM judge on rendered held-out scenes: ``judge_verification(pipe, 400, seed=7)`` (95% bootstrap intervals)
and where its whole-prompt answers go wrong: the accuracy on the scene's own prompt per category and on the hard
negative per changed attribute, on the same scenes and questions (docs/srum.md, tenth pass).

    python benchmarks/srum_judge_report.py outputs/unified-shapes-conv-relation/pipeline   # ~2 min on one core
    python benchmarks/srum_judge_report.py outputs/unified-shapes-latent-repair/pipeline 11   # validation scenes (seed 11)

The optional second argument is the scenes' seed: 7 (default) are the test scenes the passes report, 11 the
validation scenes that selection reads (as benchmarks/srum_judge_threshold.py does).
"""
import collections, json, random, sys
import numpy as np
from selfgen import UnifiedPipeline
from selfgen.data.scenes import perturb_prompt, question_about_prompt, region_questions
from selfgen.train.unified import _perturbation_kind, answer_in_batches, judge_verification, rendered_heldout_scenes

pipe = UnifiedPipeline.from_pretrained(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
num_scenes, seed = 400, int(sys.argv[2]) if len(sys.argv) > 2 else 7
out = {"seed": seed, "judge_verification": {k: round(v, 3) for k, v in judge_verification(pipe, num_scenes, seed=seed).items()}}
rng = random.Random(f"verification-{seed}")  # the same scenes and questions as judge_verification draws
images, questions, groups = [], [], []
for spec, objects, image in rendered_heldout_scenes(num_scenes, rng):
    negative = perturb_prompt(spec, rng)
    region_questions(objects, rng)  # drawn there too: keeps the random stream aligned
    images += [image, image]
    questions += [question_about_prompt(spec.text()), question_about_prompt(negative.text())]
    groups += [("yes", spec.category), ("no", _perturbation_kind(spec, negative))]
p_yes = np.concatenate([batch.cpu().numpy() for batch in answer_in_batches(pipe.yes_probability, images, questions)])
right = collections.defaultdict(list)
for (answer, group), p in zip(groups, p_yes):
    right[f"{answer}|{group}"].append((p > 0.5) == (answer == "yes"))
out["whole_prompt_accuracy_by_group"] = {k: [round(float(np.mean(v)), 3), len(v)] for k, v in sorted(right.items())}
print(json.dumps(out, indent=1))
