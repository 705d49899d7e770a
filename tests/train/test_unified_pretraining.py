import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import MAX_QUESTION_TOKENS, PAD_ID, VOCAB, ScenesDataset
from selfgen.train.unified import JointObjective, UnifiedConfig, collate, train


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
