"""Loggers by config (experiments/logger/): Lightning's CSV logger, kept across the sessions of a resumed run.

Lightning's CSV writer deletes an existing metrics.csv when it opens its folder, so a run resumed after a
preemption with `logger=csv` lost every row its earlier sessions wrote. Here the file is appended to (under
its existing header; a new key rewrites it with the rows kept, as Lightning does). Steps logged after the
checkpoint a run resumed from appear twice, once per session: the later row is the one that trained on.
"""
from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's removes metrics.csv here
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ResumableCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` whose metrics.csv survives a resume (same arguments)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
