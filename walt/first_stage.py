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
    plain = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) for k in ("autoencoder", "data")}
    ae = {k: v for k, v in plain["autoencoder"].items() if k not in _UNHASHED_AE_KEYS}
    payload = {"autoencoder": ae, "data": {k: plain["data"].get(k) for k in _DATA_KEYS},
               "steps": cfg.first_stage_steps, "seed": cfg.seed}
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
        ae_cfg.data.latent_cache = None  # stage 1 trains on video
        ae_cfg.autoencoder.normalize_latents = True  # always store the stats; stage 2 decides
        ae_cfg.trainer.max_steps = cfg.first_stage_steps
        ae_cfg.paths.run_dir = str(run_dir)
        ae_cfg.force = False
    run(ae_cfg)


def latent_cache_dir(cfg: DictConfig, ckpt: str) -> Path:
    """Where the latents of cfg.data encoded by `ckpt` live; the key names the clips and the scaling."""
    from walt.data.latents import cache_dir_for

    d = cfg.data
    norm = "norm" if cfg.autoencoder.normalize_latents else "raw"
    key = f"{d.dataset.value}_s{d.split}_{d.num_frames}x{d.frame_stride}x{d.resolution}_{norm}"
    return cache_dir_for(ckpt, key, Path(cfg.paths.data_dir) / "latents")


def encode_latents(cfg: DictConfig, ckpt: str) -> Path:
    """Encode the train and val splits (centred clips, fixed order) once; returns the cache root."""
    from hydra.utils import instantiate

    from walt.data.latents import encode_dataset, is_complete
    from walt.modules.latent_diffusion import _first_stage

    root = latent_cache_dir(cfg, ckpt)
    if all(is_complete(root / split) for split in ("train", "val")):
        return root
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.latent_cache = None
        data_cfg.temporal_sampling = "center"
        data_cfg.crop = "center"
    dm = instantiate(data_cfg, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    with open_dict(cfg):
        cfg.first_stage_ckpt = ckpt
    module = _first_stage(cfg)
    for split, dataset in (("train", dm.train_set), ("val", dm.val_set)):
        encode_dataset(module, dm.loader(dataset, shuffle=False), root / split)
    return root


def resolve_latent_cache(cfg: DictConfig, ckpt: str | None) -> str | None:
    """data.latent_cache: null (encode on the fly), a path, or auto (encode once, then reuse)."""
    cache = cfg.data.get("latent_cache")
    if cache != AUTO:
        return cache
    if not ckpt:
        raise ValueError("data.latent_cache=auto needs a first stage (first_stage_ckpt=auto or a path)")
    return str(encode_latents(cfg, ckpt))
