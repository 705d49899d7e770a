"""Does the SRUM judge read position? Diagnostics of a unified model's understanding path (docs/srum.md, ninth pass).

    python benchmarks/srum_judge_probes.py outputs/unified-shapes-conv/pipeline

Prints JSON: (1) its image position table against the tokens' content (norms, mean cosine between positions);
(2) logistic probes of quadrant occupancy from its image tokens per layer, laid out by position (``flat``) and
averaged (``mean``); (3) the same from the answer token of "is there an object in the {r}?"; (5) "where" read off
the next-token head (the region word of a true "is there a {noun} in the ___", the relation word of a true
relational prompt; 4-way, chance 0.25); (4) the share of each question kind in the stage-3 judge mixture;
(6) a 4-way probe from one token's normed hidden state to its own quadrant, per layer. About 2 minutes on 1 core.
"""

import collections, json, random, sys
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from selfgen import UnifiedPipeline
from selfgen.data.scenes import (REGIONS, ScenesDataset, VOCAB, parse_prompt, question_in_region, render_scene,
                                 sample_scene, sample_training_prompt, to_pixels, encode_question, PAD_ID)
from selfgen.models.unified import understanding_mask
from selfgen.train.unified import heldout_prompts

torch.set_grad_enabled(False)
model = UnifiedPipeline.from_pretrained(sys.argv[1]).transformer.eval()
out = {}

# (1) position embedding vs the content part of a token
pixels = []
def scenes(n, split, seed):
    rng = random.Random(seed); pool = heldout_prompts(10**6) if split == "heldout" else None
    rows = []
    for _ in range(n):
        prompt = rng.choice(pool) if pool else sample_training_prompt(rng, "train")
        spec = parse_prompt(prompt); objects = sample_scene(spec, rng)
        rows.append((spec, objects, render_scene(objects)))
    return rows
train_scenes, test_scenes = scenes(1500, "train", 11), scenes(500, "heldout", 12)

def tokens(rows):
    x = torch.stack([to_pixels(image) for _, _, image in rows])
    emb = model._embed_clean_image(x, torch.float32)
    content = emb - model.und_image_pos
    hidden, layers = emb, [emb]
    mask = torch.ones(len(rows), 1, emb.shape[1], emb.shape[1], dtype=torch.bool)
    for block in model.blocks:
        hidden = block(hidden, emb.shape[1], mask); layers.append(hidden)
    return content, layers

content, _ = tokens(test_scenes[:200])
pos = model.und_image_pos[0]
out["position_embedding"] = {
    "num_tokens": pos.shape[0], "pos_norm": float(pos.norm(dim=-1).mean()),
    "content_norm": float(content.norm(dim=-1).mean()),
    "content_std_across_scenes": float(content.std(0).norm(dim=-1).mean()),
    "pos_cosine_offdiag_mean": float((torch.nn.functional.normalize(pos, dim=-1) @ torch.nn.functional.normalize(pos, dim=-1).T)[~torch.eye(pos.shape[0], dtype=bool)].mean()),
}

def occupancy(rows):
    return np.array([[any(o.region == r for o in objects) for r in REGIONS] for _, objects, _ in rows])
ytr, yte = occupancy(train_scenes), occupancy(test_scenes)
_, Ltr = tokens(train_scenes); _, Lte = tokens(test_scenes)
grid = int(len(pos) ** 0.5)
probes = {}
for layer in range(len(Ltr)):
    for name, f in (("flat", lambda h: h.flatten(1)), ("mean", lambda h: h.mean(1))):
        Xtr, Xte = f(Ltr[layer]).numpy(), f(Lte[layer]).numpy()
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
        aucs = []
        for q in range(4):
            clf = LogisticRegression(C=0.1, max_iter=2000).fit((Xtr - mu) / sd, ytr[:, q])
            aucs.append(roc_auc_score(yte[:, q], clf.decision_function((Xte - mu) / sd)))
        probes[f"layer{layer}_{name}"] = round(float(np.mean(aucs)), 3)
out["occupancy_probe_auc_per_quadrant_mean"] = probes
out["occupancy_base_rate"] = ytr.mean(0).round(3).tolist()

# (3) the answer token of the occupancy question, last layer: is the asked quadrant's occupancy there?
def answer_states(rows, seed):
    rng = random.Random(seed); xs, qs, ys = [], [], []
    for _, objects, image in rows:
        r = rng.choice(REGIONS); xs.append(to_pixels(image)); qs.append(encode_question(question_in_region(None, r)))
        ys.append(any(o.region == r for o in objects))
    q = torch.tensor(qs); text, valid = model._embed_text(q); img = model._embed_clean_image(torch.stack(xs), torch.float32)
    h = model._trunk(torch.cat([img, text], 1), img.shape[1] + text.shape[1], understanding_mask(valid, img.shape[1]))
    a = model.und_norm_out(h[:, -1]); logits = model.lm_head(a)
    p = logits[:, [VOCAB.index("yes"), VOCAB.index("no")]].softmax(-1)[:, 0]
    return a.numpy(), np.array(ys), p.numpy()
Atr, atr, _ = answer_states(train_scenes, 1); Ate, ate, pte = answer_states(test_scenes, 2)
clf = LogisticRegression(C=0.1, max_iter=2000).fit(Atr, atr)
out["answer_token_probe_auc"] = round(float(roc_auc_score(ate, clf.decision_function(Ate))), 3)
out["answer_yes_probability_auc"] = round(float(roc_auc_score(ate, pte)), 3)

# (5) "where" read off the next-token head: the region word of a true "is there a {noun} in the ___" (4-way,
# right if the named region holds that noun) and the relation word of a true relational prompt (4-way)
from selfgen.data.scenes import TOKEN_IDS, question_about_prompt, RELATIONS
def next_word_accuracy(rows, seed):
    rng = random.Random(seed); region_ids = [TOKEN_IDS[r] for r in REGIONS]
    relation_ids = [TOKEN_IDS[r.split()[0]] for r in RELATIONS]
    xs, qs, positions, choices, rights = [], [], [], [], []
    for spec, objects, image in rows:
        obj = rng.choice(objects); noun = f"{obj.colour} {obj.shape}"
        ids = encode_question(question_in_region(noun, obj.region))
        xs.append(to_pixels(image)); qs.append(ids); positions.append(len(ids) - 3); choices.append(region_ids)
        rights.append({TOKEN_IDS[o.region] for o in objects if f"{o.colour} {o.shape}" == noun})
        if spec.relation:
            ids = encode_question(question_about_prompt(spec.text()))
            at = ids.index(TOKEN_IDS[spec.relation.split()[0]]) - 1
            xs.append(to_pixels(image)); qs.append(ids); positions.append(at); choices.append(relation_ids)
            rights.append({TOKEN_IDS[spec.relation.split()[0]]})
    logits = model(pixel_values=torch.stack(xs), question_ids=torch.tensor(qs)).logits
    hits = {"region": [], "relation": []}
    for row, (at, options, right) in enumerate(zip(positions, choices, rights)):
        best = options[int(logits[row, at, options].argmax())]
        hits["region" if options is region_ids else "relation"].append(best in right)
    return {k: (round(float(np.mean(v)), 3), len(v)) for k, v in hits.items()}
out["next_word_where_accuracy"] = next_word_accuracy(test_scenes, 3)

# (4) the training mixture of configs/unified_shapes_conv_judge.yaml
data = ScenesDataset(200000, "train", seed=2, questions_per_image=1, scrambled_fraction=0.05, region_fraction=0.2,
                     occupancy_fraction=0.2, prompt_fraction=0.4)
counts = collections.Counter()
n = 3000
for i in range(n):
    item = data[i]; ids = item["question_ids"][0].tolist(); words = [VOCAB[t] for t in ids if t != PAD_ID][1:-1]
    answer = VOCAB[item["answer_id"][0]]; text = " ".join(words); prompt = item["prompt"]
    if text.startswith("does the image show"):
        asked = text[len("does the image show "):]
        if answer == "yes":
            counts["whole_prompt_yes"] += 1
        elif asked == prompt:
            counts["whole_prompt_scrambled_no"] += 1
        else:
            a, b = parse_prompt(prompt), parse_prompt(asked)
            kind = "relation" if a.relation != b.relation else "object"
            counts[f"whole_prompt_no_{kind}"] += 1
        if parse_prompt(prompt).relation and answer == "yes":
            counts["whole_prompt_yes_with_relation"] += 1
    elif "an object in the" in text:
        counts[f"occupancy_{answer}"] += 1
    elif " in the " in text:
        counts[f"noun_in_region_{answer}"] += 1
    else:
        counts[text.split()[0] + "_" + ("count" if text.startswith("how") else "exists")] += 1
out["training_mixture_share"] = {k: round(v / n, 4) for k, v in sorted(counts.items())}
rng = random.Random(5)  # (6) each token's own quadrant
images = torch.stack([to_pixels(render_scene(sample_scene(parse_prompt(sample_training_prompt(rng)), rng))) for _ in range(600)])
emb6 = model._embed_clean_image(images, torch.float32)
grid = int(emb6.shape[1] ** 0.5)
quadrant = np.array([(r >= grid // 2) * 2 + (c >= grid // 2) for r in range(grid) for c in range(grid)])
background = (images.reshape(600, 3, grid, 32 // grid, grid, 32 // grid) > -1).any(1).any(2).any(-1).reshape(600, -1).numpy() == False
mask = torch.ones(600, 1, emb6.shape[1], emb6.shape[1], dtype=torch.bool)
hidden = emb6
for layer, block in enumerate(list(model.blocks) + [None]):
    normed = (block.norm1[0](hidden) if block is not None else model.und_norm_out(hidden)).numpy()
    X = normed.reshape(-1, normed.shape[-1]); y = np.tile(quadrant, 600); bg = background.reshape(-1)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(X[:400 * len(quadrant)], y[:400 * len(quadrant)])
    pred = clf.predict(X[400 * len(quadrant):]); yt = y[400 * len(quadrant):]; bt = bg[400 * len(quadrant):]
    out.setdefault("token_quadrant_probe", {})[f"layer{layer}"] = {"all": round(float((pred == yt).mean()), 3), "object_tokens": round(float((pred == yt)[~bt].mean()), 3),
                            "background_tokens": round(float((pred == yt)[bt].mean()), 3)}
    if block is not None:
        hidden = block(hidden, emb6.shape[1], mask)

print(json.dumps(out, indent=1))
