"""Crash-safe checkpoints: atomic writes in the destination directory, a step checkpoint callback that
keeps what it is told to keep and always saves the final step, and the newest intact checkpoint to
resume from.

Lightning's own writer stages the file through fsspec in $TMPDIR and moves it into place; with $TMPDIR
on another file system that move is a copy, and a kill during it leaves a truncated last.ckpt the run
can never resume from.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from walt.runs import LAST_CKPT, atomic_write, checkpoint_step, load_weights

log = logging.getLogger(__name__)
STEP_PATTERN = re.compile(r"step(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the destination, fsync, rename: the old file or the new one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)


def step_of(path: Path) -> int | None:
    match = STEP_PATTERN.search(path.name)
    return int(match.group(1)) if match else None


def is_intact(path: Path) -> bool:
    """Whether a checkpoint file opens as a complete torch archive (a truncated zip fails here)."""
    try:
        load_weights(path, mmap=True)
        return True
    except Exception:  # noqa: BLE001 - any failure to open means "not resumable"
        return False


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The intact checkpoint at the highest global step: last.ckpt, unless a step checkpoint is newer (a kill
    between the two saves) or last.ckpt is damaged (with a warning); None when there is none."""
    last = run_dir / LAST_CKPT
    steps = sorted((p for p in last.parent.glob("step*.ckpt") if step_of(p) is not None), key=step_of, reverse=True)
    newest_step = next((p for p in steps if is_intact(p)), None)
    if last.exists() and is_intact(last):
        if newest_step is not None and checkpoint_step(newest_step) > checkpoint_step(last):
            log.info("%s is newer than %s; resuming from it", newest_step.name, last.name)
            return newest_step
        return last
    if newest_step is not None:
        if last.exists():
            log.warning("%s is damaged (interrupted write?); resuming from %s instead", last, newest_step)
        return newest_step
    if last.exists():
        log.warning("%s is damaged and no intact step checkpoint exists: starting from step 0", last)
    return None


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for step-budgeted runs: `step{N}.ckpt` every `every_n_train_steps` plus last.ckpt.

    save_top_k: how many step checkpoints to keep, newest first (-1: all, for comparing checkpoints with
    walt-eval ckpt=all); files the run no longer tracks (left by a kill between save and delete) are
    removed at start, as are partial temp files. The final step is always saved, whatever the interval.
    Files are overwritten, never versioned (-v1).
    """

    def __init__(self, *args, save_top_k: int = 1, **kwargs):
        kwargs.setdefault("enable_version_counter", False)
        self.keep = save_top_k  # Lightning allows only -1, 0, 1 without a monitored metric: the rest is ours
        super().__init__(*args, save_top_k=-1 if save_top_k > 1 else save_top_k, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            self._tidy(Path(self.dirpath))

    def _tidy(self, directory: Path) -> None:
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.keep < 0:
            return
        steps = sorted((p for p in directory.glob("step*.ckpt") if step_of(p) is not None), key=step_of, reverse=True)
        for stale in steps[self.keep:]:
            log.info("removing %s (save_top_k=%d keeps the newest)", stale, self.keep)
            stale.unlink(missing_ok=True)

    def _save_none_monitor_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_none_monitor_checkpoint(trainer, monitor_candidates)
        if trainer.is_global_zero and self.dirpath:
            self._tidy(Path(self.dirpath))  # top-k for files of earlier sessions too

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_global_step_saved != trainer.global_step and trainer.global_step > 0:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
