"""Does the SRUM judge read a relation's direction? On rendered held-out relational scenes (seed 3), the word its
next-token head predicts after "does the image show a {noun} ___" (true prompts only), among the four
relation words: right word, right axis (horizontal vs vertical), and the confusion table (docs/srum.md, ninth pass).

    python benchmarks/srum_relation_axis.py outputs/unified-shapes-conv-position/pipeline   # ~1 min on 1 core
"""
import collections, json, random, sys
import numpy as np, torch
from selfgen import UnifiedPipeline
from selfgen.data.scenes import RELATIONS, TOKEN_IDS, encode_question, question_about_prompt, to_pixels
from selfgen.train.unified import rendered_heldout_scenes
torch.set_grad_enabled(False)
model = UnifiedPipeline.from_pretrained(sys.argv[1]).transformer.eval()
ids_of = {r: TOKEN_IDS[r.split()[0]] for r in RELATIONS}
xs, qs, ats, truths = [], [], [], []
for spec, objects, image in rendered_heldout_scenes(800, random.Random(3)):
    if not spec.relation:
        continue
    ids = encode_question(question_about_prompt(spec.text()))
    xs.append(to_pixels(image)); qs.append(ids); ats.append(ids.index(ids_of[spec.relation]) - 1); truths.append(spec.relation)
logits = model(pixel_values=torch.stack(xs), question_ids=torch.tensor(qs)).logits
options = list(RELATIONS)
pred = [options[int(logits[i, at, [ids_of[r] for r in options]].argmax())] for i, at in enumerate(ats)]
axis = lambda r: "h" if r in ("left of", "right of") else "v"
confusion = collections.Counter(zip(truths, pred))
print(json.dumps({"n": len(pred), "word": float(np.mean([p == t for p, t in zip(pred, truths)])),
                  "axis": float(np.mean([axis(p) == axis(t) for p, t in zip(pred, truths)])),
                  "confusion": {f"{t} -> {p}": c for (t, p), c in sorted(confusion.items())}}))
