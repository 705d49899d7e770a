import json

import pytest
import torch
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.data import Subset

from selfgen.data.digits import DigitsDataset
from selfgen.pipelines.unconditional import UnconditionalDiffusionPipeline
from selfgen.train import ddpm
from selfgen.train.trainer import Trainer, TrainerCallback, list_checkpoints, save_atomically


class KillAtStep(TrainerCallback):
    """Simulates the process being killed right after update ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, logs):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt(f"killed at step {self.step}")


def _trainer(config, dataset, callbacks=()):
    set_seed(config.seed)
    unet = ddpm.build_unet(config)
    objective = ddpm.NoisePredictionObjective(DDPMScheduler(num_train_timesteps=100))
    return Trainer(unet, objective, dataset, config, callbacks=callbacks)


def _mean(values):
    return sum(values) / len(values)


def test_loss_falls_on_digits(tiny_ddpm_config):
    config = tiny_ddpm_config(max_train_steps=60, train_batch_size=32)
    result = ddpm.train(config)
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 60
    assert _mean(losses[-10:]) < 0.6 * _mean(losses[:5])
    metrics_file = [json.loads(line) for line in open(f"{config.output_dir}/logs/metrics.jsonl")]
    assert [record["step"] for record in metrics_file] == list(range(1, 61))
    reloaded = UnconditionalDiffusionPipeline.from_pretrained(result.pipeline_dir)
    assert reloaded.unet.config.sample_size == 8


def test_trained_export_reloads_and_samples_bit_for_bit(tiny_ddpm_config):
    """Trainer -> export -> from_pretrained: the same images as the pipeline built in memory at export."""
    config = tiny_ddpm_config(max_train_steps=5)
    exported = {}

    def export(model, directory):
        exported["pipe"] = UnconditionalDiffusionPipeline(unet=model, scheduler=DDPMScheduler(num_train_timesteps=100))
        exported["pipe"].save_pretrained(directory)

    set_seed(config.seed)
    trainer = Trainer(
        ddpm.build_unet(config), ddpm.NoisePredictionObjective(DDPMScheduler(num_train_timesteps=100)),
        DigitsDataset("train", resolution=8), config, export_fn=export,
    )
    result = trainer.train()

    def sample(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=4, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images

    in_memory = exported["pipe"]
    in_memory.unet.eval()
    before = sample(in_memory)
    after = sample(UnconditionalDiffusionPipeline.from_pretrained(result.pipeline_dir))
    assert before.std() > 0
    torch.testing.assert_close(torch.from_numpy(before), torch.from_numpy(after))


def test_bf16_autocast_trains(tiny_ddpm_config):
    result = ddpm.train(tiny_ddpm_config(mixed_precision="bf16", max_train_steps=30))
    losses = [record["loss"] for record in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert _mean(losses[-5:]) < _mean(losses[:5])


def test_model_after_bf16_training_runs_like_its_reloaded_export(tiny_ddpm_config):
    """No autocast wrapper is left on the trained model: its forward is the fp32 one of the export."""
    config = tiny_ddpm_config(mixed_precision="bf16", max_train_steps=3)
    trainer = _trainer(config, DigitsDataset("train", resolution=8))
    result = trainer.train()
    model = trainer.unwrapped_model.eval()
    reloaded = UNet2DModel.from_pretrained(result.pipeline_dir).eval()
    sample, timestep = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 50])
    with torch.no_grad():
        trained_output, reloaded_output = model(sample, timestep).sample, reloaded(sample, timestep).sample
    assert trained_output.dtype == torch.float32
    torch.testing.assert_close(trained_output, reloaded_output)


def test_resume_is_exact(tiny_ddpm_config, tmp_path):
    """8 steps straight == 6 steps, killed, resumed from the step-4 checkpoint to 8 (weights, EMA, data order, RNG)."""
    dataset = Subset(DigitsDataset("train", resolution=8), range(40))  # 5 batches/epoch: the run crosses epochs
    common = dict(
        max_train_steps=8,
        train_batch_size=8,
        gradient_accumulation_steps=2,
        checkpointing_steps=4,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        use_ema=True,
        ema_decay=0.9,
    )
    straight = _trainer(tiny_ddpm_config(output_dir=str(tmp_path / "straight"), **common), dataset)
    straight_result = straight.train()

    killed_config = tiny_ddpm_config(output_dir=str(tmp_path / "killed"), **common)
    with pytest.raises(KeyboardInterrupt):
        _trainer(killed_config, dataset, callbacks=[KillAtStep(6)]).train()
    assert [path.name for path in list_checkpoints(killed_config.output_dir)] == ["step-4"]

    killed_config.resume_from = "latest"
    resumed = _trainer(killed_config, dataset)
    resumed_result = resumed.train()
    assert resumed_result.global_step == straight_result.global_step == 8

    for (name, expected), actual in zip(
        straight.unwrapped_model.state_dict().items(), resumed.unwrapped_model.state_dict().values()
    ):
        assert torch.equal(expected, actual), name
    exported = [UNet2DModel.from_pretrained(path) for path in (straight_result.pipeline_dir, resumed_result.pipeline_dir)]
    for expected, actual in zip(exported[0].parameters(), exported[1].parameters()):
        assert torch.equal(expected, actual)
    # the export holds EMA weights, which differ from the raw weights
    assert not torch.equal(next(exported[0].parameters()), next(straight.unwrapped_model.parameters()))
    assert straight_result.history[-1]["loss"] == resumed_result.history[-1]["loss"]


def test_checkpoints_are_pruned_and_never_left_half_written(tiny_ddpm_config):
    config = tiny_ddpm_config(max_train_steps=8, checkpointing_steps=2, checkpoints_total_limit=2)
    ddpm.train(config)
    root = f"{config.output_dir}/checkpoints"
    assert [path.name for path in list_checkpoints(config.output_dir)] == ["step-6", "step-8"]
    import os

    assert sorted(os.listdir(root)) == ["step-6", "step-8"]
    state = json.loads(open(f"{root}/step-8/trainer_state.json").read())
    assert state["global_step"] == 8 and state["config"]["max_train_steps"] == 8


def test_save_atomically_keeps_previous_on_failure(tmp_path):
    target = tmp_path / "export"
    save_atomically(lambda directory: (directory.mkdir(), (directory / "a.txt").write_text("v1")), target)

    def crash(directory):
        directory.mkdir()
        (directory / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomically(crash, target)
    assert (target / "a.txt").read_text() == "v1"


def test_resume_from_bad_path_is_a_clear_error(tiny_ddpm_config, tmp_path):
    config = tiny_ddpm_config(resume_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not a selfgen checkpoint folder"):
        ddpm.train(config)


def test_dataset_smaller_than_batch_is_a_clear_error(tiny_ddpm_config):
    config = tiny_ddpm_config(train_batch_size=64)
    with pytest.raises(ValueError, match="fewer than train_batch_size=64"):
        _trainer(config, Subset(DigitsDataset("train", resolution=8), range(10)))


def test_lora_finetune_exports_merged_weights(tiny_ddpm_config, tmp_path):
    pytest.importorskip("peft")
    base = ddpm.train(tiny_ddpm_config(output_dir=str(tmp_path / "base"), max_train_steps=2))
    config = tiny_ddpm_config(
        output_dir=str(tmp_path / "lora"), pretrained=str(base.pipeline_dir), lora_rank=4, max_train_steps=5
    )
    set_seed(0)
    pretrained = UnconditionalDiffusionPipeline.from_pretrained(base.pipeline_dir)
    trainer = Trainer(
        pretrained.unet, ddpm.NoisePredictionObjective(DDPMScheduler(num_train_timesteps=100)),
        DigitsDataset("train", resolution=8), config,
    )
    trainable = [name for name, param in trainer.unwrapped_model.named_parameters() if param.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    result = trainer.train()

    exported = UNet2DModel.from_pretrained(result.pipeline_dir)
    assert not any("lora" in key for key in exported.state_dict())
    sample, timestep = torch.randn(2, 1, 8, 8), torch.tensor([10, 50])
    with torch.no_grad():
        torch.testing.assert_close(
            exported(sample, timestep).sample, trainer.unwrapped_model(sample, timestep).sample, atol=1e-5, rtol=1e-5
        )
        original = UnconditionalDiffusionPipeline.from_pretrained(base.pipeline_dir).unet
        assert not torch.allclose(exported(sample, timestep).sample, original(sample, timestep).sample)


def test_user_image_folder_with_a_corrupt_file_is_skipped_and_counted(tiny_ddpm_config, tmp_path):
    """`selfgen train ddpm --data FOLDER` path: on_error="skip" drops the bad file and the metrics say so."""
    import numpy as np
    from PIL import Image

    from selfgen.data.images import ImageFolderDataset

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(20):
        Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(folder / f"{index:02d}.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        ImageFolderDataset(folder, resolution=8, channels=1)
    dataset = ImageFolderDataset(folder, resolution=8, channels=1, on_error="skip")
    config = tiny_ddpm_config(max_train_steps=3, train_batch_size=4)
    result = _trainer(config, dataset).train()
    assert [record["num_skipped"] for record in result.history] == [1, 1, 1]
    assert len(dataset) == 20


def test_non_finite_loss_stops_training_with_the_step(tiny_ddpm_config):
    class NaNAfterTwoSteps(ddpm.NoisePredictionObjective):
        calls = 0

        def compute_loss(self, model, batch):
            loss, logs = super().compute_loss(model, batch)
            self.calls += 1
            return (loss * float("nan") if self.calls > 2 else loss), logs

    config = tiny_ddpm_config(max_train_steps=5)
    set_seed(config.seed)
    trainer = Trainer(ddpm.build_unet(config), NaNAfterTwoSteps(DDPMScheduler(num_train_timesteps=100)),
                      DigitsDataset("train", resolution=8), config)
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 2"):
        trainer.train()
