"""Run-directory conventions shared by training, evaluation, sweeps and analysis.

A run directory holds config.yaml (resolved), overrides.yaml (the Hydra overrides that compose it),
checkpoints/last.ckpt, tensorboard/, results.json (written atomically) and, once the run finished, the
COMPLETED marker. Analysis reads only these files, never live objects. `atomic_write` is the one way
the suite writes a file readers may see half-written; `run_lock` keeps one process per run directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

from filelock import FileLock, Timeout

from walt.utils import Refused, first_line

RESULTS = "results.json"
COMPLETED = "COMPLETED"
FAILED = "failure.json"
CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
LOCK = ".run.lock"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path` for writing; on success it is fsynced and renamed over `path`, so
    readers see the old file or the whole new one, never part of it. On error the temp file is removed.
    The temp file lives in the destination directory: a rename across file systems would not be atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so readers never see half a file."""
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)


def write_config(run_dir: str | os.PathLike, config: dict, overrides: list[str]) -> None:
    """config.yaml (the resolved config) and overrides.yaml (what re-composes it), atomically."""
    import yaml

    with atomic_write(Path(run_dir) / CONFIG) as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with atomic_write(Path(run_dir) / OVERRIDES) as f:
        yaml.safe_dump(list(overrides), f)


def read_overrides(run_dir: str | os.PathLike) -> list[str]:
    """The stored Hydra overrides of a run ([] for runs written before overrides.yaml existed)."""
    import yaml

    path = Path(run_dir) / OVERRIDES
    return list(yaml.safe_load(path.read_text()) or []) if path.exists() else []


def read_results(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / RESULTS
    return json.loads(path.read_text()) if path.exists() else {}


def update_results(run_dir: str | os.PathLike, **sections: Any) -> dict:
    """Merge top-level sections (e.g. metrics=..., protocol=...) into results.json atomically."""
    results = read_results(run_dir)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(results.get(key), dict):
            results[key] = {**results[key], **value}
        else:
            results[key] = value
    write_json_atomic(Path(run_dir) / RESULTS, results)
    return results


class UnsafeFile(pickle.UnpicklingError):
    """A checkpoint or weights file that a weights-only load refuses: it holds objects whose unpickling would
    run code (or types a checkpoint never holds)."""


def load_weights(path: str | os.PathLike, mmap: bool = False) -> Any:
    """torch.load(path, weights_only=True) on the CPU, the one way this suite opens a checkpoint: a pickle that
    would run code is refused before any of it runs, as UnsafeFile naming the file. torch is imported on call:
    analysis imports this module without it."""
    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:  # a legacy (non-zip) file cannot be memory-mapped: read it whole
            if not mmap or "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = first_line(err, default="")
        raise UnsafeFile(f"{path} was refused by a weights-only load (it holds objects whose unpickling could run "
                         f"code, or types no checkpoint of this suite holds): {reason}") from None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step stored in a checkpoint file (0 when it holds none), memory-mapped, so the tensors are
    not read just for the step."""
    return int(load_weights(path, mmap=True).get("global_step", 0))


def is_complete(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / COMPLETED).exists()


def mark_complete(run_dir: str | os.PathLike) -> None:
    (Path(run_dir) / COMPLETED).write_text("ok\n")
    (Path(run_dir) / FAILED).unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process; a second process gets an error naming the holder.

    The lock is an OS file lock: it dies with its process, so a crashed run's lock is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = run_dir / f"{LOCK}.owner"
    lock = FileLock(str(run_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise in_use(run_dir, _owner(run_dir)) from None
    try:
        owner.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _owner(run_dir: Path) -> str:
    owner = run_dir / f"{LOCK}.owner"
    return owner.read_text().strip() if owner.exists() else "another process"


def in_use(run_dir: Path, who: str) -> Refused:
    return Refused(f"{run_dir} is in use by {who}; wait for it to finish or stop it (one process per run directory)")


def holder(run_dir: Path) -> str | None:
    """Who holds run_dir's lock now (its owner record), or None when no live process does (taken and
    released at once: the lock dies with its process)."""
    if not (run_dir / LOCK).exists():
        return None
    lock = FileLock(str(run_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _owner(run_dir)
    lock.release()
    return None


def set_aside(run_dir: Path) -> Path:
    """force=true: move a run directory's contents (not Hydra's own files) to .replaced/<time>/, with the
    completion marker renamed, so tables never read the old run and nothing is deleted."""
    dest = run_dir / ".replaced" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True)
    for item in run_dir.iterdir():
        if item.name in (".replaced", ".hydra", LOCK, f"{LOCK}.owner") or item.suffix == ".log":
            continue
        shutil.move(str(item), dest / item.name)
    if (dest / COMPLETED).exists():
        (dest / COMPLETED).rename(dest / f"{COMPLETED}.replaced")
    return dest
