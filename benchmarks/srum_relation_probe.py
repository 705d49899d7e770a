"""Why does the SRUM judge not read a relation's direction? (docs/srum.md, tenth pass)

    python benchmarks/srum_relation_probe.py outputs/unified-shapes-conv-position/pipeline [--mixture]

Prints JSON. (1) Is the direction decidable from the judge's own states? Logistic probes, fitted on rendered
training-split relational scenes (spatial and complex prompts) and tested on held-out ones, per layer, from
(a) the state that predicts the relation word of the true prompt "does the image show a {A} ___" (it has read the
image and the first object's words; label: is A left of / above the other object, per axis), (b) the two image
tokens that hold the objects' centres, side by side (is the direction in the image tokens, given which objects are
meant?), and (c) the answer token of the true question and of its direction-flipped twin on the same scene (label:
true or flipped; it has read both object words). (2) The judge's own answer on the same pairs (how often the true
question gets a higher P(yes) than its flip; held-out and training-split scenes). (3) With ``--mixture``: in the
stage-5 training mixture (its fractions and seed), per relation word the count of "yes" and "no" answers, how many
"no" answers about a two-object scene differ from it by direction only, and the answers per token position of the
relation word. About 2 minutes on one core (the mixture count adds about a minute).
"""

import collections, json, random, sys
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from selfgen import UnifiedPipeline
from selfgen.data.scenes import (OPPOSITE_RELATION, RELATIONS, TOKEN_IDS, VOCAB, PromptSpec, ScenesDataset,
                                 encode_question, parse_prompt, prompt_split, question_about_prompt, render_scene,
                                 sample_scene, to_pixels)
from selfgen.models.unified import understanding_mask

torch.set_grad_enabled(False)
model = UnifiedPipeline.from_pretrained(sys.argv[1]).transformer.eval()
FIRST = {"left of": True, "above": True, "right of": False, "below": False}
AXIS = {"left of": "h", "right of": "h", "above": "v", "below": "v"}


def relational_scenes(split: str, n: int, seed: int) -> list[tuple[PromptSpec, np.ndarray, list]]:
    rng = random.Random(seed)
    pool = prompt_split("spatial", split) + prompt_split("complex", split)
    rows = []
    for _ in range(n):
        spec = parse_prompt(rng.choice(pool))
        objects = sample_scene(spec, rng)
        rows.append((spec, render_scene(objects), objects))
    return rows


def states(images: list[np.ndarray], questions: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hidden states ``(N, 16 + 16, dim)`` after every layer (input first) and the question ids."""
    x = torch.stack([to_pixels(image) for image in images])
    ids = torch.tensor([encode_question(q) for q in questions])
    text, valid = model._embed_text(ids)
    image = model._embed_clean_image(x, torch.float32)
    hidden = torch.cat([image, text], 1)
    mask = understanding_mask(valid, image.shape[1])
    layers = [hidden]
    for block in model.blocks:
        hidden = block(hidden, hidden.shape[1], mask)
        layers.append(hidden)
    return layers, ids


def yes_probability(layers: list[torch.Tensor]) -> np.ndarray:
    logits = model.lm_head(model.und_norm_out(layers[-1][:, -1]))
    return torch.softmax(logits[:, [TOKEN_IDS["yes"], TOKEN_IDS["no"]]], -1)[:, 0].numpy()


def features(rows):
    """Per scene: relation-word states (true prompt), answer states of true and flipped, labels, P(yes)."""
    images = [image for _, image, _ in rows]
    true_q = [question_about_prompt(spec.text()) for spec, _, _ in rows]
    flip_q = [question_about_prompt(PromptSpec(spec.objects, OPPOSITE_RELATION[spec.relation], spec.category).text())
              for spec, _, _ in rows]
    true_layers, ids = states(images, true_q)
    flip_layers, _ = states(images, flip_q)
    num_image = true_layers[0].shape[1] - ids.shape[1]
    at = torch.tensor([num_image + row.tolist().index(TOKEN_IDS[spec.relation.split()[0]]) - 1
                       for row, (spec, _, _) in zip(ids, rows)])
    index = torch.arange(len(rows))
    grid = int(num_image**0.5)
    token = lambda obj: int(obj.centre[1] // (32 / grid)) * grid + int(obj.centre[0] // (32 / grid))
    token_a = torch.tensor([token(objects[0]) for _, _, objects in rows])
    token_b = torch.tensor([token(objects[-1]) for _, _, objects in rows])
    return {
        "word": [layer[index, at].numpy() for layer in true_layers],
        "answer_true": [layer[:, -1].numpy() for layer in true_layers],
        "answer_flip": [layer[:, -1].numpy() for layer in flip_layers],
        "pair": [torch.cat([layer[index, token_a], layer[index, token_b]], 1).numpy() for layer in true_layers],
        "same_token": (token_a == token_b).numpy(),
        "first": np.array([FIRST[spec.relation] for spec, _, _ in rows]),
        "axis": np.array([AXIS[spec.relation] for spec, _, _ in rows]),
        "p_true": yes_probability(true_layers), "p_flip": yes_probability(flip_layers),
    }


def probe(x_train, y_train, x_test, y_test) -> float:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=0.1, max_iter=3000).fit((x_train - mu) / sd, y_train)
    return round(float(clf.score((x_test - mu) / sd, y_test)), 3)


train, test = features(relational_scenes("train", 1500, 21)), features(relational_scenes("heldout", 600, 22))
out = {"num_train_scenes": len(train["first"]), "num_test_scenes": len(test["first"])}


def direction_probes(key: str) -> dict[str, float]:
    """Per layer and axis, the direction probe from the states ``key`` of :func:`features`."""
    scores = {}
    for layer in range(len(train[key])):
        for axis in ("h", "v"):
            tr, te = train["axis"] == axis, test["axis"] == axis
            scores[f"layer{layer}_{axis}"] = probe(train[key][layer][tr], train["first"][tr],
                                                   test[key][layer][te], test["first"][te])
    return scores


out["direction_probe_from_relation_word_state"] = direction_probes("word")
out["direction_probe_from_the_two_objects_image_tokens"] = direction_probes("pair")
out["share_both_objects_in_one_token"] = round(float(test["same_token"].mean()), 3)
answer_probe = {}
for layer in range(len(train["answer_true"])):
    x_tr = np.concatenate([train["answer_true"][layer], train["answer_flip"][layer]])
    x_te = np.concatenate([test["answer_true"][layer], test["answer_flip"][layer]])
    y_tr, y_te = np.repeat([1, 0], len(train["first"])), np.repeat([1, 0], len(test["first"]))
    answer_probe[f"layer{layer}"] = probe(x_tr, y_tr, x_te, y_te)
out["true_vs_flipped_probe_from_answer_state"] = answer_probe
for name, rows in (("heldout", test), ("train", train)):
    out[f"judge_true_above_flip_{name}"] = round(float((rows["p_true"] > rows["p_flip"]).mean()), 3)
    out[f"judge_mean_p_yes_true_{name}"] = round(float(rows["p_true"].mean()), 3)
    out[f"judge_mean_p_yes_flip_{name}"] = round(float(rows["p_flip"].mean()), 3)

if "--mixture" in sys.argv:  # the stage-5 mixture, as configs/unified_shapes_conv_judge_position.yaml builds it
    data = ScenesDataset(3000, "train", seed=5, prompt_fraction=0.2, relation_fraction=0.25, occupancy_fraction=0.15,
                         located_fraction=0.25, region_fraction=0.05, scrambled_fraction=0.05)
    tally = collections.Counter()
    for index in range(len(data)):
        item = data[index]
        prompt, objects = data.example(index)[:2]
        for ids, answer in zip(item["question_ids"].tolist(), item["answer_id"].tolist()):
            words = " ".join(VOCAB[i] for i in ids if i > 4)
            relation = next((r for r in RELATIONS if f" {r} " in f" {words} "), None)
            if relation is None:
                continue
            asked = parse_prompt(words.removeprefix("does the image show "))
            yes = VOCAB[answer] == "yes"
            tally[f"{relation}|{'yes' if yes else 'no'}"] += 1
            tally[f"relation_word_at_token_{ids.index(TOKEN_IDS[relation.split()[0]])}|{'yes' if yes else 'no'}"] += 1
            if len(objects) == 2 and not yes:
                same = [o.noun for o in asked.objects] == [f"{o.colour} {o.shape}" for o in objects]
                (ax, ay), (bx, by) = objects[0].centre, objects[1].centre
                shown = [r for r in RELATIONS if (r in ("left of", "right of")) == (abs(bx - ax) > abs(by - ay))]
                direction_only = same and OPPOSITE_RELATION[relation] in shown
                tally[f"no_by_direction_only|{direction_only}"] += 1
    out["mixture_relation_questions"] = dict(sorted(tally.items()))
print(json.dumps(out, indent=1))
