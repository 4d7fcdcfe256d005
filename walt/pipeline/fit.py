"""Train one stage in its run directory: module + data -> Trainer -> results.json -> COMPLETED.

A run directory holding the COMPLETED marker is skipped unless `force=true`; any other run directory
resumes from checkpoints/last.ckpt. Evaluation after training runs before the marker, so a killed
evaluation resumes on re-run.
"""
from __future__ import annotations

import logging
import math
import time
import traceback
from typing import Callable, Optional

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment

from walt import runs
from walt.config.run import RunConfig
from walt.modules.build import build_module

log = logging.getLogger(__name__)


def _no_advertising(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def tidy_lightning_logging() -> None:
    """One line per message: once the root logger has a handler (Hydra's, or the CLI's), Lightning's own
    stream handler (added when it was imported before logging was set up) would print everything twice.
    Also drops Lightning's advertising tips."""
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _no_advertising not in logger.filters:
            logger.addFilter(_no_advertising)


def train_stage(run: RunConfig, build: Callable[[RunConfig], L.LightningModule] = build_module,
                extra_results: Optional[dict] = None) -> dict:
    """Train `run` (built by `build`) unless its directory is complete; returns its results.json.

    extra_results: sections merged into results.json before evaluation (e.g. the first stage's metrics).
    """
    run_dir = run.run_dir
    if runs.is_complete(run_dir) and not run.force:
        log.info("run %s is complete (marker %s); skipping. Use force=true to train again.", run_dir, runs.COMPLETED)
        return runs.read_results(run_dir)
    runs.write_config(run_dir, run.to_dict(), list(run.overrides))
    L.seed_everything(run.seed, workers=True)
    datamodule = run.data.datamodule()
    module = build(run)
    trainer, results = fit(run, module, datamodule)
    runs.update_results(run_dir, stage=run.stage, tags=list(run.tags), notes=run.notes,
                        overrides=list(run.overrides), **results)
    if extra_results:
        runs.update_results(run_dir, **extra_results)  # dict sections (metrics) merge
    if run.eval.after_train:  # before the marker: a killed evaluation resumes on re-run
        from walt.eval.evaluate import evaluate_after_train

        evaluate_after_train(run, module, trainer)
    runs.mark_complete(run_dir)
    log.info("finished %s: %s", run_dir, results["metrics"])
    return runs.read_results(run_dir)


def fit(run: RunConfig, module: L.LightningModule, datamodule: L.LightningDataModule) -> tuple[L.Trainer, dict]:
    """(trainer, results) of training `module` with run.trainer / logger / callbacks in run.run_dir,
    resuming from checkpoints/last.ckpt when it exists. failure.json records an error before it propagates."""
    run_dir = run.run_dir
    tidy_lightning_logging()
    logger = instantiate(run.logger) if run.logger else False
    callbacks = [instantiate(c) for c in run.callbacks.values()]
    # Under Slurm, submitit owns requeueing (hydra/launcher=slurm); Lightning's own SIGUSR1 requeue must stay off.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    trainer: L.Trainer = instantiate(run.trainer, logger=logger, callbacks=callbacks, plugins=plugins,
                                     default_root_dir=str(run_dir))
    if logger:
        # hp metrics are declared up front so the HPARAMS tab lines runs up by the same columns
        hp_metrics = (*getattr(module, "hp_metrics", ()), *(f"eval/{m}" for m in run.eval.stage_metrics(run.stage)))
        logger.log_hyperparams({**run.hparams(), "tags": ",".join(run.tags)}, metrics={m: math.nan for m in hp_metrics})

    last = run_dir / runs.LAST_CKPT
    start_step = 0
    if last.exists():
        start_step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        log.info("resuming from %s (step %d)", last, start_step)
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    except BaseException as err:
        runs.write_json_atomic(run_dir / runs.FAILED, {"error": repr(err), "traceback": traceback.format_exc(),
                                                       "global_step": trainer.global_step})
        raise
    if trainer.interrupted:
        raise RuntimeError(f"training of {run_dir} was interrupted at step {trainer.global_step}; re-run to resume")
    wall = time.perf_counter() - start
    steps = trainer.global_step - start_step
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    return trainer, {
        "metrics": metrics,
        "global_step": trainer.global_step,
        "params": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "wall_time_s": wall,
        "steps_per_sec": steps / wall if wall > 0 else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }
