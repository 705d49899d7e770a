"""The one training loop of selfgen.

A method never writes its own loop: it hands the :class:`Trainer` a model, an :class:`Objective`
(``compute_loss(model, batch) -> (loss, logs)``), a dataset and a :class:`TrainingConfig`, plus an
``export_fn`` that saves the final pipeline. The Trainer owns everything else, through accelerate
so the same code runs on one CPU and under ``accelerate launch`` (DDP / FSDP / DeepSpeed):

* ``Accelerator(mixed_precision, gradient_accumulation_steps)``, AdamW, ``diffusers.optimization.get_scheduler``;
* gradient clipping, optional EMA (``diffusers.training_utils.EMAModel``), optional peft LoRA;
* checkpoints with ``accelerator.save_state`` into ``output_dir/checkpoints/step-N``, written under a
  temporary name and renamed, keeping the last ``checkpoints_total_limit``, each with a manifest
  (size and sha256 of every file); ``resume_from="latest"`` resumes exactly (weights, optimizer, LR
  schedule, EMA, RNG and data order) from the newest checkpoint whose manifest verifies, skipping
  damaged ones with a warning; an explicit path that does not verify is an error naming the file.
  A resume whose training fields differ from the checkpoint's is refused unless
  ``allow_config_change`` (then the changes are logged and applied, and ``config.yaml`` says so);
* a lock file (``output_dir/.selfgen.lock``, the owner's pid) refuses a second concurrent run in the
  same ``output_dir``; a lock left by a dead process is taken over;
* metrics as JSONL in ``output_dir/logs/metrics.jsonl`` (TensorBoard too when installed), tqdm on the
  main process, seeding;
* the final export, atomically, to ``config.pipeline_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import TrainingConfig, save_config, training_field_changes
from .lora import add_lora_adapters, merge_lora_adapters

logger = logging.getLogger("selfgen.train")

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".selfgen.lock"


class CheckpointError(ValueError):
    """A checkpoint folder that does not verify against its manifest (names the file and what is wrong)."""


class RunLockedError(FileExistsError):
    """Another live process is training in the same ``output_dir`` (its lock file exists)."""


class Objective:
    """What a method optimises. Subclasses implement :meth:`compute_loss`.

    ``setup(accelerator)`` runs once before training: move frozen helpers (a reference model, a VAE,
    a teacher) to ``accelerator.device`` there. The trained weights are the ``model`` alone.
    """

    def setup(self, accelerator: Accelerator) -> None:
        """Prepare frozen helpers; the default does nothing."""

    def compute_loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class TrainerCallback:
    """Optional hooks. ``trainer`` exposes ``accelerator``, ``config``, ``global_step`` and ``unwrapped_model``."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once, after preparation and any resume."""

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        """Called after every optimizer update with that step's logs."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once, after the final export."""


@dataclass
class TrainResult:
    global_step: int
    pipeline_dir: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    already_finished: bool = False  # resumed from a checkpoint at max_train_steps: nothing was trained

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def save_atomically(save_fn: Callable[[Path], None], target: Path) -> None:
    """Run ``save_fn(tmp_dir)`` into a sibling temporary folder, then move it to ``target``.

    A crash mid-save leaves the previous ``target`` (or nothing) behind, never a half-written folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = target.parent / f".{target.name}.tmp"
    old_dir = target.parent / f".{target.name}.old"
    for stale in (tmp_dir, old_dir):
        if stale.exists():
            shutil.rmtree(stale)
    save_fn(tmp_dir)
    if target.exists():
        os.replace(target, old_dir)
    os.replace(tmp_dir, target)
    if old_dir.exists():
        shutil.rmtree(old_dir)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """``folder/manifest.json``: size and sha256 of every file in ``folder`` (the manifest excepted)."""
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST_FILE)
    entries = {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)} for path in files
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(entries, indent=1))


def verify_checkpoint(folder: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the first file of ``folder`` that is missing or differs
    from ``manifest.json`` (size, then sha256); checkpoints without a manifest cannot be trusted."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    try:
        entries = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{manifest_path} is missing or unreadable ({error}): the checkpoint cannot be verified")
    if TRAINER_STATE_FILE not in entries:
        raise CheckpointError(f"{manifest_path} does not list {TRAINER_STATE_FILE}: not a selfgen checkpoint")
    for name, expected in entries.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in {manifest_path} but missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{path} has {size} bytes, the manifest says {expected['size']} (truncated?)")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path} does not match its sha256 in {manifest_path} (corrupted)")


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies; each newer one that does not is skipped with a warning naming it."""
    for checkpoint in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError as error:
            logger.warning("skipping checkpoint %s: %s", checkpoint, error)
            continue
        return checkpoint
    return None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints under ``output_dir/checkpoints``, oldest first (temporary folders ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir() if (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a killed child not yet reaped by its parent is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir/.selfgen.lock`` (``{"pid", "host"}``) while the block runs.

    A live owner on this host is a :class:`RunLockedError`; a lock left by a dead process (a run
    killed with ``kill -9``) is taken over with a warning. A lock from another host cannot be checked
    and is refused, naming the file to delete if that run is gone."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
            except (OSError, ValueError):
                owner = {}  # half-written by a process killed while taking it
            if owner.get("host", me["host"]) != me["host"]:
                raise RunLockedError(
                    f"{output_dir} is in use by pid {owner.get('pid')} on host {owner.get('host')}; "
                    f"if that run is gone, delete {lock}"
                ) from None
            pid = owner.get("pid")
            if isinstance(pid, int) and pid != me["pid"] and _process_alive(pid):
                raise RunLockedError(
                    f"another run (pid {pid}) is training in {output_dir}; wait for it or choose another --output_dir"
                ) from None
            logger.warning("taking over the lock %s left by pid %s, which is no longer running", lock, pid)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(me))
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def default_collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(examples)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Trainer:
    """Trains ``model`` on ``train_dataset`` by minimising ``objective.compute_loss``.

    Args:
        model: the module whose weights are learned (a diffusers ``ModelMixin`` or any ``nn.Module``).
        objective: the method's loss (see :class:`Objective`).
        train_dataset: a map-style dataset.
        config: the method's :class:`TrainingConfig` subclass.
        export_fn: ``export_fn(model, directory)`` writes the final pipeline; defaults to
            ``model.save_pretrained(directory)``. It receives the unwrapped model, with EMA weights
            when ``use_ema`` and LoRA merged when ``lora_rank > 0``.
        collate_fn: batches examples; torch's default collate otherwise.
        callbacks: :class:`TrainerCallback` hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_dataset: Dataset,
        config: TrainingConfig,
        export_fn: Callable[[nn.Module, Path], None] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        callbacks: Iterable[TrainerCallback] = (),
    ) -> None:
        self.config = config
        self.objective = objective
        self.train_dataset = train_dataset
        self.export_fn = export_fn or (lambda module, directory: module.save_pretrained(directory))
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.config_changes: dict[str, tuple[Any, Any]] = {}

        # accelerate keeps per-run settings (mixed precision, accumulation) in process-wide singletons;
        # reset them so several Trainers can run one after another in one process (iterative methods,
        # tests). The process group (PartialState) is kept, so this is safe under `accelerate launch`.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        log_with = "tensorboard" if config.report_to == "tensorboard" and _tensorboard_available() else None
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.logs_dir)),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        )
        set_seed(config.seed)
        if config.lora_rank > 0:
            add_lora_adapters(model, config.lora_rank, config.lora_alpha, config.lora_target_modules)
        self.ema = EMAModel(model.parameters(), decay=config.ema_decay) if config.use_ema else None
        self.train_dataloader = self._build_dataloader(collate_fn or default_collate_fn)
        self.model, self.optimizer, self.lr_scheduler, self.train_dataloader = self._prepare(model)

    @property
    def logs_dir(self) -> Path:
        return self.output_dir / "logs"

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def _build_dataloader(self, collate_fn: Callable) -> DataLoader:
        config = self.config
        dataloader = DataLoader(
            self.train_dataset,
            batch_size=config.train_batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=collate_fn,
            num_workers=config.dataloader_num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )
        if len(dataloader) == 0:
            raise ValueError(
                f"the training dataset has {len(self.train_dataset)} examples, fewer than "
                f"train_batch_size={config.train_batch_size}: lower train_batch_size or add data"
            )
        return dataloader

    def _prepare(self, model: nn.Module):
        config = self.config
        trainable = [param for param in model.parameters() if param.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        optimizer = torch.optim.AdamW(
            trainable,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        # The prepared scheduler steps once per process per update, as in diffusers' training scripts.
        num_processes = self.accelerator.num_processes
        lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * num_processes,
            num_training_steps=config.max_train_steps * num_processes,
        )
        prepared = self.accelerator.prepare(model, optimizer, lr_scheduler, self.train_dataloader)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
            self.accelerator.register_for_checkpointing(self.ema)
        self.objective.setup(self.accelerator)
        return prepared

    @property
    def num_update_steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_dataloader) / self.config.gradient_accumulation_steps)

    # ----------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        """``accelerator.save_state`` into ``checkpoints/step-N`` via a temporary folder, with the step,
        the config and a manifest of every file; then prune."""
        accelerator = self.accelerator
        target = self.output_dir / "checkpoints" / f"step-{self.global_step}"
        tmp_dir = target.parent / f".{target.name}.tmp"
        if self.is_main_process and tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp_dir))
        accelerator.wait_for_everyone()
        if self.is_main_process:
            state = {"global_step": self.global_step, "config": _jsonable(dataclasses.asdict(self.config))}
            (tmp_dir / TRAINER_STATE_FILE).write_text(json.dumps(state))
            write_manifest(tmp_dir)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp_dir, target)
            self._prune_checkpoints()
        accelerator.wait_for_everyone()
        return target

    def _prune_checkpoints(self) -> None:
        limit = self.config.checkpoints_total_limit
        if limit is None:
            return
        for stale in list_checkpoints(self.output_dir)[:-limit] if limit > 0 else []:
            shutil.rmtree(stale)

    def _resolve_resume(self) -> Path | None:
        resume_from = self.config.resume_from
        if not resume_from:
            return None
        if resume_from == "latest":
            latest = find_latest_checkpoint(self.output_dir)
            if latest is None:
                logger.warning("resume_from='latest' but %s has no valid checkpoint: starting fresh", self.output_dir)
            return latest
        path = Path(resume_from)
        if not (path / TRAINER_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"resume_from={resume_from!r} is not a selfgen checkpoint folder (no {TRAINER_STATE_FILE}); "
                f"pass 'latest' or a folder like {self.output_dir / 'checkpoints' / 'step-500'}"
            )
        verify_checkpoint(path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore ``path`` (verified) after checking that its training fields match this config."""
        state = json.loads((path / TRAINER_STATE_FILE).read_text())
        changes = training_field_changes(state.get("config", {}), self.config)
        if changes and not self.config.allow_config_change:
            listed = "; ".join(f"{name}: {old!r} in the checkpoint, {new!r} now" for name, (old, new) in changes.items())
            raise ValueError(
                f"resuming from {path} with changed training fields ({listed}); restore them, or pass "
                "--allow_config_change to continue with the new values from this step on"
            )
        self.accelerator.load_state(str(path))
        self.global_step = state["global_step"]
        if changes:
            self._apply_optimizer_fields()
            for name, (old, new) in changes.items():
                logger.warning("config change on resume at step %d: %s %r -> %r", self.global_step, name, old, new)
        self.config_changes = changes
        logger.info("resumed from %s at step %d", path, self.global_step)

    def _apply_optimizer_fields(self) -> None:
        """After ``load_state``: the optimizer hyperparameters and base LR of this config, not the checkpoint's."""
        config, scheduler = self.config, getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        scheduler.base_lrs = [config.learning_rate] * len(self.optimizer.param_groups)
        lambdas = getattr(scheduler, "lr_lambdas", [lambda _: 1.0] * len(self.optimizer.param_groups))
        for group, lr_lambda in zip(self.optimizer.param_groups, lambdas):
            group.update(
                lr=config.learning_rate * lr_lambda(scheduler.last_epoch),
                initial_lr=config.learning_rate,
                betas=(config.adam_beta1, config.adam_beta2),
                weight_decay=config.adam_weight_decay,
                eps=config.adam_epsilon,
            )

    def _change_note(self, checkpoint: Path | None) -> list[str]:
        if not self.config_changes:
            return []
        changes = [f"  {name}: {old!r} -> {new!r}" for name, (old, new) in self.config_changes.items()]
        return [f"resumed from {checkpoint} at step {self.global_step} with --allow_config_change:", *changes]

    def _restart_metrics(self) -> None:
        """Keep the ``metrics.jsonl`` records up to ``global_step`` (those after the checkpoint are
        re-logged, a line cut by a kill is dropped) and take them as this run's history."""
        path = self.logs_dir / "metrics.jsonl"
        records = []
        if path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("step", math.inf) <= self.global_step:
                        records.append(record)
        self.history = records
        if self.is_main_process:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
            os.replace(tmp, path)

    # ----------------------------------------------------------------- loop

    def train(self) -> TrainResult:
        """Train to ``max_train_steps`` (resuming when asked), export, and return the result."""
        lock = run_lock(self.output_dir) if self.is_main_process else contextlib.nullcontext()
        with lock:
            return self._train()

    def _train(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        checkpoint = self._resolve_resume()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self._restart_metrics()
        already_finished = checkpoint is not None and self.global_step >= config.max_train_steps
        if already_finished:
            logger.warning(
                "%s is already at step %d of max_train_steps=%d: nothing to train, exporting again",
                checkpoint, self.global_step, config.max_train_steps,
            )
        if self.is_main_process:
            save_config(config, self.output_dir / "config.yaml", header=self._change_note(checkpoint))
        if accelerator.log_with:
            accelerator.init_trackers("selfgen")
        for callback in self.callbacks:
            callback.on_train_begin(self)

        progress = tqdm(
            total=config.max_train_steps,
            initial=self.global_step,
            desc="training",
            disable=not self.is_main_process,
            dynamic_ncols=True,
        )
        window: dict[str, list[float]] = defaultdict(list)
        window_start = time.perf_counter()
        epoch = self.global_step // self.num_update_steps_per_epoch
        while self.global_step < config.max_train_steps:
            for batch in self._epoch_batches(epoch):
                logs = self._train_micro_batch(batch)
                for key, value in logs.items():
                    window[key].append(value)
                if not accelerator.sync_gradients:
                    continue
                self.global_step += 1
                progress.update(1)
                step_logs = self._step_logs(window, window_start)
                if self.global_step % config.logging_steps == 0 or self.global_step == config.max_train_steps:
                    self._log(step_logs, epoch)
                    progress.set_postfix(loss=f"{step_logs['loss']:.4f}")
                    window, window_start = defaultdict(list), time.perf_counter()
                if config.checkpointing_steps and self.global_step % config.checkpointing_steps == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback.on_step_end(self, step_logs)
                if self.global_step >= config.max_train_steps:
                    break
            epoch += 1
        progress.close()
        pipeline_dir = self.export()
        accelerator.end_training()
        # the trained model leaves without accelerate's mixed-precision forward wrapper: whoever keeps
        # using it (iterative recipes roll out from it) gets the same fp32 forward as a reloaded export
        accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        for callback in self.callbacks:
            callback.on_train_end(self)
        return TrainResult(self.global_step, pipeline_dir, self.history, already_finished)

    def _epoch_batches(self, epoch: int):
        """This epoch's batches, skipping those already consumed when resuming mid-epoch."""
        self.train_dataloader.set_epoch(epoch)
        consumed_updates = self.global_step - epoch * self.num_update_steps_per_epoch
        skip = consumed_updates * self.config.gradient_accumulation_steps
        if skip > 0:
            return self.accelerator.skip_first_batches(self.train_dataloader, skip)
        return self.train_dataloader

    def _train_micro_batch(self, batch: Any) -> dict[str, float]:
        accelerator, config = self.accelerator, self.config
        with accelerator.accumulate(self.model):
            with accelerator.autocast():
                loss, logs = self.objective.compute_loss(self.model, batch)
            loss_value = loss.detach().item()  # the one host sync per micro-batch (logging and the check)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"non-finite loss {loss_value} at step {self.global_step}")
            accelerator.backward(loss)
            grad_norm = None
            if accelerator.sync_gradients and config.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and self.ema is not None:
            self.ema.step(self.model.parameters())
        out = {"loss": loss_value, **{key: float(value) for key, value in logs.items()}}
        if grad_norm is not None:
            out["grad_norm"] = float(grad_norm)
        return out

    def _step_logs(self, window: dict[str, list[float]], window_start: float) -> dict[str, float]:
        logs = {key: sum(values) / len(values) for key, values in window.items()}
        updates_in_window = max(1, len(window["loss"]) // self.config.gradient_accumulation_steps)
        logs["lr"] = self.lr_scheduler.get_last_lr()[0]
        logs["steps_per_sec"] = updates_in_window / max(time.perf_counter() - window_start, 1e-9)
        num_skipped = getattr(self.train_dataset, "num_skipped", None)
        if num_skipped is not None:
            logs["num_skipped"] = num_skipped
        return logs

    def _log(self, logs: dict[str, float], epoch: int) -> None:
        record = {"step": self.global_step, "epoch": epoch, **logs}
        self.history.append(record)
        self.accelerator.log(logs, step=self.global_step)
        if self.is_main_process:
            with open(self.logs_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def export(self) -> Path | None:
        """Save the final pipeline (EMA weights and merged LoRA when enabled) atomically, main process only."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        pipeline_dir = self.config.pipeline_dir
        if self.is_main_process:
            model = self.unwrapped_model
            was_training = model.training
            model.eval()  # exported pipelines run in eval mode; some CPU kernels differ between modes
            if self.ema is not None:
                self.ema.store(model.parameters())
                self.ema.copy_to(model.parameters())
            export_model = merge_lora_adapters(model) if self.config.lora_rank > 0 else model
            save_atomically(lambda directory: self.export_fn(export_model, directory), pipeline_dir)
            if self.ema is not None:
                self.ema.restore(model.parameters())
            model.train(was_training)
            logger.info("exported pipeline to %s", pipeline_dir)
        accelerator.wait_for_everyone()
        return pipeline_dir
