"""A pass's progress, on disk (resumable partial results) and on screen (a progress bar).

A pass (clips through a network, samples through the sampler) commits as it goes: per-item rows are
appended as new chunk files and running statistics (FeatureStats) are saved whole, then the small JSON
pointer <name>.json that lists them is atomically replaced (walt.runs.atomic_write for every file).
A kill at any moment leaves the last committed state readable; rows cost no more I/O than their own
batch, so a 50k-sample pass can commit after every batch. When a pass ends its chunks are merged into
one file. The name hashes everything that defines the pass (`key`), so results of other weights or
settings are never mixed in, and the key is checked again on load.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from walt.metrics import FeatureStats
from walt.runs import atomic_write, write_json_atomic

log = logging.getLogger(__name__)


def digest(payload) -> str:
    """Short stable hash of a JSON-able payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(*modules: torch.nn.Module) -> str:
    """Hash of the exact weights (CPU bytes), so partial results of other weights are never reused."""
    h = hashlib.blake2b(digest_size=12)
    for module in modules:
        for name, t in module.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Partial:
    """What a pass has committed: `done` items, their rows (arrays of `done` rows each), running
    statistics over them and small values."""

    done: int = 0
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, FeatureStats] = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    def head(self, n: int) -> "Partial":
        """The first n items' rows (a pass that went further before serves a smaller request too)."""
        if self.stats and self.done > n:
            raise ValueError(f"statistics cover {self.done} items and cannot be cut to {n}")
        return Partial(min(self.done, n), {k: v[:n] for k, v in self.rows.items()}, self.stats, self.values)


class Progress:
    """One pass's rows on disk under `directory`, named by `kind` and the hash of `key`."""

    def __init__(self, directory: str | os.PathLike, kind: str, key: dict):
        self.dir, self.key = Path(directory), json.loads(json.dumps(key, sort_keys=True, default=str))
        self.name = f"{kind}_{digest(self.key)}"
        self.pointer = self.dir / f"{self.name}.json"
        self._meta: Optional[dict] = None

    def _read_meta(self) -> dict:
        if self._meta is None:
            meta = json.loads(self.pointer.read_text()) if self.pointer.exists() else None
            if meta is not None and meta.get("key") != self.key:
                log.warning("%s belongs to another evaluation; starting over", self.pointer)
                meta = None
            self._meta = meta or {"key": self.key, "done": 0, "values": {}, "stats": {}, "chunks": []}
        return self._meta

    def load(self) -> Partial:
        """The committed state (empty when nothing was committed)."""
        meta = self._read_meta()
        stats = {k: FeatureStats.load(self.dir / f) for k, f in meta["stats"].items()}
        return Partial(int(meta["done"]), self._merged(meta["chunks"]), stats, dict(meta["values"]))

    def _save(self, rows: dict[str, np.ndarray], start: int, stop: int) -> dict:
        files = {}
        for k, a in rows.items():
            files[k] = f"{self.name}.{start}-{stop}.{k}.npy"
            with atomic_write(self.dir / files[k], "wb") as f:
                np.save(f, np.ascontiguousarray(a), allow_pickle=False)
        return {"stop": stop, "files": files}

    def commit(self, done: int, rows: Optional[dict[str, np.ndarray]] = None,
               stats: Optional[dict[str, FeatureStats]] = None, values: Optional[dict] = None,
               final: bool = False) -> None:
        """Append the rows of items (last commit's done)..done-1, replace `stats` and `values` (kept when
        None); final=True merges the chunks into one file."""
        meta = self._read_meta()
        start = int(meta["done"])
        self.dir.mkdir(parents=True, exist_ok=True)
        chunks = list(meta["chunks"])
        if rows:
            bad = {k: len(a) for k, a in rows.items() if len(a) != done - start}
            if bad:
                raise ValueError(f"rows for items {start}..{done - 1} must have {done - start} rows each, got {bad}")
            chunks.append(self._save(rows, start, done))
        if final and len(chunks) > 1:
            chunks = [self._save(self._merged(chunks), 0, done)]
        stat_files = dict(meta["stats"])
        for k, st in (stats or {}).items():
            stat_files[k] = f"{self.name}.{done}.{k}.npz"
            st.save(self.dir / stat_files[k])
        meta = {"key": self.key, "done": done, "values": dict(values if values is not None else meta["values"]),
                "stats": stat_files, "chunks": chunks}
        write_json_atomic(self.pointer, meta)
        self._meta = meta
        keep = {self.pointer.name, *stat_files.values(), *(f for c in chunks for f in c["files"].values())}
        for old in self.dir.glob(f"{self.name}.*"):
            if old.name not in keep and not old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)

    def _merged(self, chunks: list[dict]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {}
        for chunk in chunks:
            for k, f in chunk["files"].items():
                rows.setdefault(k, []).append(np.load(self.dir / f, allow_pickle=False))
        return {k: np.concatenate(v) for k, v in rows.items()}


@contextlib.contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields update(done): a rich progress bar on a terminal, one log line otherwise."""
    log.info("%s: %d of %d done", description, done, total)
    if not sys.stderr.isatty() or done >= total:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with RichProgress(*columns, transient=True) as shown:
        task = shown.add_task(description, total=total, completed=done)
        yield lambda n: shown.update(task, completed=n)
