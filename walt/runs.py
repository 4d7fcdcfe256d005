"""Run-directory conventions shared by training, evaluation, sweeps and analysis.

A run directory holds config.yaml (resolved), overrides.yaml (the Hydra overrides that compose it),
checkpoints/last.ckpt, tensorboard/, results.json (written atomically) and, once the run finished, the
COMPLETED marker. Analysis reads only these files, never live objects. `atomic_write` is the one way
the suite writes a file readers may see half-written.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

RESULTS = "results.json"
COMPLETED = "COMPLETED"
FAILED = "failure.json"
CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
LAST_CKPT = Path("checkpoints") / "last.ckpt"


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


def is_complete(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / COMPLETED).exists()


def mark_complete(run_dir: str | os.PathLike) -> None:
    (Path(run_dir) / COMPLETED).write_text("ok\n")
    (Path(run_dir) / FAILED).unlink(missing_ok=True)
