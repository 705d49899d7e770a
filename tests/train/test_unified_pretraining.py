import numpy as np
import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import (
    MAX_QUESTION_TOKENS,
    PAD_ID,
    TOKEN_IDS,
    VOCAB,
    ScenesDataset,
    encode_question,
    question_about_prompt,
)
from selfgen.train.srum import region_slices
from selfgen.train.unified import JointObjective, UnifiedConfig, collate, occupancy_auc, train


def test_joint_objective_answers_every_question_of_a_scene_and_its_loss_falls():
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), pad_token_id=PAD_ID, dim=32, num_layers=1, num_heads=2)
    dataset = ScenesDataset(8, seed=0, questions_per_image=3)
    batch = collate([dataset[index] for index in range(8)])
    assert batch["question_ids"].shape == (8, 3, MAX_QUESTION_TOKENS)
    objective = JointObjective(cfg_dropout=0.0, understanding_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same noise every step: only the weights change
        loss, logs = objective.compute_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss_understanding"])
    assert losses[-1] < 0.7 * losses[0]


def test_continuing_from_a_missing_stage_names_it(tmp_path):
    config = UnifiedConfig(output_dir=str(tmp_path), pretrained=str(tmp_path / "no-stage1"), max_train_steps=1)
    with pytest.raises(FileNotFoundError, match="no-stage1"):
        train(config)


def _colours(pixels: torch.Tensor) -> list[list[float]]:
    return np.unique(pixels.flatten(1).T.numpy(), axis=0).tolist()


def test_scrambled_questions_reject_a_patch_scattered_copy_of_the_scene():
    plain = ScenesDataset(6, seed=0, questions_per_image=2)[1]
    assert torch.equal(plain["question_pixel_values"], plain["pixel_values"][None].expand(2, -1, -1, -1))
    item = ScenesDataset(6, seed=0, questions_per_image=2, scrambled_fraction=1.0)[1]
    assert torch.equal(item["pixel_values"], plain["pixel_values"])  # generation still sees the scene
    assert item["question_ids"].tolist() == [encode_question(question_about_prompt(item["prompt"]))] * 2
    assert item["answer_id"].tolist() == [TOKEN_IDS["no"]] * 2
    for scrambled in item["question_pixel_values"]:
        assert not torch.equal(scrambled, item["pixel_values"])
        assert _colours(scrambled) == _colours(item["pixel_values"])  # same colours, broken shapes
    with pytest.raises(ValueError, match="scrambled_fraction"):
        ScenesDataset(6, scrambled_fraction=1.5)


class _QuadrantOracle:
    """Answers "is there an object in the {r}?" from the pixels (or ignores the image)."""

    def __init__(self, sees_the_image: bool) -> None:
        self.sees_the_image = sees_the_image

    def yes_probability(self, images: np.ndarray, questions: list[str]) -> torch.Tensor:
        slices = region_slices(*images.shape[1:3])
        regions = [question.split(" in the ")[1].rstrip("?") for question in questions]
        lit = [float(image[slices[region]].any()) for image, region in zip(images, regions)]
        return torch.tensor(lit if self.sees_the_image else [0.4] * len(lit))


def test_occupancy_auc_tells_a_model_that_locates_objects_from_one_that_cannot():
    assert occupancy_auc(_QuadrantOracle(sees_the_image=True), num_scenes=12) > 0.7  # by any pixel, not by centre
    assert occupancy_auc(_QuadrantOracle(sees_the_image=False), num_scenes=12) == 0.5
