import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from selfgen import PlenopticDreamerPipeline
from selfgen.data.multiview import (
    SYNTHETIC_CAMERA_DISTANCE,
    MultiViewSceneDataset,
    WalkAwayScenes,
    default_intrinsics,
    look_at,
    normalize_pose_scale,
    rotate_about_vertical,
)
from selfgen.eval.multiview import MAX_PSNR
from selfgen.train.plenoptic import (
    METHOD,
    PlenopticConfig,
    PlenopticObjective,
    SelfGeneratedViews,
    build_dataset,
    build_pipeline,
    build_transformer,
    generate_bank,
    chain_scores,
    generate,
    held_out_scenes,
    paired_differences,
    shift_sigmas,
    train,
    walk_away_scene_scores,
    walk_away_scores,
    write_video,
)
from selfgen.train.registry import discover_methods


def _config(tmp_path, **overrides) -> PlenopticConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), num_scenes=4, num_views=3, num_frames=3, size=16, patch_size=8,
        hidden_size=32, depth=1, num_heads=2, max_train_steps=100, train_batch_size=2, learning_rate=3e-3,
        logging_steps=1, checkpointing_steps=0, report_to=None,
    )
    values.update(overrides)
    return PlenopticConfig(**values)


def _batch(count: int = 4) -> dict:
    dataset = MultiViewSceneDataset(count, num_views=3, num_frames=3, size=16, include_scene=False)
    return torch.utils.data.default_collate([dataset[index] for index in range(count)])


def test_progressive_context_scaling_and_single_in(tmp_path):
    objective = PlenopticObjective(_config(tmp_path, max_conditions=2, context_warmup_fraction=0.5))
    counts = []
    for step in (0, 24, 25, 99):
        objective.global_step = step
        counts.append(objective.max_conditions_now())
    assert counts == [1, 1, 2, 2]
    flat = PlenopticObjective(_config(tmp_path, progressive_context=False))
    assert flat.max_conditions_now() == 2
    single = PlenopticObjective(_config(tmp_path, single_in=True, max_conditions=1))
    batch = _batch(4)
    targets, views = single.pick_views(batch["cameras"], batch["intrinsics"], 16)
    assert (views == 0).all() and ((targets >= 1) & (targets <= 2)).all()
    objective.global_step = 99
    for _ in range(8):
        targets, views = objective.pick_views(batch["cameras"], batch["intrinsics"], 16)
        assert not (views == targets[:, None]).any()  # a target never conditions itself


def test_fov_selection_conditions_on_the_view_nearest_the_target(tmp_path):
    batch = _batch(4)
    cameras = batch["cameras"].clone()
    cameras[:, 1] = torch.from_numpy(rotate_about_vertical(cameras[:, 2].double().numpy(), 0.05)).float()  # view 1 beside view 2
    cameras[:, 0] = torch.from_numpy(rotate_about_vertical(cameras[:, 2].double().numpy(), np.pi)).float()  # source opposite
    fov = PlenopticObjective(_config(tmp_path, progressive_context=False, max_conditions=1))
    torch.manual_seed(0)
    for _ in range(6):
        targets, views = fov.pick_views(cameras, batch["intrinsics"], 16)
        assert (views[:, 0] == 3 - targets).all()  # target 2 gets view 1, target 1 gets view 2; never the far source
    random_pick = PlenopticObjective(_config(tmp_path, progressive_context=False, max_conditions=1, condition_selection="random"))
    picks = torch.cat([random_pick.pick_views(cameras, batch["intrinsics"], 16)[1][:, 0] for _ in range(10)])
    assert (picks == 0).any()


def test_loss_falls_on_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    config = _config(tmp_path, self_conditioning_prob=0.0, clean_prefix_prob=0.0, progressive_context=False)
    model, objective, batch = build_transformer(config), PlenopticObjective(config), _batch(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_at(seed: int) -> float:
        torch.manual_seed(seed)
        with torch.no_grad():
            return objective.compute_loss(model, batch)[0].item()

    before = np.mean([loss_at(seed) for seed in range(3)])
    for _ in range(20):
        loss, _ = objective.compute_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert np.mean([loss_at(seed) for seed in range(3)]) < 0.95 * before


def test_self_conditioning_replaces_generated_views_but_never_the_source(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = _config(tmp_path, self_conditioning_prob=1.0, self_conditioning_start=0.0)
    model, objective, batch = build_transformer(config), PlenopticObjective(config), _batch(2)
    seen = {}
    original = objective.self_generate

    def spy(model, videos, cameras, intrinsics, views, batch=None):
        seen["views"] = views.clone()
        seen["generated"] = original(model, videos, cameras, intrinsics, views, batch)
        return seen["generated"]

    monkeypatch.setattr(objective, "self_generate", spy)
    monkeypatch.setattr(objective, "pick_views", lambda cameras, intrinsics, size: (torch.tensor([2, 2]), torch.tensor([[0, 1], [1, 0]])))
    _, logs = objective.compute_loss(model, batch)
    assert logs["self_conditioned"] == 0.5  # the two non-source slots of four
    assert seen["generated"].shape == (2, 2, 3, 3, 16, 16)
    objective.config.self_conditioning_start = 0.5  # not yet active at step 0
    assert "self_conditioned" not in objective.compute_loss(model, batch)[1]


def test_train_export_and_generate_from_files(tmp_path):
    assert discover_methods()["plenoptic"] is METHOD
    config = _config(tmp_path, max_train_steps=2, self_conditioning_start=0.0, export_dtype="float16")
    result = train(config)
    assert (result.pipeline_dir / "model_index.json").is_file()
    stored = load_file(result.pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in stored.values()} == {torch.float16}  # halved on disk ...
    assert PlenopticDreamerPipeline.from_pretrained(result.pipeline_dir).transformer.dtype == torch.float32  # ... float32 in use

    rng = np.random.default_rng(0)
    write_video(rng.random((3, 24, 24, 3)), tmp_path / "src.mp4", fps=4)
    dataset = MultiViewSceneDataset(1, num_views=3, num_frames=3, size=16)
    cameras = dataset[0]["cameras"].numpy()
    K = default_intrinsics(24).tolist()
    (tmp_path / "src.json").write_text(json.dumps({"cameras": cameras[0].tolist(), "intrinsics": K}))
    (tmp_path / "targets.json").write_text(json.dumps([cameras[1].tolist(), {"cameras": cameras[2].tolist()}]))
    out = generate(
        str(result.pipeline_dir), tmp_path / "out", video=str(tmp_path / "src.mp4"), cameras=str(tmp_path / "src.json"),
        targets=str(tmp_path / "targets.json"), num_inference_steps=2,
    )
    assert [p.split("/")[-1] for p in out["videos"]] == ["target_0.mp4", "target_1.mp4"]
    assert (tmp_path / "out" / "grid.png").is_file() and out["conditions"][0] == [0]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        generate(str(result.pipeline_dir), tmp_path / "o2", video=str(tmp_path / "src.mp4"),
                 cameras=str(tmp_path / "nope.json"), targets=str(tmp_path / "targets.json"))
    depth = np.full((3, 24, 24), 2.0)
    depth[:, :4] = np.inf  # sky in the top rows
    np.save(tmp_path / "depth.npy", depth)
    seen = {}
    check_depth = PlenopticDreamerPipeline.check_depth

    def spy(pipe, source_depth, num_frames):
        seen["depth"] = source_depth
        return check_depth(pipe, source_depth, num_frames)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PlenopticDreamerPipeline, "check_depth", spy)
        with pytest.raises(ValueError, match="no warp input"):  # this model was trained without warp_conditioning
            generate(str(result.pipeline_dir), tmp_path / "o4", video=str(tmp_path / "src.mp4"), cameras=str(tmp_path / "src.json"),
                     targets=str(tmp_path / "targets.json"), depth=str(tmp_path / "depth.npy"))
    _, scale = normalize_pose_scale(np.stack([cameras[0], cameras[1], cameras[2]]), SYNTHETIC_CAMERA_DISTANCE)
    assert seen["depth"].shape == (3, 16, 16) and np.isinf(seen["depth"][:, :2]).all()  # resized like the frames
    np.testing.assert_allclose(seen["depth"][:, 4:], 2.0 * scale)  # and rescaled with the cameras
    np.save(tmp_path / "bad_depth.npy", np.full((3, 24, 23), 2.0))
    with pytest.raises(ValueError, match=r"bad_depth.npy holds \(3, 24, 23\); expected one array of shape \(3, 24, 24\)"):
        generate(str(result.pipeline_dir), tmp_path / "o5", video=str(tmp_path / "src.mp4"), cameras=str(tmp_path / "src.json"),
                 targets=str(tmp_path / "targets.json"), depth=str(tmp_path / "bad_depth.npy"))
    np.save(tmp_path / "neg_depth.npy", -depth)
    with pytest.raises(ValueError, match="neg_depth.npy: depths must be positive"):
        generate(str(result.pipeline_dir), tmp_path / "o6", video=str(tmp_path / "src.mp4"), cameras=str(tmp_path / "src.json"),
                 targets=str(tmp_path / "targets.json"), depth=str(tmp_path / "neg_depth.npy"))
    (tmp_path / "short.json").write_text(json.dumps({"cameras": cameras[0][:2].tolist(), "intrinsics": K}))
    with pytest.raises(ValueError, match="has 2 camera matrices but the video has 3 frames"):
        generate(str(result.pipeline_dir), tmp_path / "o3", video=str(tmp_path / "src.mp4"),
                 cameras=str(tmp_path / "short.json"), targets=str(tmp_path / "targets.json"))


def test_config_rejects_impossible_context(tmp_path):
    with pytest.raises(ValueError, match="max_conditions"):
        _config(tmp_path, num_views=3, max_conditions=3)
    with pytest.raises(ValueError, match="self_conditioning_prob"):
        _config(tmp_path, self_conditioning_prob=1.5)
    with pytest.raises(ValueError, match="condition_selection"):
        _config(tmp_path, condition_selection="nearest")
    with pytest.raises(ValueError, match="timestep_shift"):
        _config(tmp_path, timestep_shift=0.0)


def test_timestep_shift_moves_training_noise_towards_one_and_shift_one_is_the_identity():
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shift_sigmas(u, 1.0), u)  # the default draws the old noise levels
    shifted = shift_sigmas(u, 3.0)
    torch.testing.assert_close(shift_sigmas(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))
    assert (shifted >= u).all() and (shifted > 0.8).float().mean() > 0.35 > (u > 0.8).float().mean()


def test_copy_source_floor_scores_and_standard_errors():
    scores = chain_scores(None, held_out_scenes(2, 2, 2, 16), "source", 2, 2, 0)["scores"]
    assert len(scores["psnr"]) == 3 and 5.0 < scores["mean_psnr"] < 40.0  # A, B, then A' again
    assert scores["sync_psnr"] == MAX_PSNR and scores["standard_error"]["sync_psnr"] == 0.0  # A and A' are both the source
    assert scores["standard_error"]["mean_psnr"] > 0


def test_offline_self_conditioning_builds_a_bank_of_chains_and_trains_on_it(tmp_path):
    first = train(_config(tmp_path, max_train_steps=2))
    config = _config(
        tmp_path, output_dir=str(tmp_path / "finetune"), max_train_steps=1, pretrained=str(first.pipeline_dir),
        self_conditioning="offline", self_conditioning_prob=1.0, self_conditioning_start=0.0, self_conditioning_steps=2,
    )
    train(config)
    bank = np.load(tmp_path / "finetune" / "self_conditioning_bank.npz")["videos"]
    assert bank.shape == (4, 2, 3, 16, 16, 3) and bank.dtype == np.uint8  # scenes, views 1..V-1
    dataset = build_dataset(config)
    item = dataset[1]
    pipe = PlenopticDreamerPipeline.from_pretrained(first.pipeline_dir)
    chain = pipe(source_video=item["videos"][0].numpy(), source_cameras=item["cameras"][0].numpy(),
                 target_cameras=list(item["cameras"][1:].numpy()), intrinsics=item["intrinsics"].numpy(),
                 retrieval_k=2, num_inference_steps=2, generator=torch.Generator().manual_seed(1)).videos
    np.testing.assert_array_equal(bank[1], (np.stack(chain) * 255).round().astype(np.uint8))  # the pipeline's own chain

    batch = torch.utils.data.default_collate([SelfGeneratedViews(dataset, bank)[index] for index in (0, 1)])
    objective, model = PlenopticObjective(config), pipe.transformer
    views = torch.tensor([[0, 1], [1, 0]])
    objective.pick_views = lambda cameras, intrinsics, size: (torch.tensor([2, 2]), views)
    seen = {}

    def record(module, args):
        seen["conditions"] = args[4].clone()

    hook = model.register_forward_pre_hook(record)
    _, logs = objective.compute_loss(model, batch)
    hook.remove()
    truth = batch["videos"].permute(0, 1, 2, 5, 3, 4) * 2 - 1
    generated = torch.from_numpy(bank[:, 0]).permute(0, 1, 4, 2, 3).float() / 255 * 2 - 1
    torch.testing.assert_close(seen["conditions"][0, 1], generated[0])  # view 1 comes from the bank ...
    torch.testing.assert_close(seen["conditions"][1, 0], generated[1])
    torch.testing.assert_close(seen["conditions"][0, 0], truth[0, 0])  # ... the source never does
    assert (seen["conditions"][0, 1] - truth[0, 1]).abs().max() > 0.1 and logs["self_conditioned"] == 0.5


def test_offline_bank_of_a_warp_conditioned_model_is_made_with_the_source_depth(tmp_path):
    """The bank holds the chains the model makes at evaluation: a warp-conditioned model is given the source's
    depth (an empty warp would be a different, worse model's chains)."""
    first = train(_config(tmp_path, max_train_steps=2, warp_conditioning=True))
    pipe = PlenopticDreamerPipeline.from_pretrained(first.pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    torch.nn.init.normal_(pipe.transformer.warp_embed.weight, std=0.5)  # make the warp input matter
    dataset = MultiViewSceneDataset(2, num_views=3, num_frames=3, size=16, include_scene=False, return_depth=True)
    bank = generate_bank(pipe, dataset, retrieval_k=2, num_inference_steps=1, seed=0)
    item = dataset[1]
    run = lambda **depth: pipe(source_video=item["videos"][0].numpy(), source_cameras=item["cameras"][0].numpy(),
                               target_cameras=list(item["cameras"][1:].numpy()), intrinsics=item["intrinsics"].numpy(), retrieval_k=2,
                               num_inference_steps=1, generator=torch.Generator().manual_seed(1), **depth).videos
    with_depth = (np.stack(run(source_depth=item["depths"][0].numpy())) * 255).round().astype(np.uint8)
    without = (np.stack(run()) * 255).round().astype(np.uint8)
    assert np.abs(bank[1].astype(int) - with_depth.astype(int)).max() <= 1  # uint8 of computed floats: one level of rounding
    assert np.abs(with_depth.astype(int) - without.astype(int)).max() > 10


def test_offline_self_conditioning_errors(tmp_path):
    with pytest.raises(ValueError, match="pretrained"):
        _config(tmp_path, self_conditioning="offline")
    with pytest.raises(ValueError, match="self_conditioning must be one of"):
        _config(tmp_path, self_conditioning="sometimes")
    missing = _config(tmp_path, self_conditioning="offline", self_conditioning_bank=str(tmp_path / "nope.npz"))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        train(missing)
    np.savez(tmp_path / "small.npz", videos=np.zeros((2, 2, 3, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected \(4, 2, 3, 16, 16, 3\) uint8"):
        train(_config(tmp_path, self_conditioning="offline", self_conditioning_bank=str(tmp_path / "small.npz")))
    objective = PlenopticObjective(_config(tmp_path, self_conditioning="offline", self_conditioning_bank="unused.npz",
                                           self_conditioning_prob=1.0, self_conditioning_start=0.0))
    with pytest.raises(ValueError, match="generated_videos"):
        objective.compute_loss(build_transformer(objective.config), _batch(2))


def test_chain_degradation_and_paired_differences():
    scores = chain_scores(None, held_out_scenes(3, 4, 2, 16), "source", 2, 2, 0)["scores"]
    psnrs = np.asarray(scores["psnr"])
    assert scores["drop_b_to_last"] == pytest.approx(psnrs[-2] - psnrs[1])
    assert np.isfinite(scores["degradation_slope"]) and scores["standard_error"]["degradation_slope"] > 0
    shifted = {"per_scene": {key: [value + 0.5 for value in values] for key, values in scores["per_scene"].items()}}
    differences = paired_differences(shifted, scores)
    assert differences["mean_psnr"] == pytest.approx([0.5, 0.0]) and differences["degradation_slope"] == pytest.approx([0.5, 0.0])
    assert differences["sync_psnr_unseen"] == pytest.approx([0.5, 0.0])  # the headline sync is paired by scene too


def test_walk_away_scores_exposure_gap_and_loop_closure(tmp_path):
    torch.manual_seed(0)
    model = build_transformer(_config(tmp_path))
    with torch.no_grad():  # adaLN-zero starts as the identity; give the blocks weights so conditions matter
        model.proj_out.weight.normal_(std=0.1)
        for block in model.blocks:
            block.modulation[-1].weight.normal_(std=0.05)
    pipe = build_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    item = WalkAwayScenes(1, num_views=4, num_frames=3, size=16)[0]
    scores = walk_away_scene_scores(pipe, item, "fov", 2, 2, seed=5)
    assert len(scores["chain_psnr"]) == len(scores["teacher_psnr"]) == 3 and len(scores["chain"]) == 5
    # view 1 has only the source in memory either way and starts from the same noise: no gap
    assert abs(scores["exposure_gap"][0]) < 1e-6
    assert abs(scores["exposure_gap"][1]) > 1e-5  # view 2 sees generated view 1 in the chain, the real one when teacher-forced
    np.testing.assert_allclose(scores["exposure_gap"], np.subtract(scores["teacher_psnr"], scores["chain_psnr"]))
    copy = walk_away_scores(None, WalkAwayScenes(2, num_views=4, num_frames=3, size=16), "source", 2, 2, 0)
    assert copy["mean_exposure_gap"] == 0.0 and copy["loop_sync_psnr"] == MAX_PSNR  # identical copies
    assert copy["source_in_context"] == 1.0 and len(copy["per_scene"]["chain_slope"]) == 2


def test_training_on_a_user_folder_with_per_view_intrinsics(tmp_path):
    frames = np.random.default_rng(0).random((5, 24, 24, 3))
    for index, focal in enumerate((24.0, 30.0, 36.0)):
        angle = 0.5 * index
        cameras = np.stack([look_at(np.array([4 * np.sin(angle + 0.1 * f), 1.0, 4 * np.cos(angle + 0.1 * f)]), np.zeros(3)) for f in range(5)])
        folder = tmp_path / "data" / "scene"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(frames, folder / f"v{index}.mp4", fps=4)
        K = default_intrinsics(24)
        K[0, 0] = K[1, 1] = focal
        (folder / f"v{index}.json").write_text(json.dumps({"cameras": cameras.tolist(), "intrinsics": K.tolist()}))
    config = _config(tmp_path, data=str(tmp_path / "data"), num_views=6, max_conditions=2, max_train_steps=2)
    dataset = build_dataset(config)  # num_views=6 in the config, 3 views on disk: uses 3
    assert dataset.num_views == 3 and len(dataset) == 2  # frames 0-2 and 2-4
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["intrinsics"].shape == (2, 3, 3, 3)
    loss, _ = PlenopticObjective(config).compute_loss(build_transformer(config), batch)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="max_conditions=3 needs scenes of at least 4 views"):
        build_dataset(_config(tmp_path, data=str(tmp_path / "data"), num_views=6, max_conditions=3))


def test_equal_budget_finetune_arms_differ_from_the_control_only_in_their_mechanism():
    """configs/plenoptic_scenes_{selfcond,online_selfcond,single_in}.yaml are the control
    (plenoptic_scenes_continue.yaml) with one mechanism switched on: same start, seed, data, steps, lr, EMA."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    control = asdict(load_config(PlenopticConfig, root / "plenoptic_scenes_continue.yaml"))
    assert control["pretrained"] == "assets/plenoptic-scenes" and control["self_conditioning_prob"] == 0.0  # read, never written
    assert control["export_dir"] is None and not control["freeze_trunk"]  # the whole model trains on its own generations
    assert control["warp_conditioning"] and control["refiner_width"] == 32 and control["timestep_shift"] == 3.0  # the asset's recipe
    expected = {
        "plenoptic_scenes_selfcond.yaml": {"self_conditioning": "offline", "self_conditioning_prob": 0.5},
        "plenoptic_scenes_online_selfcond.yaml": {"self_conditioning_prob": 0.5},
        "plenoptic_scenes_single_in.yaml": {"single_in": True},
    }
    for name, changes in expected.items():
        arm = asdict(load_config(PlenopticConfig, root / name))
        differing = {key: arm[key] for key in arm if arm[key] != control[key] and key not in ("output_dir", "export_dir")}
        assert differing == changes, name


def test_two_stage_asset_config_starts_from_stage_one_output_not_from_assets():
    """configs/plenoptic_scenes_stage2.yaml (the bundled asset's stage 2) reads stage 1's export (never assets/); it
    is the fine-tuning control's recipe (shift 3) with 600 steps and online self-conditioning, before the warp
    input and the refiner."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    stage1 = load_config(PlenopticConfig, root / "plenoptic_scenes.yaml")
    stage2 = asdict(load_config(PlenopticConfig, root / "plenoptic_scenes_stage2.yaml"))
    assert stage1.pretrained is None and stage1.export_dir is None and stage2["export_dir"] is None
    assert Path(stage2["pretrained"]) == stage1.pipeline_dir
    control = asdict(load_config(PlenopticConfig, root / "plenoptic_scenes_continue.yaml"))
    differing = {key: stage2[key] for key in stage2 if stage2[key] != control[key] and key not in ("output_dir", "checkpointing_steps")}
    assert differing == {"pretrained": stage2["pretrained"], "max_train_steps": 600, "self_conditioning_prob": 0.5,
                         "warp_conditioning": False, "refiner_width": 0}  # the arms start from the four-stage asset


def test_asset_stage_three_is_stage_two_plus_the_warp_input_read_from_stage_two_output():
    """configs/plenoptic_scenes_warp.yaml (stage 3 of the bundled asset) reads stage 2's export (never assets/)
    and differs from stage 2 only in the warp input."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    stage2 = load_config(PlenopticConfig, root / "plenoptic_scenes_stage2.yaml")
    stage3 = asdict(load_config(PlenopticConfig, root / "plenoptic_scenes_warp.yaml"))
    assert Path(stage3["pretrained"]) == stage2.pipeline_dir and stage3["export_dir"] is None
    stage2 = asdict(stage2)
    differing = {key: stage3[key] for key in stage3 if stage3[key] != stage2[key] and key not in ("output_dir",)}
    assert differing == {"pretrained": stage3["pretrained"], "warp_conditioning": True}


def test_pretrained_starts_from_the_exported_weights(tmp_path):
    first = train(_config(tmp_path, max_train_steps=2))
    stored = load_file(str(first.pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    model = build_transformer(_config(tmp_path, output_dir=str(tmp_path / "again"), pretrained=str(first.pipeline_dir), hidden_size=64))
    assert model.config.hidden_size == 32  # the architecture comes from the pretrained folder, not the config
    for name, tensor in model.state_dict().items():
        if name in stored:
            assert torch.equal(tensor, stored[name].to(tensor.dtype)), name


def test_warp_conditioning_finetunes_a_plain_model_from_zero_and_its_warp_gets_gradient(tmp_path):
    first = train(_config(tmp_path, max_train_steps=1))
    config = _config(tmp_path, output_dir=str(tmp_path / "warp"), pretrained=str(first.pipeline_dir), warp_conditioning=True, warp_drop_prob=0.0)
    plain, model = build_transformer(_config(tmp_path, pretrained=str(first.pipeline_dir))), build_transformer(config)
    assert model.config.warp_conditioning and not plain.config.warp_conditioning
    assert torch.count_nonzero(model.warp_embed.weight) == 0
    for name, tensor in plain.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    dataset = MultiViewSceneDataset(2, num_views=3, num_frames=3, size=16, include_scene=False, return_depth=True)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    objective = PlenopticObjective(config)
    warps = objective.source_warps(batch, torch.tensor([0, 1]), torch.tensor([1, 2]))
    assert warps.shape == (2, 3, 4, 16, 16) and 0 < warps[:, :, 3].mean() < 1  # landed mask: some pixels, not all
    torch.manual_seed(0)
    loss, _ = objective.compute_loss(model, batch)
    loss.backward()
    assert model.warp_embed.weight.grad.abs().sum() > 0
    objective.config.warp_drop_prob = 1.0
    assert torch.count_nonzero(objective.source_warps(batch, torch.tensor([0, 1]), torch.tensor([1, 2]))) == 0
    with pytest.raises(ValueError, match="depths"):
        objective.source_warps(_batch(2), torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="warp_conditioning: true"):
        build_transformer(_config(tmp_path, pretrained=str(train(config.__class__(**{**config.__dict__, "max_train_steps": 1})).pipeline_dir)))
    with pytest.raises(ValueError, match="depth"):
        _config(tmp_path, data=str(tmp_path), warp_conditioning=True)


def test_refiner_finetunes_a_trained_model_from_zero_with_a_frozen_trunk(tmp_path):
    """refiner_width adds the zero-initialised pixel refiner to a pretrained model; freeze_trunk trains only it:
    after a training step every other weight is bit-identical and the refiner has moved."""
    first = train(_config(tmp_path, max_train_steps=1, warp_conditioning=True))
    config = _config(tmp_path, output_dir=str(tmp_path / "refiner"), pretrained=str(first.pipeline_dir), warp_conditioning=True,
                     refiner_width=8, freeze_trunk=True, max_train_steps=2, use_ema=False)
    plain, model = build_transformer(_config(tmp_path, pretrained=str(first.pipeline_dir), warp_conditioning=True)), build_transformer(config)
    assert torch.count_nonzero(model.refiner.convs[-1].weight) == 0
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {name for name, _ in model.named_parameters() if name.startswith("refiner.")}
    result = train(config)
    trained = load_file(str(result.pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    for name, tensor in plain.state_dict().items():
        assert torch.equal(trained[name], tensor), name
    assert torch.count_nonzero(trained["refiner.convs.4.weight"]) > 0
    with pytest.raises(ValueError, match="refiner_width > 0"):
        _config(tmp_path, freeze_trunk=True)
    with pytest.raises(ValueError, match="refiner_width must be >= 0"):
        _config(tmp_path, refiner_width=-1)
    with pytest.raises(ValueError, match="refiner_width 8"):
        build_transformer(_config(tmp_path, pretrained=str(result.pipeline_dir), warp_conditioning=True, refiner_width=16))


def test_asset_stage_four_is_stage_three_plus_the_frozen_trunk_refiner_read_from_stage_three_output():
    """configs/plenoptic_scenes_refiner.yaml reads stage 3's export (never assets/) and differs from stage 3 in the
    refiner, the frozen trunk, and the new head's learning rate only."""
    from dataclasses import asdict
    from pathlib import Path

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    stage3 = load_config(PlenopticConfig, root / "plenoptic_scenes_warp.yaml")
    stage4 = asdict(load_config(PlenopticConfig, root / "plenoptic_scenes_refiner.yaml"))
    assert Path(stage4["pretrained"]) == stage3.pipeline_dir and stage4["export_dir"] is None
    stage3 = asdict(stage3)
    differing = {key for key in stage4 if stage4[key] != stage3[key] and key != "output_dir"}
    assert differing == {"pretrained", "refiner_width", "freeze_trunk", "learning_rate"}
