"""The training entry: composed config -> DataModule + LightningModule -> Trainer -> results.json.

Re-running with the same run directory resumes from checkpoints/last.ckpt; a run directory
holding the COMPLETED marker is skipped unless `force=true`.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from walt import first_stage, runs
from walt.config import validate
from walt.evaluate import evaluate_after_train, hp_metric_tags

log = logging.getLogger(__name__)


def stage_name(cfg: DictConfig) -> str:
    return str(cfg.stage.value if hasattr(cfg.stage, "value") else cfg.stage)


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule of `cfg.stage`."""
    stage = stage_name(cfg)
    if stage == "autoencoder":
        from walt.modules.autoencoder import build_from_config
    elif stage == "diffusion":
        from walt.modules.latent_diffusion import build_from_config
    else:
        raise ValueError(f"unknown stage {stage!r}; choose autoencoder or diffusion")
    return build_from_config(cfg)


def flat_hparams(cfg: DictConfig) -> dict:
    """Scalar leaves of the resolved config as 'group.key' -> value, for TensorBoard's HPARAMS tab."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (list, tuple)):
                out[name] = str(value)
            elif value is None or isinstance(value, (bool, int, float, str)):
                out[name] = "None" if value is None else value
            else:
                out[name] = str(value)

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    walk({k: v for k, v in container.items() if k not in ("hydra", "paths", "callbacks")}, "")
    return out


def run(cfg: DictConfig) -> dict:
    """Train one run; returns the results written to <run_dir>/results.json."""
    run_dir = Path(cfg.paths.run_dir)
    if runs.is_complete(run_dir) and not cfg.force:
        log.info("run %s is complete (marker %s); skipping. Use force=true to train again.", run_dir, runs.COMPLETED)
        return runs.read_results(run_dir)
    validate(cfg)
    if stage_name(cfg) == "diffusion":  # before config.yaml, so the run records the checkpoint it used
        with open_dict(cfg):
            cfg.first_stage_ckpt = first_stage.resolve(cfg)
            cfg.data.latent_cache = first_stage.resolve_latent_cache(cfg, cfg.first_stage_ckpt)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data, _convert_="all")
    module = build_module(cfg)
    logger = instantiate(cfg.logger) if cfg.logger else False
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    # Under Slurm, submitit owns requeueing (hydra/launcher=slurm); Lightning's own SIGUSR1 requeue must stay off.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks, plugins=plugins,
                                     default_root_dir=str(run_dir))
    if logger:
        # hp metrics are declared up front so the HPARAMS tab lines runs up by the same columns
        hp_metrics = (*getattr(module, "hp_metrics", ()), *hp_metric_tags(cfg))
        logger.log_hyperparams(flat_hparams(cfg), metrics={m: float("nan") for m in hp_metrics})

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
    runs.update_results(
        run_dir,
        stage=stage_name(cfg),
        metrics=metrics,
        global_step=trainer.global_step,
        params=sum(p.numel() for p in module.parameters() if p.requires_grad),
        wall_time_s=wall,
        steps_per_sec=steps / wall if wall > 0 else None,
        peak_memory_bytes=torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        overrides=_overrides(),
    )
    if stage_name(cfg) == "diffusion" and cfg.first_stage_ckpt:
        # the autoencoder's reconstruction metrics travel with the stage-2 run (Table 3f's rFVD column)
        ae = runs.read_results(Path(cfg.first_stage_ckpt).parents[1]).get("metrics", {})
        recon = {k: v for k, v in ae.items() if k in ("rfvd", "rfvd_synth", "psnr", "ssim")}
        runs.update_results(run_dir, metrics=recon, first_stage={"ckpt": cfg.first_stage_ckpt, "metrics": ae})
    evaluate_after_train(cfg, module, trainer)  # before the marker: a killed evaluation resumes on re-run
    runs.mark_complete(run_dir)
    log.info("finished %s: %s", run_dir, metrics)
    return runs.read_results(run_dir)


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
