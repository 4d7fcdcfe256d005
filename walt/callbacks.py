"""Lightning callbacks every stage uses: data-health counters and a non-finite-loss guard."""
from __future__ import annotations

import math

import lightning as L
import torch


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
