"""Resume that refuses to lie: a real ``kill -9``, damaged checkpoints, changed configs, a finished
run, a second run in the same folder. Weights are compared bit for bit (tests/conftest.py policy)."""
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch.utils.data import Subset

from selfgen.data.digits import DigitsDataset
from selfgen.train import ddpm
from selfgen.train.trainer import (
    LOCK_FILE,
    CheckpointError,
    RunLockedError,
    Trainer,
    TrainerCallback,
    list_checkpoints,
    run_lock,
)

COMMON = dict(max_train_steps=12, train_batch_size=8, checkpointing_steps=4, checkpoints_total_limit=None,
              lr_scheduler="cosine", lr_warmup_steps=2, use_ema=True, ema_decay=0.9)


def _stalling_run(values: dict, stall: int, marker: Path) -> None:
    """The killed run, in a forked child (no fresh interpreter to import torch into): the same
    construction as :func:`_trainer`, stalling after update ``stall`` so the kill lands mid-run at a
    known step (after the checkpoints at 4 and 8, with steps 9 and 10 logged past the last one)."""

    class Stall(TrainerCallback):
        def on_step_end(self, trainer, logs):
            if trainer.global_step == stall:
                marker.write_text("stalled")
                time.sleep(600)

    torch.set_num_threads(1)  # as the parent (see one_thread) and as torch's DataLoader workers do after a fork
    config = ddpm.DDPMConfig(**values)
    set_seed(config.seed)
    objective = ddpm.NoisePredictionObjective(DDPMScheduler(num_train_timesteps=100))
    Trainer(ddpm.build_unet(config), objective, _dataset(), config, callbacks=[Stall()]).train()


def _dataset():
    return Subset(DigitsDataset("train", resolution=8), range(40))  # 5 batches an epoch: runs cross epochs


def _trainer(config, dataset=None):
    set_seed(config.seed)
    objective = ddpm.NoisePredictionObjective(DDPMScheduler(num_train_timesteps=100))
    return Trainer(ddpm.build_unet(config), objective, dataset or _dataset(), config)


def _assert_same_weights(trainer_a, trainer_b):
    for (name, expected), actual in zip(
        trainer_a.unwrapped_model.state_dict().items(), trainer_b.unwrapped_model.state_dict().values()
    ):
        assert torch.equal(expected, actual), name


def _steps(output_dir):
    return [json.loads(line)["step"] for line in (Path(output_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread():
    """The killed child, the uninterrupted run and the resume all reduce with one thread: a different
    thread count reorders float sums, and a forked child must not enter a thread pool of its parent."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_kill_9_then_resume_matches_an_uninterrupted_run_bit_for_bit(tiny_ddpm_config, tmp_path, caplog, one_thread):
    killed = tiny_ddpm_config(output_dir=str(tmp_path / "killed"), **COMMON)
    marker = tmp_path / "stalled"
    process = multiprocessing.get_context("fork").Process(target=_stalling_run, args=(vars(killed), 10, marker))
    process.start()
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.is_alive(), "the training child died before step 10"
            assert time.monotonic() < deadline, "the training child never reached step 10"
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # kill -9: no cleanup, the lock file and a half-done epoch stay
        process.join()
    assert process.exitcode == -signal.SIGKILL
    assert (tmp_path / "killed" / LOCK_FILE).is_file()
    assert [path.name for path in list_checkpoints(killed.output_dir)] == ["step-4", "step-8"]
    assert _steps(killed.output_dir) == list(range(1, 11))

    straight = _trainer(tiny_ddpm_config(output_dir=str(tmp_path / "straight"), **COMMON))
    straight_result = straight.train()

    killed.resume_from = "latest"
    resumed = _trainer(killed)
    with caplog.at_level(logging.INFO, logger="selfgen.train"):
        resumed_result = resumed.train()
    assert f"taking over the lock {tmp_path / 'killed' / LOCK_FILE} left by pid {process.pid}" in caplog.text
    assert f"resumed from {tmp_path / 'killed' / 'checkpoints' / 'step-8'} at step 8" in caplog.text
    assert resumed_result.global_step == straight_result.global_step == 12
    _assert_same_weights(straight, resumed)
    for expected, actual in zip(straight.optimizer.state_dict()["state"].values(),
                                resumed.optimizer.state_dict()["state"].values()):
        assert torch.equal(expected["exp_avg_sq"], actual["exp_avg_sq"])
    assert _steps(killed.output_dir) == list(range(1, 13))  # steps 9 and 10 logged once, not twice
    assert [record["loss"] for record in resumed_result.history] == [record["loss"] for record in straight_result.history]
    assert not (tmp_path / "killed" / LOCK_FILE).exists()


@pytest.fixture
def run_with_checkpoints(tiny_ddpm_config, tmp_path):
    """A finished 12-step run with checkpoints at steps 4, 8 and 12."""
    config = tiny_ddpm_config(output_dir=str(tmp_path / "run"), **COMMON)
    _trainer(config).train()
    return config


def test_damaged_checkpoints_are_skipped_for_latest_and_refused_when_named(run_with_checkpoints, caplog):
    config = run_with_checkpoints
    root = Path(config.output_dir) / "checkpoints"
    rng_state = root / "step-12" / "random_states_0.pkl"
    rng_state.write_bytes(rng_state.read_bytes()[:-10])  # truncated: accelerate alone would swallow this
    (root / "step-8" / "optimizer.bin").write_bytes(b"\0" * (root / "step-8" / "optimizer.bin").stat().st_size)
    (root / "step-16").mkdir()  # an empty folder a crash might leave

    for name, damaged in (("step-12", "random_states_0.pkl"), ("step-8", "optimizer.bin")):
        config.resume_from = str(root / name)
        with pytest.raises(CheckpointError, match=damaged):
            _trainer(config).train()
    config.resume_from = str(root / "step-16")
    with pytest.raises(FileNotFoundError, match="not a selfgen checkpoint folder"):
        _trainer(config).train()

    config.resume_from = "latest"
    with caplog.at_level(logging.INFO, logger="selfgen.train"):
        result = _trainer(config).train()
    assert f"skipping checkpoint {root / 'step-16'}" in caplog.text
    assert f"skipping checkpoint {root / 'step-12'}: {rng_state} has" in caplog.text and "truncated" in caplog.text
    assert f"{root / 'step-8' / 'optimizer.bin'} does not match its sha256" in caplog.text
    assert f"resumed from {root / 'step-4'} at step 4" in caplog.text and result.global_step == 12


def test_changed_training_fields_are_refused_unless_allowed(run_with_checkpoints):
    config = run_with_checkpoints
    config.resume_from = str(Path(config.output_dir) / "checkpoints" / "step-8")
    config.learning_rate, config.train_batch_size, config.logging_steps = 5e-4, 4, 3  # logging may change
    with pytest.raises(ValueError, match=r"train_batch_size: 8 in the checkpoint, 4 now; "
                                         r"learning_rate: 0\.001 in the checkpoint, 0\.0005 now\).*--allow_config_change"):
        _trainer(config).train()

    config.allow_config_change = True
    trainer = _trainer(config)
    trainer.train()
    written = (Path(config.output_dir) / "config.yaml").read_text()
    assert "#   learning_rate: 0.001 -> 0.0005" in written and "#   train_batch_size: 8 -> 4" in written
    assert "learning_rate: 0.0005" in written
    assert trainer.lr_scheduler.scheduler.base_lrs == [5e-4]  # the new value is the one in use


def test_resuming_a_finished_run_says_so(run_with_checkpoints, capsys):
    config = run_with_checkpoints
    config.resume_from = "latest"
    result = _trainer(config).train()
    assert result.already_finished and result.global_step == 12
    assert result.final_loss == result.history[-1]["loss"] and len(result.history) == 12  # from the logs, not nan
    assert _steps(config.output_dir) == list(range(1, 13))


def test_a_second_run_in_the_same_output_dir_is_refused(tmp_path, tiny_ddpm_config):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        with pytest.raises(RunLockedError, match=f"another run \\(pid {sleeper.pid}\\) is training in"):
            _trainer(tiny_ddpm_config(max_train_steps=2)).train()
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == sleeper.pid  # left to its owner
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path / "run"):  # its owner is dead now: taken over
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
