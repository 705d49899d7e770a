import pytest
import torch

from selfgen import DDAEPipeline
from selfgen.data.textures import TEXTURE_SOURCES, load_texture_arrays
from diffusers import DDPMScheduler

from selfgen.train.ddae import (
    METHOD, DDAEConfig, DDAEObjective, build_transformer, injection_by_timestep, stored_copy, train, varying_share,
)
from selfgen.train.losses import info_nce


def tiny_config(tmp_path, **overrides) -> DDAEConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        resolution=8,
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        self_condition_layer=1,
        train_batch_size=32,
        max_train_steps=40,
        learning_rate=3e-3,
        logging_steps=1,
        checkpointing_steps=0,
        report_to=None,
        feature_timestep=50,
    )
    values.update(overrides)
    return DDAEConfig(**values)


def test_loss_falls_and_the_export_loads(tmp_path):
    result = train(tiny_config(tmp_path))
    losses = [record["loss"] for record in result.history]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    pipe = DDAEPipeline.from_pretrained(result.pipeline_dir)
    assert pipe.transformer.config.self_conditioning and pipe.transformer.config.sample_size == 8
    assert pipe.extract_features(torch.zeros(2, 1, 8, 8)).shape == (2, 32)


def test_injection_is_logged_and_grows_from_zero(tmp_path):
    history = train(tiny_config(tmp_path, max_train_steps=12)).history
    assert history[0]["injection_norm"] == 0.0  # step 1 runs with W_s = 0: c' = c
    assert history[-1]["injection_norm"] > 1e-4 and history[-1]["condition_norm"] > 0
    assert "injection_varying" in history[-1]  # logged every step; its value is what docs/ddae.md reports


def test_centering_trains_exports_its_running_means_and_makes_the_injection_image_specific(tmp_path):
    """With self_condition_centering the logged per-image share of the injection is well above the plain
    injection's at the same seed and budget (where W_s grows along the shared LN(z)), and the export carries
    the bucket means bit for bit."""
    plain = train(tiny_config(tmp_path / "plain", max_train_steps=12)).history
    result = train(tiny_config(tmp_path / "centered", max_train_steps=12, self_condition_centering=4))
    assert 2 * plain[-1]["injection_varying"] < result.history[-1]["injection_varying"]  # measured 0.10 vs 0.37
    pipe = DDAEPipeline.from_pretrained(result.pipeline_dir)
    model = pipe.transformer
    assert model.config.self_condition_centering == 4 and model.semantic_mean_seen.all()
    assert model.semantic_mean.abs().sum() > 0
    exported = DDAEPipeline.from_pretrained(result.pipeline_dir).transformer
    assert torch.equal(exported.semantic_mean, model.semantic_mean)


def test_varying_share_and_the_injection_measured_at_fixed_timesteps(tmp_path):
    row = torch.tensor([[3.0, -1.0, 2.0]])
    assert varying_share(row.expand(5, 3)) == pytest.approx(0.0, abs=1e-7)  # a constant offset
    assert varying_share(torch.cat([row, -row])) == pytest.approx(1.0)  # zero mean: all of it varies
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    config = tiny_config(tmp_path)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    model = build_transformer(config)
    stats = injection_by_timestep(DDAEPipeline(transformer=model, scheduler=scheduler), images, timesteps=(0, 500))
    assert set(stats) == {"t=0", "t=500"}
    assert stats["t=0"]["injection_norm"] == pytest.approx(0.0, abs=1e-9)  # W_s starts at zero
    assert 0 < stats["t=0"]["normalized_semantic_varying"] < 1  # different images pool to different z
    with torch.no_grad():
        model.self_condition_embed[-1].bias.fill_(1.0)  # a pure offset: nothing of it varies between images
    offset = injection_by_timestep(DDAEPipeline(transformer=model, scheduler=scheduler), images)["t=0"]
    assert offset["injection_norm"] > 1 and offset["injection_varying"] == pytest.approx(0.0, abs=1e-9)
    ablation = build_transformer(tiny_config(tmp_path, self_conditioning=False))
    assert injection_by_timestep(DDAEPipeline(transformer=ablation, scheduler=scheduler), images) == {}


def contrastive_objective(tmp_path, momentum: float):
    config = tiny_config(tmp_path, contrastive_weight=0.5, projection_dim=16, contrastive_teacher_momentum=momentum)
    model = build_transformer(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return DDAEObjective(DDPMScheduler(num_train_timesteps=1000), config, model), model


def test_contrastive_teacher_is_an_ema_of_the_student_and_is_what_the_loss_reads(tmp_path):
    objective, student = contrastive_objective(tmp_path, momentum=0.9)
    teacher = objective.teacher
    assert teacher is not student and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.zero_()
    initial = [p.detach().clone() for p in student.parameters()]
    batch = {"pixel_values": torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))}
    torch.manual_seed(0)
    _, logs_from_zero_teacher = objective.compute_loss(student, batch)
    for teacher_param, student_param in zip(teacher.parameters(), initial):
        torch.testing.assert_close(teacher_param, 0.1 * student_param)  # 0.9 * 0 + 0.1 * student
    objective.teacher.load_state_dict(student.state_dict())
    torch.manual_seed(0)
    _, logs_from_student_teacher = objective.compute_loss(student, batch)
    # the same student pass, a different teacher: the loss reads the teacher's weights
    assert abs(logs_from_zero_teacher["contrastive_loss"] - logs_from_student_teacher["contrastive_loss"]) > 1e-3
    assert logs_from_zero_teacher["diffusion_loss"] == pytest.approx(logs_from_student_teacher["diffusion_loss"])


def test_contrastive_self_distillation_with_self_conditioning_and_classes_trains_and_checkpoints_the_teacher(tmp_path):
    config = tiny_config(
        tmp_path, max_train_steps=4, contrastive_weight=0.5, projection_dim=16, num_classes=10, checkpointing_steps=2
    )
    history = train(config).history
    assert all(torch.isfinite(torch.tensor(record["contrastive_loss"])) for record in history)
    assert list((tmp_path / "run" / "checkpoints" / "step-2").glob("custom_checkpoint_*"))  # the EMA teacher
    with pytest.raises(ValueError, match="projection_dim"):
        tiny_config(tmp_path, contrastive_weight=0.5)
    with pytest.raises(ValueError, match="contrastive_teacher_momentum"):
        tiny_config(tmp_path, contrastive_weight=0.5, projection_dim=8, contrastive_teacher_momentum=1.0)


def test_min_snr_weighting_turns_down_only_the_low_noise_steps(tmp_path):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    generator = torch.Generator().manual_seed(0)
    prediction, noise = torch.randn(4, 1, 8, 8, generator=generator), torch.randn(4, 1, 8, 8, generator=generator)
    timesteps = torch.tensor([5, 100, 600, 950])
    per_sample = ((prediction - noise) ** 2).mean(dim=(1, 2, 3))
    uniform = DDAEObjective(scheduler, tiny_config(tmp_path))._diffusion_loss(prediction, noise, timesteps)
    torch.testing.assert_close(uniform, per_sample.mean())
    weighted = DDAEObjective(scheduler, tiny_config(tmp_path, snr_gamma=5.0))._diffusion_loss(prediction, noise, timesteps)
    abar = scheduler.alphas_cumprod[timesteps]
    snr = abar / (1 - abar)
    assert snr[0] > 5 > snr[3]  # t = 5 is turned down, t = 950 keeps weight 1
    torch.testing.assert_close(weighted, (per_sample * torch.clamp(snr, max=5.0) / snr).mean())
    assert weighted < uniform
    with pytest.raises(ValueError, match="snr_gamma"):
        tiny_config(tmp_path, snr_gamma=0.0)


def test_info_nce_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    normalised_s, normalised_t = student / student.norm(dim=1, keepdim=True), teacher / teacher.norm(dim=1, keepdim=True)
    logits = normalised_s @ normalised_t.T / 0.5
    expected = -(logits.diag() - logits.logsumexp(dim=1)).mean()
    torch.testing.assert_close(info_nce(student, teacher, 0.5), expected)
    assert info_nce(student, student, 0.05) < info_nce(student, teacher, 0.05)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        tiny_config(tmp_path, dataset="cifar")
    with pytest.raises(ValueError, match="in_channels: 3"):
        train(tiny_config(tmp_path, dataset="textures", resolution=32))
    from selfgen.train.config import load_config

    (tmp_path / "bad.yaml").write_text("final_conv: 'yes'\n")  # a string, not a boolean
    with pytest.raises(ValueError, match="final_conv"):
        load_config(DDAEConfig, tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match=r"export_dtype must be one of \('float32', 'float16', 'bfloat16'\), got 'fp16'"):
        tiny_config(tmp_path, export_dtype="fp16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_export_stores_rounded_weights_and_loads_them_as_float32(tmp_path, dtype):
    """Re-exporting a finished float32 run (resume at max_train_steps, the assets' rebuild path) with export_dtype
    writes every weight in that dtype, equal to the float32 export rounded; from_pretrained loads float32 (or
    torch_dtype); the model being trained is not cast, the export casts a copy."""
    from safetensors.torch import load_file

    model = build_transformer(tiny_config(tmp_path))
    assert stored_copy(model, torch.float32) is model
    assert stored_copy(model, getattr(torch, dtype)).dtype == getattr(torch, dtype) and model.dtype == torch.float32

    full = train(tiny_config(tmp_path, max_train_steps=4, checkpointing_steps=4)).pipeline_dir
    half = tmp_path / "half"
    train(tiny_config(tmp_path, max_train_steps=4, checkpointing_steps=4, resume_from="latest", export_dtype=dtype,
                      export_dir=str(half)))
    name = "transformer/diffusion_pytorch_model.safetensors"
    stored, reference = load_file(half / name), load_file(full / name)
    assert stored.keys() == reference.keys() and {v.dtype for v in reference.values()} == {torch.float32}
    for key, value in stored.items():
        assert value.dtype == getattr(torch, dtype) and torch.equal(value, reference[key].to(value.dtype)), key
    assert (half / name).stat().st_size < 0.6 * (full / name).stat().st_size
    loaded = DDAEPipeline.from_pretrained(half).transformer.state_dict()
    assert {v.dtype for v in loaded.values()} == {torch.float32}
    assert any(not torch.equal(loaded[k], reference[k]) for k in loaded)  # the rounding is real
    for key, value in loaded.items():
        assert torch.equal(value, reference[key].to(getattr(torch, dtype)).float()), key
    assert DDAEPipeline.from_pretrained(half, torch_dtype=torch.float16).transformer.dtype == torch.float16


def test_method_is_registered():
    assert METHOD.name == "ddae" and METHOD.evaluate is not None and METHOD.demo_asset == "ddae-digits"


def test_texture_crops_are_disjoint_between_splits():
    train_images, train_labels = load_texture_arrays("train")
    test_images, test_labels = load_texture_arrays("test")
    assert train_images.shape[1:] == (3, 32, 32) and train_images.dtype == torch.float32
    assert -1 <= train_images.min() and train_images.max() <= 1
    assert set(train_labels.tolist()) == set(test_labels.tolist()) == set(range(len(TEXTURE_SOURCES)))
    flat_train, flat_test = train_images.flatten(1), test_images.flatten(1)
    assert torch.cdist(flat_test, flat_train).min() > 0  # no test crop repeats a training crop
    with pytest.raises(ValueError, match="split"):
        load_texture_arrays("val")


def test_trains_on_an_image_folder(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    config = tiny_config(tmp_path, data=str(folder), in_channels=3, train_batch_size=4, max_train_steps=2)
    pipe = DDAEPipeline.from_pretrained(train(config).pipeline_dir)
    assert pipe.transformer.config.in_channels == 3


@pytest.mark.parametrize(
    "asset, config_file",
    [("ddae-digits", "ddae_digits_wide_conv"), ("ddae-digits-noselfcond", "ddae_digits_noselfcond_wide_conv")],
)
def test_bundled_checkpoint_is_what_its_config_builds(asset, config_file):
    """The asset's architecture (width, long skips, output conv, self-conditioning, feature defaults) and every
    weight's name and shape equal what `configs/<file>.yaml` (stage 1) builds (stages 2-5, `<file>_stage{2..5}.yaml`,
    continue it without changing the architecture), and every weight is stored in stage 5's `export_dtype` (float16),
    so the README's rebuild commands rebuild this asset."""
    import inspect
    import json
    from pathlib import Path

    from safetensors import safe_open

    from selfgen.train.config import load_config

    root = Path(__file__).resolve().parents[2]
    folder = root / "assets" / asset / "transformer"
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} not built")
    model = build_transformer(load_config(DDAEConfig, root / "configs" / f"{config_file}.yaml"))
    last = load_config(DDAEConfig, root / "configs" / f"{config_file}_stage5.yaml")
    assert last.export_dtype == "float16" and last.final_conv == model.config.final_conv
    saved = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}
    built = {k: v for k, v in model.config.items() if not k.startswith("_")}
    assert saved == {k: v for k, v in built.items() if k in saved}
    # options added after the asset was built load with their defaults, which must be what the config builds
    defaults = inspect.signature(type(model).__init__).parameters
    assert {k: built[k] for k in built.keys() - saved.keys()} == {k: defaults[k].default for k in built.keys() - saved.keys()}
    with safe_open(folder / "diffusion_pytorch_model.safetensors", "pt") as weights:
        shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert shapes == {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert dtypes == {"F16"}


@pytest.mark.parametrize(
    "stage, previous", [("stage2", ""), ("stage3", "_stage2"), ("wide_stage2", "_wide"), ("wide_conv_stage2", "_wide_conv"),
     ("wide_conv_stage3", "_wide_conv_stage2"), ("wide_conv_stage4", "_wide_conv_stage3"),
     ("wide_conv_stage5", "_wide_conv_stage4")]
)
def test_continuation_configs_differ_only_in_self_conditioning(stage, previous):
    """Each continuation pair (stage 2, stage 3) is one continuation with and without self-conditioning: apart from
    comments, the pipeline each starts from and where it writes, the two configs are the same, and each arm
    continues its own previous stage (the output_dir that `ddae_digits{,_noselfcond}{previous}.yaml` export to)."""
    from pathlib import Path

    import yaml

    configs = Path(__file__).resolve().parents[2] / "configs"
    with_sc = yaml.safe_load((configs / f"ddae_digits_{stage}.yaml").read_text())
    ablation = yaml.safe_load((configs / f"ddae_digits_noselfcond_{stage}.yaml").read_text())
    differing = {key for key in with_sc.keys() | ablation.keys() if with_sc.get(key) != ablation.get(key)}
    assert differing == {"self_conditioning", "pretrained", "output_dir"}
    assert with_sc["self_conditioning"] is True and ablation["self_conditioning"] is False
    for continued, arm in ((with_sc, "ddae_digits"), (ablation, "ddae_digits_noselfcond")):
        before = yaml.safe_load((configs / f"{arm}{previous}.yaml").read_text())
        assert continued["pretrained"] == f"{before['output_dir']}/pipeline" != before.get("pretrained")
        assert before["self_conditioning"] == continued["self_conditioning"] and before["seed"] == continued["seed"]


def test_continuing_from_a_pretrained_pipeline_keeps_its_weights_and_checks_the_arm(tmp_path):
    stage1 = train(tiny_config(tmp_path / "stage1", max_train_steps=3))
    start = DDAEPipeline.from_pretrained(stage1.pipeline_dir).transformer.state_dict()
    with pytest.raises(ValueError, match="self_conditioning"):
        train(tiny_config(tmp_path / "wrong", pretrained=str(stage1.pipeline_dir), self_conditioning=False))
    with pytest.raises(ValueError, match="final_conv"):  # the output head is the saved model's too
        train(tiny_config(tmp_path / "wrong", pretrained=str(stage1.pipeline_dir), final_conv=True))
    # lr 1e-9 for 2 steps: the continuation starts from stage 1's weights, not a fresh initialisation
    stage2 = train(tiny_config(tmp_path / "stage2", pretrained=str(stage1.pipeline_dir), max_train_steps=2, learning_rate=1e-9))
    continued = DDAEPipeline.from_pretrained(stage2.pipeline_dir).transformer.state_dict()
    assert continued.keys() == start.keys()
    for name in start:
        torch.testing.assert_close(continued[name], start[name], atol=1e-6, rtol=0)
    fresh = build_transformer(tiny_config(tmp_path / "fresh")).state_dict()
    assert not torch.allclose(fresh["patch_embed.weight"], start["patch_embed.weight"])
