"""A callback that SIGKILLs its own process once, at a given step of a given multirun job: an interrupted
sweep at a known point (tests/test_sweeps.py). Lightning runs ModelCheckpoint after the other callbacks, so
the last checkpoint before the kill is the last multiple of every_n_train_steps below `step`."""
import os
import signal
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback


class KillAt(Callback):
    def __init__(self, step: int, job: int, marker: str):
        self.step, self.job, self.marker = step, job, Path(marker)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step and HydraConfig.get().job.num == self.job and not self.marker.exists():
            self.marker.touch()  # once: the resumed run with the same command goes on
            os.kill(os.getpid(), signal.SIGKILL)
