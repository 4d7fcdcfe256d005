"""The real clips a run's samples are measured against, and their network outputs (cached, resumable).

Reference clips are the validation-style centred clips of eval.reference_split (all of them, or a
seeded subset of eval.num_real, sorted for sequential reads), read as videos: metrics compare decoded
samples with real videos, never with the latent cache. Their rows are cached per network under
<run_dir>/eval/, keyed by the network and everything that defines the clips.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from walt.config.run import RunConfig
from walt.data.video import to_model_range
from walt.eval.extractors import Network
from walt.eval.state import Partial, Progress, progress_bar
from walt.metrics import FeatureStats

log = logging.getLogger(__name__)


def reference_datamodule(run: RunConfig):
    """The run's DataModule with centred, deterministic video clips (no latent cache); data prepared."""
    dm = run.data.datamodule(temporal_sampling="center", crop="center", pin_memory=False,
                             persistent_workers=False, latent_cache=None)
    dm.prepare_data()
    return dm


def reference_clips(run: RunConfig, datamodule, split: Optional[str] = None) -> tuple[Subset, str]:
    """(subset, description) of the real clips of `split` (default eval.reference_split), at most eval.num_real."""
    ev = run.eval
    split = split or ev.reference_split
    ds = datamodule.build(train=split == "train")
    n = min(ev.num_real, len(ds))
    if n < len(ds):
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ev.seed))
        indices = sorted(perm[:n].tolist())
    else:
        indices = list(range(n))
    dataset = run.data.dataset.value
    list_split = f" split {run.data.split}" if dataset in ("ucf101", "synthetic") else ""
    return Subset(ds, indices), f"{dataset} {split}{list_split}, centred clips ({n} of {len(ds)})"


def clip_loader(run: RunConfig, subset: Subset, start: int) -> DataLoader:
    """Clips start.. of `subset`, in order, in eval.batch_size batches."""
    rest = Subset(subset.dataset, subset.indices[start:])
    return DataLoader(rest, batch_size=run.eval.batch_size, shuffle=False, num_workers=run.data.num_workers)


def clips_key(run: RunConfig, subset: Subset, split: str) -> dict:
    """Everything that defines a reference clip set."""
    d = run.data
    return {"dataset": d.dataset.value, "root": str(d.root), "split": split, "data_split": d.split,
            "clip_frames": run.clip_frames, "frame_stride": d.frame_stride, "resolution": d.resolution,
            "num_real": len(subset), "seed": run.eval.seed}


def real_pass(run: RunConfig, net: Network, cache_dir: Path, datamodule, split: Optional[str] = None,
              keep: tuple[str, ...] = ()) -> tuple[Partial, str]:
    """(the reference clips of `split` through `net`, description): Partial.stats["features"] over all
    clips (frames of a clip count as images when the network sees frames), and the per-clip rows named
    in `keep` (network outputs, or "labels"). Cached and resumable under cache_dir.

    Statistics are saved whole at each commit, so commits are spaced to take at most ~1/10 of the time
    (2048-d Inception statistics are 32 MB; a kill loses that much work at most)."""
    split = split or run.eval.reference_split
    subset, desc = reference_clips(run, datamodule, split)
    key = {"net": net.key, "clips": clips_key(run, subset, split), "keep": sorted(keep)}
    progress = Progress(cache_dir, f"real_{net.tag}", key)
    state = progress.load()
    done, total = state.done, len(subset)
    stats = state.stats.get("features", FeatureStats())
    if done < total:
        pending: dict[str, list] = {k: [] for k in keep}
        last_commit, commit_cost = 0.0, 0.0
        with progress_bar(f"reference clips through {net.tag}", total, done) as update:
            for batch in clip_loader(run, subset, done):
                out = {**net.outputs(to_model_range(batch["video"])),
                       "labels": np.asarray(batch["label"], dtype=np.int64)}
                stats.update(out["features"].reshape(-1, out["features"].shape[-1]))
                for k in keep:
                    pending[k].append(out[k])
                done += len(batch["video"])
                if done == total or time.perf_counter() - last_commit >= 10 * commit_cost:
                    t = time.perf_counter()
                    rows = {k: np.concatenate(v) for k, v in pending.items()}
                    progress.commit(done, rows, {"features": stats}, final=done == total)
                    pending = {k: [] for k in keep}
                    last_commit, commit_cost = time.perf_counter(), time.perf_counter() - t
                update(done)
        state = progress.load()
    return state, desc


class ContextClips:
    """The real clips frame-prediction samples continue: sample j takes the reference clip j mod N (the
    clips the real statistics come from, eval.reference_split / eval.num_real), so each clip is continued
    once per N samples and the sample stream does not depend on batching."""

    def __init__(self, run: RunConfig, datamodule, split: Optional[str] = None):
        self.split = split or run.eval.reference_split
        self.subset, self.description = reference_clips(run, datamodule, self.split)
        if not len(self.subset):
            raise ValueError(f"frame prediction needs real context clips, but {self.description} has none")
        self.key = clips_key(run, self.subset, self.split)

    def __len__(self) -> int:
        return len(self.subset)

    def clips(self, start: int, stop: int) -> tuple[torch.Tensor, dict[int, int]]:
        """(videos (B, C, T, H, W) in [-1, 1], {sample index: its clip's label}) of samples start..stop-1."""
        items = [self.subset[j % len(self.subset)] for j in range(start, stop)]
        videos = to_model_range(torch.stack([torch.as_tensor(item["video"]) for item in items]))
        labels = {j: int(item["label"]) for j, item in zip(range(start, stop), items) if "label" in item}
        return videos, labels
