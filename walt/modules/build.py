"""RunConfig -> LightningModule: which module a stage trains, and how a checkpoint becomes a module again.

The modules themselves take typed parts (AutoencoderConfig; ModelConfig + DiffusionConfig + OptimConfig);
this is the one place that reads a whole RunConfig to pick and assemble them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import lightning as L
import torch

from walt.config.run import RunConfig
from walt.config.schema import AUTO
from walt.modules.autoencoder import AutoencoderModule, load_autoencoder
from walt.modules.interpolation import InterpolationModule
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.modules.super_resolution import SuperResolutionModule
from walt.runs import checkpoint_step, load_weights

CASCADE_MODULES = {"super_resolution": SuperResolutionModule, "interpolation": InterpolationModule}

log = logging.getLogger(__name__)


def load_first_stage(run: RunConfig) -> Optional[AutoencoderModule]:
    """The frozen autoencoder of run.first_stage_ckpt (None when unset: batches must carry latents).

    Latent normalisation follows this run's `diffusion.normalize_latents` (Table 3e ablates it in
    stage 2); the statistics are in the autoencoder's checkpoint either way.
    """
    path = run.first_stage_ckpt
    if not path or path == AUTO:
        return None
    return load_autoencoder(path, normalize_latents=run.diffusion.normalize_latents)


def load_text_encoder(run: RunConfig):
    """The frozen text encoder of run.text for text-conditioned models (None otherwise)."""
    if not run.model.cross_attention_dim:
        return None
    from walt.text import load_text_encoder as load

    return load(run.text)


def build_module(run: RunConfig) -> L.LightningModule:
    """A freshly initialised module of run.stage (stage 2 and the cascade stages with their frozen first
    stage and, for text-conditioned models, text encoder)."""
    if run.stage == "autoencoder":
        return AutoencoderModule(run.autoencoder)
    frozen = dict(first_stage=load_first_stage(run), text_encoder=load_text_encoder(run))
    if run.stage in CASCADE_MODULES:
        return CASCADE_MODULES[run.stage](run.model, run.diffusion, run.optim, run.lowres, **frozen)
    return LatentDiffusionModule(run.model, run.diffusion, run.optim, **frozen)


def load_module(run: RunConfig, ckpt_path: str | Path) -> tuple[L.LightningModule, int]:
    """(module in eval mode, global step) from a checkpoint of `run`, loaded with weights_only=True.

    Stage 1: `load_autoencoder` (EMA weights, frozen). Stage 2: rebuilt from the run's config (with its
    first stage), then the checkpoint's weights, strictly, so a config that does not match the
    checkpoint fails naming the tensors.
    """
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: train the run first (walt-train)")
    if run.stage == "autoencoder":
        return load_autoencoder(str(path)), checkpoint_step(path)
    ckpt = load_weights(path)
    module = build_module(run)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    return module.eval(), int(ckpt.get("global_step", 0))
