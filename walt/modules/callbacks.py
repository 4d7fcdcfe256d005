"""Lightning callbacks every stage uses: a bad-file counter, a non-finite-loss guard, preemption saves and
a step-counted progress bar."""
from __future__ import annotations

import math
import os
import signal
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from walt.runs import LAST_CKPT


class BadFileCounter(L.Callback):
    """Logs `data/bad_files`: unreadable files met so far, each file counted once (the data module's health
    record: files probed at setup plus decode failures reported from any worker), not skip events."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        health = getattr(trainer.datamodule, "data_health", None)
        if health is not None and trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            pl_module.log("data/bad_files", float(health()["bad_total"]), on_step=True, on_epoch=False)


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
    """Saves last.ckpt at the next batch boundary on SIGTERM, Ctrl-C (SIGINT; a second one stops at once) or the
    scheduler's warning signal, then exits
    non-zero (or lets submitit requeue), so an interrupted run resumes from the step it reached.

    submitit (hydra/launcher=slurm) requeues the job on its signal (SIGUSR2 unless
    $SUBMITIT_PREEMPT_SIGNAL says otherwise): its handler runs after the save. Without one (a plain
    `kill`, a scheduler's SIGTERM) the process exits with 128 + the signal number, never 0, so `&&`
    chains and schedulers see the interruption. The handler only sets a flag: the checkpoint is
    written between optimizer steps, never inside one.
    """

    def __init__(self, signal_names: tuple[str, ...] | None = None):
        preempt = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        self.signal_names = tuple(signal_names or dict.fromkeys((preempt, "SIGTERM", "SIGINT")))
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:  # Ctrl-C twice: stop now, without saving
            raise KeyboardInterrupt
        self.received, self._frame = signum, frame

    def on_train_start(self, trainer, pl_module):
        for name in self.signal_names:
            signum = getattr(signal, name)
            if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                continue  # started in the background (nohup, `&`): Ctrl-C is not this process's to take
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.received is None:
            return
        signum, self.received = self.received, None
        ckpt = next((c for c in trainer.checkpoint_callbacks if c.dirpath), None)
        path = os.path.join(ckpt.dirpath, LAST_CKPT.name) if ckpt else os.path.join(trainer.default_root_dir, str(LAST_CKPT))
        trainer.save_checkpoint(path)
        name = signal.Signals(signum).name
        pl_module.print(f"[preemption] {name} received: saved {path} at step {trainer.global_step}")
        previous = self._restore()[signum]
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, self._frame)  # submitit's checkpoint-and-requeue handler
        raise SystemExit(128 + signum)

    def _restore(self) -> dict:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        return previous

    def on_train_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()


class RNGState(L.Callback):
    """Puts the torch (CPU and CUDA), numpy and Python random states into every checkpoint and restores
    them when a run resumes, so diffusion noise, timesteps, self-conditioning coins and per-item augmentation
    continue as in an uninterrupted run (the data loaders draw from their own generators, walt.data.sampling)."""

    def state_dict(self) -> dict:
        import random

        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()  # tensors and ints: loads with weights_only
        return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                           cached], "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class TrainClock(L.Callback):
    """Training wall time summed over every session of a run (saved in its checkpoints), so steps/s of a
    resumed run is total steps / total training time, not the last session's; and the number of those
    sessions that resumed from a checkpoint (`restarts` in results.json: preemptions, requeues, re-runs)."""

    def __init__(self):
        self.seconds, self._start, self.restarts = 0.0, None, 0

    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return self.seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"seconds": self.elapsed(), "restarts": self.restarts}

    def load_state_dict(self, state_dict: dict) -> None:  # called on resume only
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.restarts = int(state_dict.get("restarts", 0)) + 1


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
