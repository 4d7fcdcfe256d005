"""Find (or train once) the frozen stage-1 autoencoder a stage-2 run needs, and its latent cache.

With `first_stage_ckpt=auto`, the checkpoint lives under `<paths.output_dir>/autoencoders/<key>/`,
where the key hashes what determines the autoencoder: its config (less logging settings), the clips
it trains on, its step budget and its seed (first_stage_seed, not the stage-2 seed: replicates share it). A Table 3f sweep over `autoencoder.latent_channels`
therefore trains one autoencoder per c, and every other sweep shares one. A file lock makes
concurrent sweep jobs wait for the one that trains it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from filelock import FileLock

from walt import runs
from walt.config.run import RunConfig, quote
from walt.config.schema import AUTO
from walt.pipeline.fit import train_stage
from walt.utils import launch_rank

log = logging.getLogger(__name__)
_DATA_KEYS = ("dataset", "root", "split", "train_dir", "num_frames", "frame_stride", "resolution",
              "temporal_sampling", "crop", "batch_size")
_UNHASHED_AE_KEYS = ("log_videos",)
LOCK_TIMEOUT_S = 24 * 3600  # a waiting sweep job gives up after a day (the trainer job likely died)


def autoencoder_key(run: RunConfig) -> str:
    """Short hash of everything that makes the stage-1 checkpoint what it is."""
    ae = {k: v for k, v in run.autoencoder.to_dict().items() if k not in _UNHASHED_AE_KEYS}
    data = run.to_dict()["data"]
    payload = {"autoencoder": ae, "data": {k: data.get(k) for k in _DATA_KEYS},
               "steps": run.first_stage_steps, "seed": run.first_stage_seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def autoencoder_dir(run: RunConfig) -> Path:
    return Path(run.paths.output_dir) / "autoencoders" / autoencoder_key(run)


def autoencoder_run(run: RunConfig) -> RunConfig:
    """The stage-1 run that trains `run`'s autoencoder: same data and autoencoder, first_stage_steps steps."""
    return run.with_overrides("stage=autoencoder", "first_stage_ckpt=null", "data.latent_cache=null", "force=false",
                              f"trainer.max_steps={run.first_stage_steps}", f"seed={run.first_stage_seed}",
                              f"paths.run_dir={quote(autoencoder_dir(run))}")


def resolve(run: RunConfig) -> str | None:
    """The checkpoint path for run.first_stage_ckpt (a path, null, or auto: find or train)."""
    ckpt = run.first_stage_ckpt
    if ckpt != AUTO:
        if ckpt and not Path(ckpt).is_file():
            raise FileNotFoundError(f"first_stage_ckpt={ckpt} does not exist (use first_stage_ckpt=auto to train one)")
        return ckpt
    run_dir = autoencoder_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    if launch_rank() != 0:  # a non-zero DDP rank joins rank 0's training of it (which holds the lock)
        if not runs.is_complete(run_dir):
            train_stage(autoencoder_run(run))
        return str(run_dir / runs.LAST_CKPT)
    with FileLock(str(run_dir / ".lock"), timeout=LOCK_TIMEOUT_S):  # a concurrent job trains it; the others wait
        if not runs.is_complete(run_dir):
            log.info("no finished autoencoder for this config; training one in %s", run_dir)
            train_stage(autoencoder_run(run))
    return str(run_dir / runs.LAST_CKPT)


def latent_cache_dir(run: RunConfig, ckpt: str) -> Path:
    """Where the latents of run.data encoded by `ckpt` live; the key names the clips and the scaling."""
    from walt.data.latents import cache_dir_for

    d = run.data
    norm = "norm" if run.diffusion.normalize_latents else "raw"
    res = d.resolution if isinstance(d.resolution, int) else "x".join(map(str, d.frame_size))  # square keys unchanged
    key = f"{d.dataset.value}_s{d.split}_{d.num_frames}x{d.frame_stride}x{res}_{norm}"
    return cache_dir_for(ckpt, key, Path(run.paths.data_dir) / "latents")


def encode_latents(run: RunConfig, ckpt: str) -> Path:
    """Encode the train and val splits (centred clips, fixed order) once; returns the cache root."""
    from walt.data.latents import encode_dataset, is_complete
    from walt.modules.autoencoder import load_autoencoder

    root = latent_cache_dir(run, ckpt)
    if all(is_complete(root / split) for split in ("train", "val")):
        return root
    if launch_rank() != 0:  # rank 0 encodes it (no process group exists here); the other ranks wait
        return wait_for(lambda: all(is_complete(root / split) for split in ("train", "val")), root,
                        f"the latent cache {root} (rank 0 encodes it)")
    dm = run.data.datamodule(latent_cache=None, temporal_sampling="center", crop="center")
    dm.prepare_data()
    dm.setup("fit")
    module = load_autoencoder(ckpt, normalize_latents=run.diffusion.normalize_latents)
    for split, dataset in (("train", dm.train_set), ("val", dm.val_set)):
        encode_dataset(module, dm.loader(dataset, shuffle=False), root / split)
    return root


def wait_for(done, value, what: str, timeout_s: float = LOCK_TIMEOUT_S, poll_s: float = 2.0):
    """`value` once done() holds; TimeoutError naming `what` after timeout_s."""
    import time

    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(poll_s)
    return value


def resolved(run: RunConfig) -> RunConfig:
    """`run` with `auto` first_stage_ckpt / data.latent_cache replaced by the paths they resolve to, without
    training or encoding anything (what a finished run recorded, so a re-run compares like with like)."""
    ckpt = str(autoencoder_dir(run) / runs.LAST_CKPT) if run.first_stage_ckpt == AUTO else run.first_stage_ckpt
    cache = run.data.latent_cache
    if cache == AUTO and ckpt and Path(ckpt).is_file():  # the cache is keyed by the checkpoint's content
        cache = str(latent_cache_dir(run, ckpt))
    if (ckpt, cache) == (run.first_stage_ckpt, run.data.latent_cache):
        return run
    return run.with_overrides(f"first_stage_ckpt={quote(ckpt)}", f"data.latent_cache={quote(cache)}")


def prepare(run: RunConfig) -> RunConfig:
    """A stage-2 run with first_stage_ckpt and data.latent_cache resolved to paths (training the
    autoencoder and encoding the cache once when they are `auto`)."""
    ckpt = resolve(run)
    cache = run.data.latent_cache
    if cache == AUTO:
        if not ckpt:
            raise ValueError("data.latent_cache=auto needs a first stage (first_stage_ckpt=auto or a path)")
        cache = str(encode_latents(run, ckpt))
    if (ckpt, cache) == (run.first_stage_ckpt, run.data.latent_cache):
        return run
    return run.with_overrides(f"first_stage_ckpt={quote(ckpt)}", f"data.latent_cache={quote(cache)}")
