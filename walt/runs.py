"""Run-directory conventions shared by training, evaluation, sweeps and analysis.

A run directory holds config.yaml (resolved), checkpoints/last.ckpt, tensorboard/, results.json
(written atomically) and, once the run finished, the COMPLETED marker. Analysis reads only these
files, never live objects.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS = "results.json"
COMPLETED = "COMPLETED"
FAILED = "failure.json"
CONFIG = "config.yaml"
LAST_CKPT = Path("checkpoints") / "last.ckpt"


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON through a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
