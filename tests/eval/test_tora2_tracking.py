"""Template-matching tracker: accurate on real sprite videos, not fooled by shuffled paths, detects swaps."""

import numpy as np
import pytest

from selfgen.data.sprites import SpriteVideoDataset, reference_image
from selfgen.eval.tracking import draw_trajectories, evaluate_tracking, sprite_template, track


@pytest.fixture(scope="module")
def items():
    return list(SpriteVideoDataset(10, seed=3, split="heldout"))


def videos(items):
    return np.stack([item["video"] for item in items])


def test_tracks_real_videos_within_two_pixels(items):
    metrics = evaluate_tracking(videos(items), items)
    assert metrics["trajectory_error"] < 2 / 32
    assert metrics["appearance_similarity"] > 0.85
    assert metrics["swap_rate"] == 0 and metrics["num_multi_entity_videos"] > 0


def test_shuffled_trajectories_score_far_worse(items):
    real = evaluate_tracking(videos(items), items)
    control = evaluate_tracking(videos(items), items, shuffle_seed=0)
    assert control["trajectory_error"] > 3 * real["trajectory_error"]


def test_exchanged_paths_count_as_a_swap(items):
    multi = [item for item in items if len(item["entities"]) >= 2][:4]
    swapped = []
    for item in multi:
        entities = [dict(entity) for entity in item["entities"]]
        entities[0]["trajectory"], entities[1]["trajectory"] = entities[1]["trajectory"], entities[0]["trajectory"]
        swapped.append(dict(item, entities=entities))
    assert evaluate_tracking(videos(multi), swapped)["swap_rate"] == 1.0


def test_standard_errors_and_chance_swap_rate(items):
    control = evaluate_tracking(videos(items), items, shuffle_seed=0)
    sizes = [len(item["entities"]) for item in items if len(item["entities"]) > 1]
    expected_chance = np.mean([{2: 0.5, 3: 5 / 6}[size] for size in sizes])
    assert control["swap_chance"] == pytest.approx(expected_chance)
    rate, count = control["swap_rate"], control["num_multi_entity_videos"]
    assert control["swap_rate_se"] == pytest.approx(np.sqrt(rate * (1 - rate) / (count - 1)))  # s.e. of a 0/1 mean, ddof 1
    assert 0 < control["trajectory_error_se"] < control["trajectory_error"]


def test_wrong_appearance_scores_lower_similarity(items):
    video, entity = items[0]["video"], items[0]["entities"][0]
    _, right = track(video, entity["reference_image"])
    color = "white" if not entity["description"].startswith("white") else "red"
    _, wrong = track(video, reference_image((color, "solid", "disc")))
    assert right.mean() > wrong.mean() + 0.05


def test_template_crop_and_errors():
    template, mask, offset = sprite_template(reference_image(("red", "solid", "square")))
    assert template.shape[:2] == mask.shape and mask.all()  # a square fills its bounding box
    np.testing.assert_allclose(offset, np.array(template.shape[1::-1]) / 2)
    with pytest.raises(ValueError, match="nothing but its background"):
        sprite_template(np.full((16, 16, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        track(np.zeros((8, 32, 32)), reference_image(("red", "solid", "square")))
    with pytest.raises(ValueError, match="videos but"):
        evaluate_tracking(np.zeros((1, 8, 32, 32, 3)), [])


def test_draw_trajectories_marks_the_path():
    frames = np.zeros((8, 32, 32, 3), np.float32)
    path = np.linspace((0.2, 0.5), (0.8, 0.5), 8)
    annotated = draw_trajectories(frames, [path], scale=4)
    assert annotated.shape == (8, 128, 128, 3)
    assert annotated[0, 64, 64].max() > 0.9 and annotated[0, 10, 10].max() == 0
