"""Lightning callbacks every stage uses: data-health counters, a non-finite-loss guard, preemption saves and
a step-counted progress bar."""
from __future__ import annotations

import math
import os
import signal

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from walt.runs import LAST_CKPT


class SkippedClipCounter(L.Callback):
    """Logs `data/skipped_clips`: how many unreadable files the loaders passed over so far.

    Datasets report per item how many files they skipped to produce it (see walt.data.datasets),
    so the count is right whichever worker process met the bad file.
    """

    def __init__(self):
        self.total = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if isinstance(batch, dict) and "skipped" in batch:
            skipped = int(torch.as_tensor(batch["skipped"]).sum())
            self.total += skipped
            if skipped:
                pl_module.print(f"[data] {skipped} unreadable clip(s) skipped in this batch, {self.total} so far")
            pl_module.log("data/skipped_clips", float(self.total), on_step=True, on_epoch=False)

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state_dict):
        self.total = state_dict["total"]


class FiniteLossGuard(L.Callback):
    """Stops training with a clear error at the first NaN/inf `train/loss`.

    Raising before the next checkpoint means last.ckpt still holds the last finite weights.
    """

    def __init__(self, key: str = "train/loss"):
        self.key = key

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            loss = trainer.callback_metrics.get(self.key)
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"non-finite {self.key}={float(loss)} at step {trainer.global_step}; training stopped. "
                f"Checkpoints written so far are intact: resume from last.ckpt with a lower lr or fp32."
            )


class PreemptionCheckpoint(L.Callback):
    """Saves last.ckpt when Slurm warns of a timeout or preemption, then lets submitit requeue.

    submitit (hydra/launcher=slurm) requeues the job on its signal (SIGUSR2 unless
    $SUBMITIT_PREEMPT_SIGNAL says otherwise) and the requeued job re-enters the same run directory,
    where walt.train resumes from last.ckpt. Without this callback, up to `every_n_train_steps`
    of work would be lost. The handler only sets a flag: the checkpoint is written at the next
    batch boundary, never in the middle of an optimizer step, then the previous handler runs.
    """

    def __init__(self, signal_name: str | None = None):
        self.signal_name = signal_name or "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        self.requested = False
        self._previous = None

    def _on_signal(self, signum, frame):
        self.requested = True
        self._frame = frame

    def on_train_start(self, trainer, pl_module):
        self._signum = getattr(signal, self.signal_name)
        self._previous = signal.signal(self._signum, self._on_signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.requested:
            return
        self.requested = False
        ckpt = next((c for c in trainer.checkpoint_callbacks if c.dirpath), None)
        path = os.path.join(ckpt.dirpath, LAST_CKPT.name) if ckpt else os.path.join(trainer.default_root_dir, str(LAST_CKPT))
        trainer.save_checkpoint(path)
        pl_module.print(f"[preemption] {self.signal_name} received: saved {path} at step {trainer.global_step}")
        previous, self._previous = self._previous, None
        signal.signal(self._signum, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(self._signum, self._frame)
        else:
            os.kill(os.getpid(), self._signum)

    def on_train_end(self, trainer, pl_module):
        if self._previous is not None:
            signal.signal(self._signum, self._previous)
            self._previous = None


class StepProgressBar(RichProgressBar):
    """Rich progress bar counted in optimizer steps out of trainer.max_steps.

    Runs here are budgeted in steps (max_epochs is -1), where Lightning's bar would show "Epoch 57/-2" and
    restart every epoch; this one shows one bar over the whole run (epochs only in the description).
    Without max_steps it is Lightning's bar.
    """

    def _by_steps(self, trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def _train_bar(self, trainer):
        if self.train_progress_bar_id is None and self.progress is not None:
            self.train_progress_bar_id = self._add_task(trainer.max_steps, f"train steps (epoch {trainer.current_epoch})")
        return self.train_progress_bar_id

    def on_train_epoch_start(self, trainer, pl_module):
        if not self._by_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled:
            return
        bar = self._train_bar(trainer)
        if bar is not None:
            self.progress.update(bar, description=f"train steps (epoch {trainer.current_epoch})")
        self.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.is_disabled:
            return
        self._update(self._train_bar(trainer), trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
