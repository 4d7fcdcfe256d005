"""Checks walt-train makes before it creates or trains anything: what this machine and the files the config
names must provide. They are not part of RunConfig.validate, which also re-composes stored runs (walt-eval of a
GPU-trained run on a laptop, a warm-start file since moved), where none of them apply.

Each failure is a ValueError / FileNotFoundError naming the key, the value and what would be valid, so the
CLI prints it as one line with exit status 2.
"""
from __future__ import annotations

from pathlib import Path

import torch

from walt import runs
from walt.config import RunConfig
from walt.config.schema import AUTO, Dataset
from walt.utils import launch_rank

GPU_ACCELERATORS = ("gpu", "cuda")


def check(run: RunConfig, run_dir: bool = True) -> RunConfig:
    """Every check below, in order of cost; returns `run`. run_dir=False leaves out the run-directory check
    (a sweep's jobs composed before launch do not know their job directories yet)."""
    check_accelerator(run)
    check_data_roots(run)
    check_files(run)
    if run_dir:
        check_run_dir(run)
    return run


def check_run_dir(run: RunConfig) -> None:
    """Refusals (walt.utils.Refused, exit 3) that used to come after the autoencoder was trained: the run
    directory in use by another process, or an unfinished run resumed with a config it cannot take."""
    from walt.modules.checkpointing import resume_checkpoint
    from walt.pipeline.first_stage import resolved
    from walt.pipeline.fit import check_resume

    run_dir = run.run_dir
    if not run_dir.is_dir() or launch_rank() != 0:  # a DDP follower joins the run rank 0 holds
        return
    holder = runs.holder(run_dir)
    if holder:
        raise runs.in_use(run_dir, holder)
    stored = run_dir / runs.CONFIG
    if not run.force and not runs.is_complete(run_dir) and stored.is_file() and resume_checkpoint(run_dir) is not None:
        check_resume(resolved(run) if run.stage != "autoencoder" else run, stored)


def check_accelerator(run: RunConfig) -> None:
    """trainer=gpu / ddp / fsdp on a machine without CUDA: refused here rather than inside Lightning."""
    accelerator = str(run.trainer.get("accelerator", "auto"))
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none "
                         f"(torch {torch.__version__}, torch.cuda.is_available() is False): use trainer=cpu")


def check_data_roots(run: RunConfig) -> None:
    """The dataset folders a real dataset (and joint training's image source) reads; the synthetic set is
    generated on first use. Skipped when the run reads a latent cache only."""
    d = run.data
    roots = []
    if d.dataset != Dataset.synthetic and not (run.stage == "diffusion" and d.latent_cache not in (None, AUTO)):
        roots.append(("data.root", d.root))
    if d.image_ratio > 0 or d.append_images > 0:
        roots.append(("data.image_root", d.image_root))
    for key, root in roots:
        if not root or not Path(root).is_dir():
            raise FileNotFoundError(f"{key}={root} is not a directory: data={d.dataset.value} reads its videos "
                                    f"from there (the README's Datasets section shows the layout)")


def check_files(run: RunConfig) -> None:
    """ckpt_path (warm start) must exist; first_stage_ckpt must be an autoencoder's checkpoint whose latents
    have the channels the model takes."""
    if run.ckpt_path and not Path(run.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={run.ckpt_path} does not exist (the checkpoint to warm-start from)")
    ckpt = run.first_stage_ckpt
    if run.stage == "autoencoder" or not ckpt or ckpt == AUTO:
        return
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"first_stage_ckpt={ckpt} does not exist (use first_stage_ckpt=auto to train one)")
    hparams = runs.load_weights(ckpt, mmap=True).get("hyper_parameters") or {}
    config = hparams.get("config")
    if config is None or "latent_channels" not in config:
        kind = "a stage-2 or cascade checkpoint" if "model" in hparams else "not an autoencoder checkpoint"
        raise ValueError(f"first_stage_ckpt={ckpt} is {kind}: give the autoencoder run's checkpoints/last.ckpt "
                         f"(outputs/autoencoders/<hash>/checkpoints/last.ckpt, or first_stage_ckpt=auto)")
    channels = int(config["latent_channels"])
    if channels != run.model.in_channels:
        raise ValueError(f"first_stage_ckpt={ckpt} has {channels} latent channels but the model takes "
                         f"{run.model.in_channels} (model.in_channels / autoencoder.latent_channels): set "
                         f"autoencoder.latent_channels={channels} (the autoencoder config the checkpoint was trained with)")
