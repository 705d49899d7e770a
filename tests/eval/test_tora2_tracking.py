"""Template-matching tracker: accurate on real sprite videos, not fooled by shuffled paths, detects swaps; the
shuffled controls never reuse a path; the sigma = 1 probes (path colour binding, retrieval) can tell."""

import numpy as np
import pytest

from selfgen.data.sprites import SpriteVideoDataset, reference_image
from selfgen.eval.tracking import (
    draw_trajectories,
    evaluate_tracking,
    path_binding,
    retrieval_top1,
    shuffled_partners,
    sprite_template,
    track,
)


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


def test_shuffled_partners_have_enough_entities_so_no_path_repeats(items):
    partners = shuffled_partners(items, seed=0)
    counts = [len(item["entities"]) for item in items]
    assert all(p is None or (p != i and counts[p] >= counts[i]) for i, p in enumerate(partners))
    assert [i for i, p in enumerate(partners) if p is None] == [i for i, c in enumerate(counts) if c > sorted(counts)[-2]]
    assert partners != shuffled_partners(items, seed=1)


def test_shuffled_control_swaps_are_decidable(items):
    """With distinct donor paths no multi-entity video ties, so every such video with a partner is scored."""
    control = evaluate_tracking(videos(items), items, shuffle_seed=0)
    partners = shuffled_partners(items, seed=0)
    multi = [i for i, item in enumerate(items) if len(item["entities"]) > 1 and partners[i] is not None]
    assert control["num_multi_entity_videos"] == len(multi)
    assert np.isfinite(control["per_video"]["swapped"]).sum() == len(multi)


def test_path_binding_is_one_on_real_videos_chance_on_flat_ones_and_low_when_exchanged(items):
    multi = [item for item in items if len(item["entities"]) >= 2]
    assert path_binding(videos(multi), multi)["binding"] > 0.9
    flat = np.full((len(multi), 8, 32, 32, 3), 0.4, np.float32)
    assert path_binding(flat, multi)["binding"] == pytest.approx(0.5)  # one of each pair wins: chance exactly
    exchanged = []
    for item in multi:
        entities = [dict(entity) for entity in item["entities"]]
        references = [entity["reference_image"] for entity in entities]
        for entity, reference in zip(entities, references[1:] + references[:1]):
            entity["reference_image"] = reference
        exchanged.append(dict(item, entities=entities))
    assert path_binding(videos(multi), exchanged)["binding"] < 0.5
    single = [item for item in items if len(item["entities"]) == 1][:1]
    assert np.isnan(path_binding(videos(single), single)["per_video"][0])


def test_retrieval_top1():
    keys = np.eye(5, 8, dtype=np.float32)
    assert retrieval_top1(keys + 0.1, keys) == 1.0
    assert retrieval_top1(np.roll(keys, 1, axis=0), keys) == 0.0


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
