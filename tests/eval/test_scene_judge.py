import random

import numpy as np
import pytest

from selfgen.data.scenes import (
    CATEGORIES,
    SceneObject,
    parse_prompt,
    perturb_prompt,
    prompt_split,
    render_scene,
    sample_scene,
)
from selfgen.eval.scenes import (
    SceneJudge,
    detect_objects,
    failure_reason,
    judge_image,
    paired_difference,
    per_prompt_accuracy,
    region_labels,
    single_object_report,
)


def _rendered(count_per_category=25, seed=0):
    rng = random.Random(seed)
    images, prompts = [], []
    for category in CATEGORIES:
        for prompt in rng.sample(
            prompt_split(category, "heldout"), min(count_per_category, len(prompt_split(category, "heldout")))
        ):
            images.append(render_scene(sample_scene(parse_prompt(prompt), rng)))
            prompts.append(prompt)
    return np.stack(images), prompts


def test_judge_accepts_ground_truth_scenes():
    images, prompts = _rendered()
    scores = SceneJudge().evaluate(images, prompts)
    assert set(scores) == set(CATEGORIES) | {"overall", "pooled", "pooled_se"}
    assert min(scores[key] for key in (*CATEGORIES, "overall", "pooled")) >= 0.97, scores


def test_pooled_error_is_clustered_by_prompt():
    image = render_scene(sample_scene(parse_prompt("a red circle"), random.Random(0)))
    images = np.stack([image, image, np.zeros_like(image), np.zeros_like(image)])
    prompts = ["a red circle"] * 2 + ["a blue square"] * 2
    scores = SceneJudge().evaluate(images, prompts, samples_per_prompt=2)
    assert scores["pooled"] == 0.5
    assert scores["pooled_se"] == pytest.approx(0.5)  # two prompts, per-prompt means 1 and 0
    assert SceneJudge().evaluate(images, prompts)["pooled_se"] == pytest.approx(np.std([1, 1, 0, 0], ddof=1) / 2)
    with pytest.raises(ValueError, match="samples_per_prompt=3"):
        SceneJudge().evaluate(images, prompts, samples_per_prompt=3)


def test_verdicts_are_judged_once_and_give_the_summary_and_the_per_prompt_accuracy():
    image = render_scene(sample_scene(parse_prompt("a red circle"), random.Random(0)))
    images = np.stack([image, np.zeros_like(image), image, image])
    prompts = ["a red circle"] * 2 + ["a blue square"] * 2
    judge = SceneJudge()
    correct = judge.verdicts(images, prompts)
    assert correct.tolist() == [True, False, False, False]
    assert judge.summarize(correct, prompts, samples_per_prompt=2) == judge.evaluate(images, prompts, samples_per_prompt=2)
    assert per_prompt_accuracy(correct, ["a red circle", "a blue square"], 2) == {"a red circle": 0.5, "a blue square": 0.0}
    with pytest.raises(ValueError, match="3 verdicts for 4 prompts"):
        judge.summarize(correct[:3], prompts)


def test_judge_rejects_scenes_for_perturbed_prompts():
    images, prompts = _rendered(seed=1)
    rng = random.Random(2)
    wrong = [perturb_prompt(parse_prompt(prompt), rng).text() for prompt in prompts]
    false_positive = np.mean([judge_image(image, prompt) for image, prompt in zip(images, wrong)])
    assert false_positive <= 0.05


def test_judge_survives_mild_noise_and_rejects_pure_noise():
    images, prompts = _rendered(count_per_category=10, seed=3)
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.08, images.shape), 0, 1)
    assert SceneJudge().evaluate(noisy, prompts)["overall"] >= 0.95
    assert SceneJudge().evaluate(np.random.default_rng(0).random(images.shape), prompts)["overall"] <= 0.05


def test_detections_report_shape_size_and_position():
    image = render_scene(
        sample_scene(parse_prompt("a large red square left of a small blue triangle"), random.Random(0))
    )
    found = {d.colour: d for d in detect_objects(image)}
    assert (found["red"].shape, found["red"].size) == ("square", "large")
    assert (found["blue"].shape, found["blue"].size) == ("triangle", "small")
    assert found["red"].cx < found["blue"].cx


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="one image per prompt"):
        SceneJudge().evaluate(np.zeros((2, 32, 32, 3)), ["a red circle"])
    with pytest.raises(ValueError, match="image must be"):
        detect_objects(np.zeros((32, 32)))


def test_region_labels_mark_occupied_quadrants_and_prompt_objects():
    image = render_scene([SceneObject("red", "circle", 9, 2, 2), SceneObject("blue", "square", 9, 20, 20)])
    occupied, correct = region_labels(image, "a red circle")
    assert occupied.tolist() == [True, False, False, True]  # top-left, top-right, bottom-left, bottom-right
    assert correct.tolist() == [True, False, False, False]  # the blue square is not in the prompt


def test_paired_difference_is_clustered_by_prompt_and_needs_the_same_prompts():
    baseline = {"a red circle": 0.0, "a blue square": 0.5, "two green circles": 0.25}
    candidate = {"a red circle": 0.5, "a blue square": 0.5, "two green circles": 0.5}
    difference, standard_error = paired_difference(baseline, candidate)
    assert difference == pytest.approx(0.25)
    assert standard_error == pytest.approx(np.std([0.5, 0.0, 0.25], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference(baseline, {"a red circle": 1.0, "a blue square": 1.0, "a red square": 1.0})


def test_failure_reason_names_the_first_failed_check():
    def scene(*objects):
        return render_scene([SceneObject(*obj) for obj in objects])

    red_circle = ("red", "circle", 9, 2, 2)
    assert failure_reason(scene(red_circle), "a red circle") is None
    assert failure_reason(scene(red_circle), "a blue circle") == "colour"
    assert failure_reason(scene(red_circle), "a red square") == "shape"
    assert failure_reason(scene(red_circle), "a large red circle") == "size"
    assert failure_reason(scene(red_circle), "two red circles") == "count"
    blue_square = ("blue", "square", 9, 20, 2)  # right of the circle
    assert failure_reason(scene(red_circle, blue_square), "a red circle left of a blue square") is None
    assert failure_reason(scene(red_circle, blue_square), "a red circle right of a blue square") == "relation"
    images, prompts = _rendered(count_per_category=5)
    for image, prompt in zip(images, prompts):  # agrees with judge_image: None exactly when the judge says yes
        assert (failure_reason(image, prompt) is None) == judge_image(image, prompt)


def test_single_object_report_counts_fragments_and_refuses_other_prompts():
    rng = random.Random(0)
    prompts = ["a red circle", "a large blue square", "a green triangle", "a small yellow circle"]
    images = [render_scene(sample_scene(parse_prompt(p), rng)) for p in prompts]
    broken = images[0].copy()
    broken[:, :, :] = 0
    broken[2:8, 2:8] = broken[20:26, 20:26] = (1.0, 0.0, 0.0)  # two red squares, no circle
    report = single_object_report(np.stack(images + [broken]), prompts + ["a red circle"])
    assert report["accuracy"] == pytest.approx(0.8) and report["per_image_right"] == [1, 1, 1, 1, 0]
    assert report["asked_colour_components"] == {"0": 0, "1": 4, "2": 1, "3+": 0}
    assert report["failures"] == {"shape": 1} and report["by_shape"]["circle"] == pytest.approx(2 / 3, abs=1e-3)
    with pytest.raises(ValueError, match="single-object prompts only"):
        single_object_report(np.stack(images[:1]), ["two red circles"])


def test_extra_fragments_of_an_asked_colour_fail_the_prompt():
    """A mosaic whose one red tile is a "square" is not "a red square": the other red fragments count against it."""
    mosaic = np.zeros((32, 32, 3), dtype=np.float32)
    mosaic[2:8, 2:8] = (1.0, 0.0, 0.0)  # a red square (area 36)
    mosaic[20:26, 12:18] = np.tril(np.ones((6, 6)))[..., None] * (1.0, 0.0, 0.0)  # a red clump, not a square
    mosaic[24:30, 2:8] = (0.0, 0.0, 1.0)  # another colour: not asked, ignored
    assert failure_reason(mosaic, "a red square") == "extra" and not judge_image(mosaic, "a red square")
    mosaic[20:26, 12:18] = 0.0
    assert failure_reason(mosaic, "a red square") is None  # the blue square alone does not count
    mosaic[20:22, 12:14] = (1.0, 0.0, 0.0)  # a 4-pixel speck stays noise (below min_area)
    assert judge_image(mosaic, "a red square")
    two = render_scene([SceneObject("red", "circle", 9, 2, 2), SceneObject("red", "square", 9, 20, 20)])
    assert judge_image(two, "a red circle and a red square")  # both red objects are asked
    assert failure_reason(two, "a red circle") == "extra"
