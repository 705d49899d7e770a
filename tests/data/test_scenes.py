import random

import numpy as np
import pytest
import torch

from selfgen.data.scenes import (
    ANSWER_ID,
    CATEGORIES,
    MAX_PROMPT_TOKENS,
    MAX_QUESTION_TOKENS,
    PROMPT_GRAMMAR,
    ScenesDataset,
    all_prompts,
    encode_prompt,
    encode_question,
    parse_prompt,
    perturb_prompt,
    prompt_split,
    render_scene,
    sample_scene,
    scene_questions,
)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_generated_prompt_parses_back_to_itself_and_its_category(category):
    for prompt in all_prompts(category):
        spec = parse_prompt(prompt)
        assert spec.text() == prompt and spec.category == category
        assert len(encode_prompt(prompt)) == MAX_PROMPT_TOKENS


def test_required_grammar_forms():
    assert parse_prompt("a red circle left of a blue square").relation == "left of"
    assert parse_prompt("two green triangles").objects[0].count == 2
    assert parse_prompt("a large yellow square").objects[0].size == "large"
    for word in ("red", "green", "blue", "yellow", "circle", "square", "triangle", "left of", "above", "below"):
        assert word in PROMPT_GRAMMAR


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a purple circle", "outside the grammar: \\['purple'\\]"),
        ("a red hexagon", "outside the grammar: \\['hexagon'\\]"),
        ("two red circle", "plural"),
        ("red circle", "must start with"),
        ("", "non-empty"),
    ],
)
def test_bad_prompts_give_clear_errors(prompt, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt(prompt)


@pytest.mark.parametrize("category", CATEGORIES)
def test_heldout_prompts_are_never_in_training(category):
    train, heldout = set(prompt_split(category, "train")), set(prompt_split(category, "heldout"))
    assert heldout and train and not train & heldout
    assert train | heldout == set(all_prompts(category))


def test_scenes_satisfy_relation_and_render_colours():
    rng = random.Random(0)
    spec = parse_prompt("a red circle above a blue square")
    for _ in range(20):
        first, second = sample_scene(spec, rng)
        assert first.centre[1] < second.centre[1]
        image = render_scene([first, second])
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        assert (image == (1, 0, 0)).all(-1).sum() > 20 and (image == (0, 0, 1)).all(-1).sum() == second.size**2


def test_questions_are_consistent_with_the_scene():
    rng = random.Random(1)
    spec = parse_prompt("three green triangles")
    objects = sample_scene(spec, rng)
    answers = dict(scene_questions(objects, spec, rng))
    assert answers["is there a green triangle?"] == "yes"
    assert answers["does the image show three green triangles?"] == "yes"
    assert perturb_prompt(spec, rng) != spec


def test_question_encoding_ends_with_the_answer_marker():
    ids = encode_question("is there a red circle in the top-left?")
    assert len(ids) == MAX_QUESTION_TOKENS and ids[-1] == ANSWER_ID
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encode_question("is there a dog?")


def test_dataset_items_are_seeded():
    first, again = ScenesDataset(10, seed=3)[4], ScenesDataset(10, seed=3)[4]
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and first["prompt"] == again["prompt"]
    assert first["pixel_values"].shape == (3, 32, 32) and first["pixel_values"].min() >= -1
    assert first["prompt"] in prompt_split(parse_prompt(first["prompt"]).category, "train")
    with pytest.raises(IndexError):
        ScenesDataset(10)[10]


def test_dataset_categories_restrict_the_prompts_and_keep_the_default_stream():
    single = ScenesDataset(40, seed=3, categories=("colour", "size"))
    assert {parse_prompt(single[i]["prompt"]).category for i in range(40)} == {"colour", "size"}
    everything = ScenesDataset(40, seed=3)
    assert len({parse_prompt(everything[i]["prompt"]).category for i in range(40)}) >= 4
    assert ScenesDataset(40, seed=3, categories=CATEGORIES)[7]["prompt"] == everything[7]["prompt"]
    with pytest.raises(ValueError, match="categories"):
        ScenesDataset(10, categories=("shapes",))


def test_dataset_asks_several_distinct_questions_per_scene():
    single, several = ScenesDataset(10, seed=3)[4], ScenesDataset(10, seed=3, questions_per_image=3)[4]
    assert torch.equal(single["pixel_values"], several["pixel_values"])
    assert several["question_ids"].shape == (3, MAX_QUESTION_TOKENS) and several["answer_id"].shape == (3,)
    assert len({tuple(ids) for ids in several["question_ids"].tolist()}) == 3
    with pytest.raises(ValueError, match="questions_per_image"):
        ScenesDataset(10, questions_per_image=8)


def test_no_heldout_prompt_is_ever_asked_about_in_training():
    heldout = {prompt for category in CATEGORIES for prompt in prompt_split(category, "heldout")}
    dataset = ScenesDataset(400, questions_per_image=7)
    asked = {question for index in range(len(dataset)) for question, _ in dataset.example(index)[2]}
    whole_prompt = {
        question.removeprefix("does the image show ").removesuffix("?")
        for question in asked
        if question.startswith("does the image show ")
    }
    assert len(whole_prompt) > 100  # many prompts, their hard negatives included
    assert not whole_prompt & heldout  # before: about 20% of the hard negatives were held-out prompts
