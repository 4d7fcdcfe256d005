"""Find (or train once) the frozen stage-1 autoencoder a stage-2 run needs.

With `first_stage_ckpt=auto`, the checkpoint lives under
`<paths.output_dir>/autoencoders/<key>/`, where the key hashes what determines the autoencoder:
its config (less `normalize_latents`, a stage-2 ablation applied at encode time, and logging
settings), the clips it trains on, its step budget and the seed. A Table 3f sweep over
`autoencoder.latent_channels` therefore trains one autoencoder per c, and every other sweep
shares one. An exclusive file lock makes concurrent sweep jobs wait for the one that trains it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from walt import runs

log = logging.getLogger(__name__)
AUTO = "auto"
_DATA_KEYS = ("dataset", "root", "split", "train_dir", "num_frames", "frame_stride", "resolution",
              "temporal_sampling", "crop", "batch_size")
_UNHASHED_AE_KEYS = ("normalize_latents", "log_videos")


def autoencoder_key(cfg: DictConfig) -> str:
    """Short hash of everything that makes the stage-1 checkpoint what it is."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    ae = {k: v for k, v in plain["autoencoder"].items() if k not in _UNHASHED_AE_KEYS}
    payload = {"autoencoder": ae, "data": {k: plain["data"].get(k) for k in _DATA_KEYS},
               "steps": plain["first_stage_steps"], "seed": plain["seed"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def autoencoder_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir) / "autoencoders" / autoencoder_key(cfg)


def resolve(cfg: DictConfig) -> str | None:
    """The checkpoint path for `cfg.first_stage_ckpt` (a path, null, or auto: find or train)."""
    ckpt = cfg.first_stage_ckpt
    if ckpt != AUTO:
        if ckpt and not Path(ckpt).is_file():
            raise FileNotFoundError(f"first_stage_ckpt={ckpt} does not exist (use first_stage_ckpt=auto to train one)")
        return ckpt
    run_dir = autoencoder_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent job trains it; the others wait here
        if not runs.is_complete(run_dir):
            log.info("no finished autoencoder for this config; training one in %s", run_dir)
            _train_autoencoder(cfg, run_dir)
    return str(run_dir / runs.LAST_CKPT)


def _train_autoencoder(cfg: DictConfig, run_dir: Path) -> None:
    from walt.train import run

    ae_cfg = cfg.copy()
    with open_dict(ae_cfg):
        ae_cfg.stage = "autoencoder"
        ae_cfg.first_stage_ckpt = None
        ae_cfg.autoencoder.normalize_latents = True  # always store the stats; stage 2 decides
        ae_cfg.trainer.max_steps = cfg.first_stage_steps
        ae_cfg.paths.run_dir = str(run_dir)
        ae_cfg.force = False
    run(ae_cfg)
