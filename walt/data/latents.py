"""Latent cache: a dataset encoded once by a frozen stage-1 autoencoder, read back by stage 2.

Layout of one cache directory (named by `cache_dir_for`, keyed by the checkpoint's content hash):
    shard_00000.pt   {"latents": (N, c, t, h, w), "labels": (N,) int64, "indices": (N,) int64,
                      "captions": [str] * N}
    index.json       written last: shard list, item count, latent shape, the normalisation used.
The directory is built under a temporary name and renamed into place, so an interrupted encode
never leaves a directory that looks complete. Everything loads with weights_only=True.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import torch
from torch.utils.data import Dataset

from walt.data.video import to_model_range
from walt.weights import file_checksum

log = logging.getLogger(__name__)
INDEX = "index.json"
FORMAT_VERSION = 1


def checkpoint_key(ckpt_path: str | os.PathLike, length: int = 12) -> str:
    """Short content hash of a checkpoint file: a retrained or changed autoencoder gets a new cache."""
    return file_checksum(ckpt_path, "sha256")[:length]


def cache_dir_for(ckpt_path: str | os.PathLike, data_key: str, root: str | os.PathLike) -> Path:
    """<root>/<data_key>__ae-<hash>: where the latents of `data_key` (e.g. "ucf101_s1_train_17x128")
    encoded by the checkpoint at `ckpt_path` live."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", data_key).strip("-") or "data"
    return Path(root) / f"{safe}__ae-{checkpoint_key(ckpt_path)}"


def is_complete(cache_dir: str | os.PathLike) -> bool:
    return (Path(cache_dir) / INDEX).is_file()


@torch.no_grad()
def encode_dataset(module, dataloader, out_dir: str | os.PathLike, shard_size: int = 1024,
                   dtype: torch.dtype = torch.float32, overwrite: bool = False, stats_batches: int | None = None) -> Path:
    """Encode every batch of `dataloader` (dicts with video, label, caption, index) with `module`
    (an AutoencoderModule, e.g. from load_autoencoder) into `out_dir`; returns `out_dir`.

    A complete cache is reused unless `overwrite`. Latent statistics are computed first (on the
    same loader, up to `stats_batches` batches) when the module has none and normalises latents.
    Run it in one process; the loader should be deterministic (no shuffling or random crops).
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir) and not overwrite:
        log.info("latent cache %s is complete; reusing it", out_dir)
        return out_dir
    if module.normalize_latents and not bool(module.latent_stats_ready):
        log.info("autoencoder has no latent statistics; computing them before encoding")
        module.compute_latent_stats(dataloader, stats_batches)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shards, buffer, count, shape = [], [], 0, None

        def flush():
            nonlocal buffer
            if not buffer:
                return
            shard = {
                "latents": torch.cat([b["latents"] for b in buffer]),
                "labels": torch.cat([b["labels"] for b in buffer]),
                "indices": torch.cat([b["indices"] for b in buffer]),
                "captions": [c for b in buffer for c in b["captions"]],
            }
            name = f"shard_{len(shards):05d}.pt"
            torch.save(shard, tmp / name)
            shards.append({"file": name, "count": len(shard["captions"])})
            buffer = []

        for batch in dataloader:
            video = to_model_range(batch["video"].to(module.device))
            z = module.encode(video, normalize=True).to("cpu", dtype)  # (B, c, t, h, w), normalised
            n = z.shape[0]
            shape = list(z.shape[1:])
            labels = torch.as_tensor(batch.get("label", [-1] * n)).long().reshape(n)
            indices = torch.as_tensor(batch.get("index", list(range(count, count + n)))).long().reshape(n)
            captions = list(batch.get("caption", [""] * n))
            buffer.append({"latents": z, "labels": labels, "indices": indices, "captions": captions})
            count += n
            if sum(b["latents"].shape[0] for b in buffer) >= shard_size:
                flush()
        flush()
        if count == 0:
            raise ValueError("encode_dataset: the dataloader yielded no batches")
        index = {
            "format_version": FORMAT_VERSION,
            "num_items": count,
            "latent_shape": shape,
            "dtype": str(dtype).removeprefix("torch."),
            "shards": shards,
            "normalized": bool(module.normalize_latents),
            "latent_mean": module.latent_mean.tolist(),
            "latent_std": module.latent_std.tolist(),
        }
        (tmp / INDEX).write_text(json.dumps(index, indent=1))  # last file written: marks completion
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d latents of shape %s to %s", count, shape, out_dir)
    return out_dir


class LatentDataset(Dataset):
    """Items {'latents': (c, t, h, w) float, 'label': int, 'caption': str, 'index': int} of a cache.

    Shards are memory-mapped, so opening a large cache is cheap and workers share pages.
    `latent_mean`/`latent_std` (c,) and `normalized` say how the latents were scaled.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.root = Path(cache_dir)
        if not is_complete(self.root):
            raise FileNotFoundError(f"{self.root} is not a complete latent cache (no {INDEX}); encode it with "
                                    f"walt.data.latents.encode_dataset")
        self.meta = json.loads((self.root / INDEX).read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.root}: cache format {self.meta.get('format_version')} != {FORMAT_VERSION}; re-encode it")
        self.shards = [torch.load(self.root / s["file"], map_location="cpu", weights_only=True, mmap=True)
                       for s in self.meta["shards"]]
        self.offsets = []
        for shard_id, s in enumerate(self.meta["shards"]):
            self.offsets += [(shard_id, i) for i in range(s["count"])]
        self.normalized = bool(self.meta["normalized"])
        self.latent_mean = torch.tensor(self.meta["latent_mean"])
        self.latent_std = torch.tensor(self.meta["latent_std"])

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        shard_id, j = self.offsets[i]
        shard = self.shards[shard_id]
        return {
            "latents": shard["latents"][j].float(),
            "label": int(shard["labels"][j]),
            "caption": shard["captions"][j],
            "index": int(shard["indices"][j]),
        }
