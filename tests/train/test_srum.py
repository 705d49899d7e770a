import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from selfgen import UnifiedTransformer
from selfgen.data.scenes import VOCAB, SceneObject, parse_prompt, render_scene, sample_scene
from selfgen.eval.scenes import ranking_auc
from selfgen.models.scene_autoencoder import encode_latents, scene_autoencoder
from selfgen.train.srum import (
    SelfRewards,
    SelfGeneratedDataset,
    SRUMConfig,
    SRUMObjective,
    SRUMTrainer,
    group_baseline,
    penalise_clutter,
    resize_reward_maps,
    reward_maps,
)
from selfgen.train.srum_shapes import (
    oracle_rewards,
    quadrant_slices,
    self_judge_agreement,
    self_rewards,
    shapes_trainer,
    train,
)
from selfgen.train.config import load_config
from selfgen.train.losses import noisy_pair
from selfgen.train.trainer import Trainer
from selfgen.train.unified import build_pipeline, empty_prompt_like


QUADRANTS = quadrant_slices(8, 8)


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
    maps = reward_maps(global_reward, scores, occupied, (8, 8), "both", QUADRANTS)
    assert maps.shape == (3, 8, 8)
    assert maps[0, 0, 0] == 1.0 and maps[0, 0, 7] == 0.0 and maps[0, 7, 0] == 0.5  # good, wrong, empty region
    assert (maps[1] == 0).all() and maps[2, 0, 0] == 0.5  # a rejected image weighs nothing
    assert np.unique(reward_maps(global_reward, scores, occupied, (8, 8), "global", QUADRANTS)[0]).tolist() == [0.5]
    np.testing.assert_array_equal(reward_maps(global_reward, scores, occupied, (8, 8), "local", QUADRANTS)[1], maps[0])
    blind = reward_maps(global_reward, scores, occupied, (8, 8), "blind", QUADRANTS)
    assert np.unique(blind).tolist() == [pytest.approx(maps.mean())]  # same scale, no information


def test_self_rewards_have_the_image_spatial_shape(tiny_pipe):
    prompts = ["a red circle left of a blue square", "two green triangles", "a small yellow square"]
    images = tiny_pipe.generate(prompts, num_inference_steps=2, output_type="np").images
    rewards = self_rewards(tiny_pipe, images, prompts)
    assert rewards.reward_maps.shape == images.shape[:3]
    assert rewards.global_reward.shape == (3,) and rewards.local_rewards.shape == (3, 4)
    assert rewards.reward_maps.min() >= 0 and rewards.reward_maps.max() <= 1
    assert np.abs(rewards.local_rewards).max() <= 1


def test_objective_is_reward_plus_lambda_weighted_flow_matching_on_the_sample(tiny_pipe):
    model = tiny_pipe.transformer
    batch = {
        "sample": torch.rand(2, 3, 32, 32) * 2 - 1,
        "prompt_ids": tiny_pipe.encode_prompts(["a red circle", "a blue square"]),
        "reward_map": torch.zeros(2, 1, 32, 32),
    }

    def loss(weight, reward):
        batch["reward_map"] = torch.full((2, 1, 32, 32), reward)
        torch.manual_seed(0)  # the same noise and sigmas for every call
        return SRUMObjective(tiny_pipe, constraint_weight=weight).compute_loss(model, batch)

    assert loss(0.0, 0.0)[0].item() == 0  # no reward, no anchor: nothing to learn
    plain, logs = loss(1.0, 0.0)  # the anchor alone is flow matching on the sample itself
    assert logs["loss_reward"] == 0 and logs["loss_constraint"] > 0 and plain.item() == pytest.approx(logs["loss_constraint"])
    # L = mean(R e) + lambda mean(e) = (R + lambda) mean(e) for a constant map: both terms pull toward x0
    assert loss(0.5, 1.0)[0].item() == pytest.approx(1.5 * plain.item(), rel=1e-5)
    assert loss(0.5, 0.2)[0].item() == pytest.approx(0.7 * plain.item(), rel=1e-5)


def test_guided_update_fits_the_guided_velocity_and_trains_only_the_conditional_branch(tiny_pipe):
    model = tiny_pipe.transformer
    torch.manual_seed(1)
    with torch.no_grad():  # leave the zero-initialised heads: v_c, v_u and their difference non-zero
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    prompt_ids = tiny_pipe.encode_prompts(["a red circle", "a blue square"])
    empty = empty_prompt_like(prompt_ids)
    batch = {"sample": torch.rand(2, 3, 32, 32) * 2 - 1, "prompt_ids": prompt_ids, "reward_map": torch.ones(2, 1, 32, 32)}
    with pytest.raises(ValueError, match="needs drop_prompt"):
        SRUMObjective(tiny_pipe, 0.0, guidance_scale=3.0)
    objective = SRUMObjective(tiny_pipe, 0.0, drop_prompt=empty_prompt_like, guidance_scale=3.0)
    torch.manual_seed(0)
    loss, _ = objective.compute_loss(model, batch)
    torch.manual_seed(0)  # the same noise and sigmas: v = v_u + 3 (v_c - v_u)
    noisy, sigmas, target = noisy_pair(batch["sample"])
    cond = tiny_pipe.velocity(model, noisy, sigmas, prompt_ids)
    uncond = tiny_pipe.velocity(model, noisy, sigmas, empty)
    expected = ((uncond + 3 * (cond - uncond) - target) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.item() - ((cond - target) ** 2).mean().item()) > 0.05  # not the conditional loss
    # the unconditional branch is held fixed: the gradient is w times the conditional branch's alone
    model.zero_grad()
    loss.backward()
    guided = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    residual = (uncond + 3 * (cond - uncond) - target).detach()
    (3 * 2 * (residual * cond).mean()).backward()
    manual = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(guided) == len(manual) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(guided, manual))
    with pytest.raises(ValueError, match="update_guidance_scale"):
        SRUMConfig(update_guidance_scale=0.5)


def test_clutter_beyond_the_prompt_costs_local_reward():
    scores = np.array([[0.8, 0.6, 0.9, 0.0], [0.8, 0.6, 0.9, 0.0]], dtype=np.float32)
    occupied = np.array([[0.9, 0.9, 0.7, 0.1], [0.9, 0.9, 0.7, 0.1]], dtype=np.float32)
    penalised = penalise_clutter(scores, occupied, expected=np.array([1, 3]))
    np.testing.assert_allclose(penalised[0], [-0.9, -0.9, 0.9, 0.0])  # one object asked: the best quadrant keeps it
    np.testing.assert_allclose(penalised[1], scores[1])  # three asked, three drawn: nothing to penalise
    tidy = reward_maps(np.ones(1), penalised[1:], occupied[1:], (8, 8), "both", QUADRANTS).mean()
    messy = reward_maps(np.ones(1), penalised[:1], occupied[:1], (8, 8), "both", QUADRANTS).mean()
    assert messy < tidy


def test_oracle_penalises_a_repeated_object_in_every_quadrant():
    objects = [SceneObject("red", "circle", 9, x, y) for x, y in ((3, 3), (19, 3), (3, 19), (19, 19))]
    image = render_scene(objects)[None]
    rewards = oracle_rewards(image, ["a red circle"])
    assert rewards.occupancy.sum() == 4
    assert sorted(rewards.local_rewards[0].tolist()) == [-1.0, -1.0, -1.0, 1.0]


def test_group_baseline_keeps_only_better_than_average_samples_of_a_prompt():
    maps = np.stack([np.full((4, 4), value, dtype=np.float32) for value in (0.2, 0.6, 0.3, 0.3)])
    maps[1, 0, 0] = 0.0  # one region of the better sample is judged worse than its group
    weights = group_baseline(maps, group_size=2)
    assert weights[1, 0, 0] == 0 and weights[0, 0, 0] > 0  # there the worse sample is the better one
    assert (weights[0, 1:] == 0).all() and (weights[1, 1:] > 0).all()
    assert (weights[2:] == 0).all()  # a group of equal samples teaches nothing
    assert np.isclose(weights.mean(), maps.mean())  # same loss scale as the raw map
    with pytest.raises(ValueError, match="samples_per_prompt=3"):
        group_baseline(maps, group_size=3)


def test_group_baseline_floor_spreads_its_share_of_the_weight_uniformly():
    maps = np.repeat(np.array([0.0, 0.5, 0.5, 0.5], dtype=np.float32)[:, None, None], 2, axis=1).repeat(2, axis=2)
    # by hand: mean(R) = 0.375; a = max(R - group mean, 0) = (0, 0.25, 0, 0), mean(a) = 0.0625, a / mean(a) = (0, 4, 0, 0)
    weights = group_baseline(maps, group_size=2, floor=0.5)  # 0.375 (0.5 a / mean(a) + 0.5)
    np.testing.assert_allclose(weights[:, 0, 0], [0.1875, 0.9375, 0.1875, 0.1875], rtol=1e-6)
    np.testing.assert_allclose(group_baseline(maps, 2, floor=1.0), np.full_like(maps, 0.375), rtol=1e-6)  # the blind weights
    flat = np.full_like(maps, 0.5)  # no sample above its group: only the floor's share is left
    np.testing.assert_allclose(group_baseline(flat, 2, floor=0.25), np.full_like(maps, 0.125), rtol=1e-6)
    rng = np.random.default_rng(0)
    noisy = rng.random((6, 3, 3)).astype(np.float32)
    above = np.maximum(noisy.reshape(3, 2, 3, 3) - noisy.reshape(3, 2, 3, 3).mean(1, keepdims=True), 0).reshape(noisy.shape)
    np.testing.assert_allclose(group_baseline(noisy, 2, floor=0.0), group_baseline(noisy, 2), rtol=1e-6)
    np.testing.assert_allclose(group_baseline(noisy, 2), above * (noisy.mean() / above.mean()), rtol=1e-6)
    with pytest.raises(ValueError, match="floor must be in"):
        group_baseline(maps, 2, floor=1.5)
    with pytest.raises(ValueError, match="reward_floor only applies"):
        SRUMConfig(reward_floor=0.5)
    with pytest.raises(ValueError, match="reward_floor must be in"):
        SRUMConfig(reward_baseline="group", reward_floor=-0.1)


def test_self_judge_agreement_reports_judge_accuracy_and_rankings(tiny_pipe):
    results = self_judge_agreement(tiny_pipe, num_prompts=2, samples_per_prompt=2, num_inference_steps=1)
    assert {"judge_accuracy", "top1_accuracy_global", "top1_accuracy_map_mean", "top1_accuracy_local_sum"} <= set(results)
    assert {"answer_accuracy_whole_prompt", "answer_accuracy_occupancy", "auc_occupancy", "auc_local_region"} <= set(
        results
    )
    gains = {key for key in results if key.startswith("top1_gain_")}
    assert {"top1_gain_global", "top1_gain_global_se", "top1_gain_oracle"} <= gains
    assert all(-1 <= results[key] <= 1 for key in gains)
    picks = [results[key] for key in gains if not key.endswith("_se")]
    assert results["top1_gain_oracle"] == max(picks) >= 0  # a perfect judge bounds every self-ranking
    assert all(0 <= value <= 1 for key, value in results.items() if key not in gains and not np.isnan(value))


def test_ranking_auc_counts_ordered_pairs_and_half_ties():
    assert ranking_auc(np.array([0.9, 0.8, 0.1]), np.array([True, True, False])) == 1.0
    assert ranking_auc(np.array([0.1, 0.5, 0.5]), np.array([True, False, True])) == 0.25
    assert np.isnan(ranking_auc(np.ones(3), np.ones(3, dtype=bool)))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="reward must be one of"):
        SRUMConfig(reward="dense")
    with pytest.raises(ValueError, match="reward_baseline must be one of"):
        SRUMConfig(reward_baseline="mean")
    with pytest.raises(ValueError, match="eval_split"):
        SRUMConfig(eval_split="test")
    with pytest.raises(FileNotFoundError, match="not a UnifiedPipeline folder"):
        train(SRUMConfig(pretrained="/nonexistent", report_to=None))


@pytest.mark.parametrize("baseline", ["none", "group"])
def test_one_round_runs_end_to_end_and_changes_only_generation(tiny_pipe, tmp_path, baseline):
    tiny_pipe.save_pretrained(tmp_path / "base")
    config = SRUMConfig(
        pretrained=str(tmp_path / "base"),
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        prompts_per_round=4 if baseline == "none" else 2,
        samples_per_prompt=1 if baseline == "none" else 2,
        reward_baseline=baseline,
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


def test_oracle_rewards_follow_the_rule_based_judge():
    prompt = "a red circle left of a blue square"
    image = render_scene(sample_scene(parse_prompt(prompt), random.Random(0)))[None]
    right = oracle_rewards(image, [prompt])
    wrong = oracle_rewards(image, ["a red circle right of a blue square"])
    assert right.global_reward.tolist() == [1.0] and wrong.global_reward.tolist() == [-1.0]
    assert right.reward_maps.max() == 1.0 and right.reward_maps.min() == 0.5  # objects' quadrants up, rest neutral
    assert wrong.reward_maps.max() == 0.0
    control = self_rewards(None, np.concatenate([image, image]), [prompt, "a red circle right of a blue square"],
                           mode="oracle_blind")  # gate (a)'s control: the oracle's update size, no information
    both = oracle_rewards(np.concatenate([image, image]), [prompt, "a red circle right of a blue square"])
    assert np.unique(control.reward_maps).tolist() == [pytest.approx(both.reward_maps.mean())]


@pytest.fixture
def latent_pipe():
    """A tiny pipeline that generates on an untrained autoencoder's 8x8 latent grid (the latent path's shape)."""
    torch.manual_seed(0)
    model = UnifiedTransformer(vocab_size=len(VOCAB), dim=32, num_layers=1, num_heads=2, generation_patch_size=1,
                               generation_latent_channels=4, generation_latent_size=8)
    pipe = build_pipeline(model, scene_autoencoder((8, 8, 8)).eval().requires_grad_(False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_reward_maps_resize_onto_the_generation_grid_block_for_block():
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32).repeat(8, 1).repeat(8, 2)  # 32x32, 8x8 blocks
    np.testing.assert_allclose(resize_reward_maps(maps, (32, 32)), maps, atol=1e-6)  # the pixel grid: unchanged
    np.testing.assert_allclose(resize_reward_maps(maps, (4, 4)), maps[:, ::8, ::8], atol=1e-6)  # one value per block


def test_a_latent_pipelines_reward_map_reaches_the_latent_tokens_of_its_region(latent_pipe, tmp_path):
    prompts = ["a red circle", "a blue square"]
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    scores = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    occupied = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    maps = reward_maps(np.ones(2, np.float32), scores, occupied, (32, 32), "both", quadrant_slices(32, 32))
    rewards = SelfRewards(np.ones(2, np.float32), scores, maps, occupied)
    trainer = shapes_trainer(latent_pipe, SRUMConfig(pretrained=None, output_dir=str(tmp_path), report_to=None))
    dataset = trainer.training_set(prompts, images, rewards)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():  # the loss runs on the frozen autoencoder's latents of the decoded samples
        torch.testing.assert_close(dataset.samples, encode_latents(latent_pipe.vae, pixels))
    expected = torch.full((2, 8, 8), 0.5)  # each 16x16 quadrant of the map on its 4x4 latent tokens
    expected[0, :4, :4], expected[0, :4, 4:], expected[1, 4:, 4:] = 1.0, 0.0, 1.0  # top-left right, top-right wrong
    torch.testing.assert_close(dataset.maps[:, 0], expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="do not cover"):
        type(dataset)(dataset.samples, dataset.prompt_ids, maps)  # a pixel-grid map on latents is refused


def test_a_latent_pipeline_runs_a_round_with_its_vae_and_judge_kept_bit_for_bit(latent_pipe, tmp_path):
    latent_pipe.save_pretrained(tmp_path / "base")
    config = SRUMConfig(pretrained=str(tmp_path / "base"), output_dir=str(tmp_path / "run"), num_rounds=1,
                        prompts_per_round=2, num_inference_steps=2, max_train_steps=1, train_batch_size=2,
                        learning_rate=1e-2, reward="oracle", eval_prompts_per_category=1, checkpointing_steps=0,
                        report_to=None)
    result = train(config)
    base, tuned = type(latent_pipe).from_pretrained(tmp_path / "base"), type(latent_pipe).from_pretrained(result.pipeline_dir)
    tuned_weights = dict(tuned.transformer.named_parameters())
    changed = {name for name, param in base.transformer.named_parameters() if not torch.equal(param, tuned_weights[name])}
    assert "velocity_head.weight" in changed and all(base.transformer.is_generation_parameter(n) for n in changed)
    tuned_vae = tuned.vae.state_dict()
    assert all(torch.equal(value, tuned_vae[name]) for name, value in base.vae.state_dict().items())
    history = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [record["round"] for record in history] == [0, 1] and np.isfinite(history[1]["loss"])


def test_the_per_round_judge_reads_its_own_sampler_not_the_rounds(tiny_pipe, tmp_path):
    """The round's samples follow num_inference_steps / guidance_scale; the per-round accuracy follows
    eval_num_inference_steps / eval_guidance_scale (what `selfgen eval srum` reads), whatever the round's sampler."""
    config = SRUMConfig(
        output_dir=str(tmp_path / "run"), num_rounds=1, prompts_per_round=2, num_inference_steps=3, guidance_scale=1.0,
        eval_num_inference_steps=2, eval_guidance_scale=2.5, max_train_steps=1, train_batch_size=2,
        eval_prompts_per_category=1, checkpointing_steps=0, report_to=None,
    )
    calls, generate = [], tiny_pipe.generate

    def spy(prompts, **options):
        calls.append((len(prompts), options["num_inference_steps"], options["guidance_scale"]))
        return generate(prompts, **options)

    tiny_pipe.generate = spy
    shapes_trainer(tiny_pipe, config).train()
    assert (2, 3, 1.0) in calls  # the round's own samples
    assert {call[1:] for call in calls if call[0] != 2} == {(2, 2.5)}  # round 0 and round 1 evaluations
    with pytest.raises(ValueError, match="eval_num_inference_steps"):
        SRUMConfig(eval_num_inference_steps=0)


def test_the_gentle_config_builds_the_authors_optimiser(tiny_pipe, tmp_path):
    """configs/srum_shapes_latent_gentle.yaml: AdamW betas (0.9, 0.95), lr 2e-5 reached linearly after 100 warm-up
    updates then constant, gradient clipping 1.0, prompt dropout 0.1, lambda 0.5, one offline round."""
    config = load_config(SRUMConfig, Path(__file__).parents[2] / "configs" / "srum_shapes_latent_gentle.yaml")
    assert (config.num_rounds, config.constraint_weight, config.cfg_dropout, config.max_grad_norm) == (1, 0.5, 0.1, 1.0)
    config = dataclasses.replace(config, output_dir=str(tmp_path / "run"), report_to=None, train_batch_size=2)
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    samples = tiny_pipe.encode_samples(images)
    maps = np.ones((4, *samples.shape[2:]), np.float32)
    dataset = SelfGeneratedDataset(samples, tiny_pipe.encode_prompts(["a red circle"] * 4), maps)
    objective = SRUMObjective(tiny_pipe, config.constraint_weight, config.cfg_dropout, empty_prompt_like)
    trainer = Trainer(tiny_pipe.transformer, objective, dataset, config)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["lr"] == 0.0
    for _ in range(50):
        trainer.lr_scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    for _ in range(100):
        trainer.lr_scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-5)
