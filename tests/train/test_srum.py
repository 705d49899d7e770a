import json

import numpy as np
import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import VOCAB
from selfgen.train.srum import SRUMConfig, SRUMObjective, reward_maps, self_rewards, train
from selfgen.train.unified import build_pipeline


@pytest.fixture
def tiny_pipe():
    torch.manual_seed(0)
    pipe = build_pipeline(UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_reward_map_combines_global_and_local_rewards():
    global_reward = np.array([1.0, -1.0, 0.0], dtype=np.float32)
    scores = np.array([[1.0, -1.0, 0.0, 0.0]] * 3, dtype=np.float32)
    occupied = np.array([[1.0, 1.0, 0.0, 0.0]] * 3, dtype=np.float32)
    maps = reward_maps(global_reward, scores, occupied, (8, 8), "both")
    assert maps.shape == (3, 8, 8)
    assert maps[0, 0, 0] == 1.0 and maps[0, 0, 7] == 0.0 and maps[0, 7, 0] == 0.5  # good, wrong, empty region
    assert (maps[1] == 0).all() and maps[2, 0, 0] == 0.5  # a rejected image weighs nothing
    assert np.unique(reward_maps(global_reward, scores, occupied, (8, 8), "global")[0]).tolist() == [0.5]
    np.testing.assert_array_equal(reward_maps(global_reward, scores, occupied, (8, 8), "local")[1], maps[0])


def test_self_rewards_have_the_image_spatial_shape(tiny_pipe):
    prompts = ["a red circle left of a blue square", "two green triangles", "a small yellow square"]
    images = tiny_pipe.generate(prompts, num_inference_steps=2, output_type="np").images
    rewards = self_rewards(tiny_pipe, images, prompts)
    assert rewards.reward_maps.shape == images.shape[:3]
    assert rewards.global_reward.shape == (3,) and rewards.local_rewards.shape == (3, 4)
    assert rewards.reward_maps.min() >= 0 and rewards.reward_maps.max() <= 1
    assert np.abs(rewards.local_rewards).max() <= 1


def test_objective_terms_vanish_where_they_should(tiny_pipe):
    model = tiny_pipe.transformer
    batch = {
        "pixel_values": torch.rand(2, 3, 32, 32) * 2 - 1,
        "prompt_ids": tiny_pipe.encode_prompts(["a red circle", "a blue square"]),
        "reward_map": torch.zeros(2, 1, 32, 32),
    }
    loss, logs = SRUMObjective(tiny_pipe, model, constraint_weight=1.0).compute_loss(model, batch)
    assert loss.item() == 0 and logs["loss_constraint"] == 0  # zero reward, policy == reference
    batch["reward_map"] = torch.ones(2, 1, 32, 32)
    assert SRUMObjective(tiny_pipe, model, 1.0).compute_loss(model, batch)[0].item() > 0


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="reward must be one of"):
        SRUMConfig(reward="dense")
    with pytest.raises(FileNotFoundError, match="not a UnifiedPipeline folder"):
        train(SRUMConfig(pretrained="/nonexistent", report_to=None))


def test_one_round_runs_end_to_end_and_changes_only_generation(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "base")
    config = SRUMConfig(
        pretrained=str(tmp_path / "base"),
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        prompts_per_round=4,
        num_inference_steps=2,
        max_train_steps=2,
        train_batch_size=2,
        learning_rate=1e-2,
        eval_prompts_per_category=1,
        checkpointing_steps=0,
        report_to=None,
    )
    result = train(config)
    base = UnifiedTransformer.from_pretrained(tmp_path / "base" / "transformer")
    tuned = UnifiedTransformer.from_pretrained(result.pipeline_dir / "transformer")
    tuned_weights = dict(tuned.named_parameters())
    changed = {name for name, param in base.named_parameters() if not torch.equal(param, tuned_weights[name])}
    assert changed and all(base.is_generation_parameter(name) for name in changed)
    assert "velocity_head.weight" in changed
    history = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [record["round"] for record in history] == [0, 1] and "accuracy_overall" in history[1]
    assert (tmp_path / "run" / "round-1" / "samples_and_reward_maps.png").is_file()
    assert (tmp_path / "run" / "accuracy_per_round.png").is_file()
