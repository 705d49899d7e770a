"""The one training loop of selfgen.

A method never writes its own loop: it hands the :class:`Trainer` a model, an :class:`Objective`
(``compute_loss(model, batch) -> (loss, logs)``), a dataset and a :class:`TrainingConfig`, plus an
``export_fn`` that saves the final pipeline. The Trainer owns everything else, through accelerate
so the same code runs on one CPU and under ``accelerate launch`` (DDP / FSDP / DeepSpeed):

* ``Accelerator(mixed_precision, gradient_accumulation_steps)``, AdamW, ``diffusers.optimization.get_scheduler``;
* gradient clipping, optional EMA (``diffusers.training_utils.EMAModel``), optional peft LoRA;
* checkpoints with ``accelerator.save_state`` into ``output_dir/checkpoints/step-N``, written under a
  temporary name and renamed, keeping the last ``checkpoints_total_limit``; ``resume_from="latest"``
  or a path resumes exactly (weights, optimizer, LR schedule, EMA, RNG and data order);
* metrics as JSONL in ``output_dir/logs/metrics.jsonl`` (TensorBoard too when installed), tqdm on the
  main process, seeding;
* the final export, atomically, to ``config.pipeline_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
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

from .config import TrainingConfig, save_config
from .lora import add_lora_adapters, merge_lora_adapters

logger = logging.getLogger("selfgen.train")

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"


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


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints under ``output_dir/checkpoints``, oldest first (temporary folders ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir() if (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def default_collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(examples)


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
        """``accelerator.save_state`` into ``checkpoints/step-N`` via a temporary folder, then prune."""
        accelerator = self.accelerator
        target = self.output_dir / "checkpoints" / f"step-{self.global_step}"
        tmp_dir = target.parent / f".{target.name}.tmp"
        if self.is_main_process and tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp_dir))
        accelerator.wait_for_everyone()
        if self.is_main_process:
            (tmp_dir / TRAINER_STATE_FILE).write_text(json.dumps({"global_step": self.global_step}))
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
                logger.warning("resume_from='latest' but %s has no checkpoint: starting fresh", self.output_dir)
            return latest
        path = Path(resume_from)
        if not (path / TRAINER_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"resume_from={resume_from!r} is not a selfgen checkpoint folder (no {TRAINER_STATE_FILE}); "
                f"pass 'latest' or a folder like {self.output_dir / 'checkpoints' / 'step-500'}"
            )
        return path

    def load_checkpoint(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        self.global_step = json.loads((path / TRAINER_STATE_FILE).read_text())["global_step"]
        logger.info("resumed from %s at step %d", path, self.global_step)

    # ----------------------------------------------------------------- loop

    def train(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        checkpoint = self._resolve_resume()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        if self.is_main_process:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.output_dir / "config.yaml")
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
        return TrainResult(self.global_step, pipeline_dir, self.history)

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
