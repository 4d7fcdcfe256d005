"""Train one stage in its run directory: module + data -> Trainer -> results.json -> COMPLETED.

One process per run directory (a lock; a dead holder's lock is taken over). A directory holding the
COMPLETED marker is skipped unless `force=true`, which sets the old run aside and starts at step 0.
Any other directory resumes from its newest intact checkpoint after comparing configs: settings that
are safe to continue with (step budget, evaluation, learning rate and schedule, logging) are applied
and logged, anything else fails naming the differences. Evaluation after training runs before the
marker, so a killed evaluation resumes on re-run without retraining.
"""
from __future__ import annotations

import logging
import math
import os
import traceback
import warnings
from pathlib import Path
from typing import Callable, Optional

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from walt import runs
from walt.config.run import EFFICIENCY_KEYS, RunConfig, differences
from walt.modules.build import build_module
from walt.modules.callbacks import RNGState, TrainClock
from walt.modules.checkpointing import AtomicCheckpointIO, resume_checkpoint
from walt.runs import LOCK, run_lock, set_aside
from walt.utils import ConfigChanged, launch_rank

log = logging.getLogger(__name__)
# settings a resumed run may change (applied from the resume step on); anything else must match
SAFE_ON_RESUME = (
    "trainer.max_steps", "trainer.val_check_interval", "trainer.limit_val_batches", "trainer.log_every_n_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "optim.lr", "optim.warmup_steps",
    "optim.max_steps", "optim.min_lr_ratio", "optim.sample_every_n_steps", "optim.num_log_samples",
    "autoencoder.optim.lr", "autoencoder.optim.disc_lr", "autoencoder.optim.warmup_steps", "autoencoder.log_videos",
    "data.num_workers", "data.pin_memory", "data.persistent_workers", "eval", "callbacks", "logger", "paths",
    "force", "tags", "notes", "ckpt_path", "run_name", *EFFICIENCY_KEYS,
)


def _no_advertising(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def tidy_lightning_logging() -> None:
    """One line per message: once the root logger has a handler (Hydra's, or the CLI's), Lightning's own
    stream handlers (added when it was imported before logging was set up) would print everything twice.
    Also drops Lightning's advertising tips, and its mid-epoch resume warning ("dataloader is not resumable ...
    unreliable results"), which is false here: the samplers continue the interrupted epoch (walt.data.sampling;
    tests/test_integrity.py checks the resumed weights equal the uninterrupted run's), and its "srun is available
    but not used" hint on any machine with Slurm installed: a run outside a Slurm job is a local run here, and
    Slurm jobs are started by the submitit launcher (hydra/launcher=slurm), which uses srun itself."""
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _no_advertising not in logger.filters:
            logger.addFilter(_no_advertising)


def slurm_threads() -> None:
    """Intra-op threads = the job's CPUs (SLURM_CPUS_PER_TASK) unless OMP_NUM_THREADS says otherwise: torch counts
    the host's cores, and without CPU binding two 1-CPU jobs on a 2-core node ran 18x slower than one alone."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit() and not os.environ.get("OMP_NUM_THREADS") and torch.get_num_threads() != int(cpus):
        log.info("Slurm job with %s CPUs per task: %s intra-op threads (was %d)", cpus, cpus, torch.get_num_threads())
        torch.set_num_threads(int(cpus))


def check_resume(run: RunConfig, stored_path: Path) -> None:
    """Fail on config changes a resumed run cannot take; log the safe ones it applies."""
    stored = OmegaConf.to_container(OmegaConf.load(stored_path))
    unsafe = differences(stored, run.to_dict(), ignore=SAFE_ON_RESUME)
    if unsafe:
        raise ConfigChanged(f"{run.run_dir} was started with another config; resuming it with this one would mix "
                         f"two experiments: {'; '.join(unsafe)}. Use force=true to start it over (the old run is "
                         f"kept under .replaced/), or a new run_name.")
    safe = differences(stored, run.to_dict(), ignore=("paths", "callbacks", "logger", "force", "run_name"))
    if safe:
        log.info("resuming %s with changed settings (applied from the resume step): %s", run.run_dir, "; ".join(safe))


def resumed(resume: Optional[Path]) -> str:
    if resume is None:
        return "fresh start"
    return f"resuming from {resume} (step {runs.checkpoint_step(resume)})"


def banner(run: RunConfig, resume: Optional[Path]) -> str:
    """What is about to happen, in a few lines (stage, model, data, token windows, directory, resume)."""
    what = (f"stage 2 (latent diffusion): {run.model.depth} blocks, d={run.model.hidden_size}, p={run.model.patch_size}, "
            f"layout {run.model.layout}" if run.stage == "diffusion" else
            f"stage 1 (autoencoder): base {run.autoencoder.base_channels}, c={run.autoencoder.latent_channels}")
    lines = [f"walt-train: {what}",
             f"  data: {run.data.dataset.value} {run.clip_frames}x{run.data.frame_size[0]}x{run.data.frame_size[1]} "
             f"from {run.data.root}" + (f" (latent cache {run.data.latent_cache})" if run.data.latent_cache else ""),
             f"  run directory: {run.run_dir}",
             f"  {resumed(resume)}, {run.trainer.get('max_steps')} steps"]
    if run.stage == "diffusion":
        t, h, w = run.model.input_size
        grid = (t, h // run.model.patch_size, w // run.model.patch_size)
        for kind in dict.fromkeys(run.model.blocks):
            window = tuple(run.model.window(kind))
            note = " (covers the whole token grid: full attention)" if kind != "full" and window == grid else ""
            lines.append(f"  {kind} window (tokens): {'x'.join(map(str, window))}{note}")
    return "\n".join(lines)


def train_stage(run: RunConfig, build: Callable[[RunConfig], L.LightningModule] = build_module,
                extra_results: Optional[dict] = None) -> dict:
    """Train `run` (built by `build`) unless its directory is complete; returns its results.json.

    extra_results: sections merged into results.json before evaluation (e.g. the first stage's metrics).
    """
    run_dir = run.run_dir
    if launch_rank() != 0:
        return follow(run, build)
    with run_lock(run_dir):
        stored = run_dir / runs.CONFIG
        if runs.is_complete(run_dir) and not run.force:
            diff = differences(OmegaConf.to_container(OmegaConf.load(stored)), run.to_dict(),
                               ignore=("paths", "force", "callbacks", "logger", "run_name")) if stored.exists() else []
            if diff:
                log.warning("run %s is complete but was trained with another config (%s); skipping it. Use "
                            "force=true to train it again with this one, or a new run_name.", run_dir, "; ".join(diff))
            else:
                log.info("run %s is complete (marker %s); skipping. Use force=true to train again.", run_dir, runs.COMPLETED)
            return runs.read_results(run_dir)
        if run.force and any(p.name not in (".hydra", LOCK, f"{LOCK}.owner") and p.suffix != ".log"
                             for p in run_dir.iterdir()):
            log.info("force=true: the previous run is kept in %s; starting at step 0", set_aside(run_dir))
        resume = resume_checkpoint(run_dir)
        if resume is not None and stored.exists():
            check_resume(run, stored)
        log.info("%s", banner(run, resume))
        runs.write_config(run_dir, run.to_dict(), list(run.overrides))
        L.seed_everything(run.seed, workers=True)
        module = build(run)
        if run.ckpt_path and resume is None:
            warm_start(module, run.ckpt_path)
        # a resume at max_steps (an interrupted evaluation) trains nothing; steps/s and wall time come from the
        # training clock saved in the checkpoints, so they stay those of the training sessions
        trainer, results = fit(run, module, run.data.datamodule(seed=run.seed), resume)
        if trainer.global_step == 0:  # e.g. every batch dropped: a run that trained nothing is not complete
            raise RuntimeError(f"{run_dir} trained 0 steps (trainer.max_steps={run.trainer.get('max_steps')}): no "
                               f"training batch was drawn; not marked complete")
        module = whole_module(run, module, trainer, build)
        runs.update_results(run_dir, stage=run.stage, tags=list(run.tags), notes=run.notes,
                            overrides=list(run.overrides), **results)
        if extra_results:
            runs.update_results(run_dir, **extra_results)  # dict sections (metrics) merge
        if run.eval.after_train:  # before the marker: a killed evaluation resumes on re-run
            from walt.eval.evaluate import evaluate_after_train

            evaluate_after_train(run, module, trainer)
        runs.mark_complete(run_dir)
        log.info("finished %s: %s", run_dir, runs.read_results(run_dir).get("metrics"))
        health = results.get("data_health") or {}
        if health.get("bad_total"):  # the end-of-run line a user reads: which files the run went without
            log.warning("%s trained without %d unreadable file(s) (%s; each counted once, results.json data_health): "
                        "%s", run_dir, health["bad_total"], ", ".join(f"{k} {v}" for k, v in health["bad"].items()),
                        "; ".join(health["bad_files"]))
        return runs.read_results(run_dir)


def follow(run: RunConfig, build: Callable[[RunConfig], L.LightningModule] = build_module) -> dict:
    """A non-zero rank of a multi-process run (Lightning's `ddp` launcher re-runs the command once per
    extra device; Slurm / torchrun start every rank): the same module, data and resume point as rank 0,
    joining its trainer.fit, but rank 0 alone holds the run directory's lock and writes config, results,
    evaluation and the completion marker. Returns {} (the results are rank 0's)."""
    run_dir = run.run_dir
    if runs.is_complete(run_dir) and not run.force:
        return {}
    resume = resume_checkpoint(run_dir)
    L.seed_everything(run.seed, workers=True)
    module = build(run)
    if run.ckpt_path and resume is None:
        warm_start(module, run.ckpt_path)
    trainer, _ = fit(run, module, run.data.datamodule(seed=run.seed), resume)
    whole_module(run, module, trainer, build)  # a collective under FSDP: every rank takes part
    return {}


def whole_module(run: RunConfig, module: L.LightningModule, trainer: L.Trainer,
                 build: Callable[[RunConfig], L.LightningModule] = build_module) -> Optional[L.LightningModule]:
    """The trained module as one process can use it for evaluation (rank 0 evaluates alone).

    DDP leaves every rank a whole module: returned as is. FSDP leaves shards (the EMA copy too), which rank 0
    alone cannot run: when the run evaluates after training, every rank joins gathering the full weights and
    rank 0 gets a fresh module holding them (None on the other ranks)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy) or not run.eval.after_train:
        return module
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(trainer.strategy.model, StateDictType.FULL_STATE_DICT, config):
        state = trainer.strategy.model.state_dict()
    if not trainer.is_global_zero:
        return None
    whole = build(run)
    whole.load_state_dict(state)
    return whole


def warm_start(module: L.LightningModule, path: str) -> None:
    """ckpt_path=<file>: initialise the weights from another run's checkpoint (fresh optimizer, step 0)."""
    ckpt = runs.load_weights(path)
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected or [k for k in missing if not k.startswith("ema.")]:
        raise ValueError(f"ckpt_path={path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("warm start: weights from %s (step %s); optimizer and step count start fresh", path, ckpt.get("global_step"))


def trainer_spec(run: RunConfig) -> dict:
    """run.trainer as the Trainer is built from it for run.stage. Stage 1 optimises manually (generator and
    discriminator steps): it clips each optimiser's gradients itself (autoencoder.optim.grad_clip), so the
    Trainer's automatic clipping, which Lightning refuses under manual optimisation, is not passed to it (a
    paper preset's trainer.gradient_clip_val is stage 2's); under DDP it finds unused parameters, because each
    of the two steps leaves the other network's parameters without gradients."""
    spec = run.trainer
    if run.stage != "autoencoder":
        return spec
    if spec.get("gradient_clip_val"):
        log.info("stage 1 clips its gradients itself (autoencoder.optim.grad_clip=%s); trainer.gradient_clip_val=%s "
                 "applies to stage 2", run.autoencoder.optim.grad_clip, spec["gradient_clip_val"])
        spec = {k: v for k, v in spec.items() if k not in ("gradient_clip_val", "gradient_clip_algorithm")}
    if spec.get("strategy") == "ddp":
        log.info("stage 1 under DDP: strategy ddp_find_unused_parameters_true (generator and discriminator steps "
                 "each leave the other network's parameters unused)")
        spec = {**spec, "strategy": "ddp_find_unused_parameters_true"}
    return spec


def fit(run: RunConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
        resume: Optional[Path] = None) -> tuple[L.Trainer, dict]:
    """(trainer, results) of training `module` with run.trainer / logger / callbacks in run.run_dir, resuming
    from `resume`. failure.json records an error before it propagates."""
    run_dir = run.run_dir
    tidy_lightning_logging()
    logger = instantiate(run.logger) if run.logger else False
    clock = TrainClock()
    callbacks = [instantiate(c) for c in run.callbacks.values()] + [RNGState(), clock]
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        # Under Slurm, submitit owns requeueing (hydra/launcher=slurm); Lightning's own SIGUSR1 requeue stays off.
        plugins.append(SLURMEnvironment(auto_requeue=False))
        slurm_threads()
    trainer: L.Trainer = instantiate(trainer_spec(run), logger=logger, callbacks=callbacks, plugins=plugins,
                                     default_root_dir=str(run_dir))
    if isinstance(logger, TensorBoardLogger):
        # hp metrics are declared up front so the HPARAMS tab lines runs up by the same columns
        from walt.eval.evaluate import hp_metric_tags

        hp_metrics = (*getattr(module, "hp_metrics", ()), *hp_metric_tags(run))
        logger.log_hyperparams({**run.hparams(), "tags": ",".join(run.tags)}, metrics={m: math.nan for m in hp_metrics})
    elif logger:
        logger.log_hyperparams({**run.hparams(), "tags": ",".join(run.tags)})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except BaseException as err:
        if trainer.is_global_zero:
            runs.write_json_atomic(run_dir / runs.FAILED, {"error": repr(err), "traceback": traceback.format_exc(),
                                                           "global_step": trainer.global_step})
        raise
    if trainer.interrupted:
        raise RuntimeError(f"training of {run_dir} was interrupted at step {trainer.global_step}; re-run to resume")
    wall = clock.elapsed()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    return trainer, {
        "metrics": metrics,
        "global_step": trainer.global_step,
        "params": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "wall_time_s": wall,
        "restarts": clock.restarts,
        "steps_per_sec": trainer.global_step / wall if wall > 0 else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "token_windows": run.model.token_windows() if run.stage != "autoencoder" else None,
        # files present / missing / unreadable by reason, each file counted once (walt.data.health)
        "data_health": datamodule.data_health() if hasattr(datamodule, "data_health") else None,
    }
