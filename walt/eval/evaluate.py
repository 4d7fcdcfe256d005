"""walt-eval's core: measure a run's checkpoints (or a module in memory), write results.json and TensorBoard.

results.json: `checkpoints: {"<global step>": {"metrics", "protocol", "evaluation"}}` holds every
checkpoint measured; the top-level metrics / protocol / evaluation are those of last.ckpt (or of the
module walt-train just trained), merged beside training's own metrics. A checkpoint already measured
with the same eval settings (same file, same settings) is not measured or logged again; an
interrupted measurement resumes from its cached passes (walt.eval.state).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import torch

from walt import runs
from walt.config.eval import STAGE_METRICS
from walt.config.run import RunConfig, quote
from walt.eval.autoencoder import measure_autoencoder
from walt.eval.checkpoints import Checkpoint, run_checkpoints, select_checkpoints
from walt.eval.context import EvalContext, Measurement, metric_names
from walt.eval.diffusion import measure_diffusion
from walt.eval.state import digest
from walt.eval.tensorboard import TAG_PREFIX, TB_DIR, log_evaluation
from walt.modules.build import build_module, load_module

log = logging.getLogger(__name__)
# eval settings that do not change the numbers (beyond float round-off), left out of the "measured already" key
NOT_IN_KEY = ("device", "after_train", "batch_size")


def hp_metric_tags(run: RunConfig) -> list[str]:
    """TensorBoard tags evaluation writes for this run (walt-train declares them in log_hyperparams so
    the HPARAMS tab has the columns); none for the cascade stages, which are measured end to end, not per run."""
    if run.stage not in STAGE_METRICS:
        return []
    return [TAG_PREFIX + m for m in metric_names(run)]


def evaluate_run(run: RunConfig, module=None, ckpt: str = "last", step: Optional[int] = None) -> dict:
    """Measure a run and record it in <run_dir>/results.json and <run_dir>/tensorboard.

    module: a trained LightningModule in memory (walt-train's hook), measured as the run's last weights
        at `step` (default: module.global_step); None = the checkpoints `ckpt` names ("last", "all",
        "2000,4000").
    Returns {"checkpoints": {step: entry}} plus, when last.ckpt (or `module`) was measured, its entry's
    "metrics", "protocol" and "evaluation" at the top level, as results.json holds them.
    """
    chosen = [] if module is not None else select_checkpoints(run.run_dir, ckpt)
    ctx = EvalContext.build(run)  # weights files are checked here, before any model is loaded
    if module is not None:
        step = int(module.global_step if step is None else step)
        # the module in memory holds last.ckpt's weights when that file is at this step: recorded under the
        # file's key, so a later `walt-eval ckpt=all` finds the step measured instead of logging it twice
        last = next((c for c in run_checkpoints(run.run_dir) if c.last and c.step == step), None)
        return _collect({step: _evaluate(ctx, module, step, last, key=_key(ctx, last) if last else None)})
    entries = {}
    for c in chosen:
        entries[c.step] = _evaluate_checkpoint(ctx, c)
    return _collect(entries, last=next((c.step for c in chosen if c.last), None))


def evaluate_after_train(run: RunConfig, module, trainer=None) -> dict:
    """walt-train's end-of-run hook: evaluate `module` when eval.after_train is set (rank 0 only); else {}."""
    if not run.eval.after_train or (trainer is not None and not trainer.is_global_zero):
        return {}
    return evaluate_run(run, module=module, step=trainer.global_step if trainer is not None else None)


def evaluate_untrained(run: RunConfig, out_dir: str | os.PathLike) -> dict:
    """The same evaluation of a freshly initialised model of `run` (seeded with run.seed), written as a
    run-like directory: config.yaml, overrides.yaml, results.json (baseline: untrained), tensorboard/.
    It has no COMPLETED marker: it is a reference point, not a trained run."""
    out_dir = Path(out_dir)
    run = run.with_overrides(f"paths.run_dir={quote(out_dir)}")
    ctx = EvalContext.build(run)
    runs.write_config(out_dir, run.to_dict(), list(run.overrides))
    torch.manual_seed(run.seed)
    module = build_module(run)
    runs.update_results(out_dir, stage=run.stage, baseline="untrained", global_step=0,
                        params=sum(p.numel() for p in module.parameters() if p.requires_grad))
    return _collect({0: _evaluate(ctx, module, 0, None, hparams={"baseline": "untrained"})})


def _collect(entries: dict, last: Optional[int] = None) -> dict:
    last = next(iter(entries)) if last is None and len(entries) == 1 else last
    return {"checkpoints": entries, **(entries[last] if last is not None else {})}


def _key(ctx: EvalContext, c: Checkpoint) -> str:
    """What makes a stored measurement of checkpoint `c` current: the file (name, size, mtime) and the eval
    settings that change the numbers."""
    stat = c.path.stat()
    settings = {k: v for k, v in ctx.run.eval.to_dict().items() if k not in NOT_IN_KEY}
    if ctx.run.stage == "diffusion" and ctx.run.model.context_frames > 0:
        settings["task"] = "frame_prediction"  # entries measured before frame prediction used real context are stale
    return digest({"file": c.path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "eval": settings})


def _evaluate_checkpoint(ctx: EvalContext, c: Checkpoint) -> dict:
    key = _key(ctx, c)
    entry = runs.read_results(ctx.run.run_dir).get("checkpoints", {}).get(str(c.step))
    if entry and entry.get("evaluation", {}).get("key") == key:
        log.info("step %d (%s) was measured with these settings already: %s", c.step, c.path.name, entry["metrics"])
        if c.last:
            runs.update_results(ctx.run.run_dir, metrics=entry["metrics"], protocol=entry["protocol"],
                                evaluation=entry["evaluation"])
        return entry
    module, step = load_module(ctx.run, c.path)
    return _evaluate(ctx, module, step, c, key=key)


def _evaluate(ctx: EvalContext, module, step: int, c: Optional[Checkpoint], key: Optional[str] = None,
              hparams: Optional[dict] = None) -> dict:
    """Measure one model, record it as checkpoint `step` (and as the run's top-level numbers unless it is
    an earlier checkpoint), log it to TensorBoard; returns the entry."""
    start = time.perf_counter()
    run, run_dir = ctx.run, ctx.cache_dir.parent
    module = module.float().eval().to(ctx.device)
    measure = measure_diffusion if run.stage == "diffusion" else measure_autoencoder
    m: Measurement = measure(ctx, module)
    ckpt = None if c is None else str(c.path.relative_to(run_dir) if c.path.is_relative_to(run_dir) else c.path)
    evaluation = {"stage": run.stage, "global_step": step, "ckpt": ckpt, "key": key, "device": str(ctx.device),
                  "wall_time_s": time.perf_counter() - start, "config": run.eval.to_dict(), **m.extra}
    protocol = {k: p.to_dict() for k, p in m.protocols.items()}
    entry = {"metrics": m.values, "protocol": protocol, "evaluation": evaluation}
    runs.update_results(run_dir, checkpoints={str(step): entry})
    if c is None or c.last:
        runs.update_results(run_dir, **entry)
    log_evaluation(run_dir / TB_DIR, m.values, step, m.preview, hparams={**run.hparams(), **(hparams or {})},
                   declared=hp_metric_tags(run))
    log.info("evaluated %s at step %d: %s", run_dir, step, m.values)
    return entry
