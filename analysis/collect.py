"""Runs on disk -> one pandas row per run directory.

Analysis reads only the files a run leaves behind (walt.runs conventions): config.yaml (the
resolved config), results.json (training + evaluation numbers), the COMPLETED marker and
failure.json. Sweeps are collected while they are still running, so half-written or unreadable
files are expected: such a run is skipped with a warning and listed in `df.attrs["skipped"]`
instead of failing the whole collection.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml

from walt import runs

log = logging.getLogger(__name__)

# results.json sections that are not flattened into columns as-is
_METRICS = "metrics"
_PROTOCOL = "protocol"
_OVERRIDES = "overrides"
# config sections that describe the launcher, not the experiment
_CONFIG_SKIP = ("hydra",)
BASE_COLUMNS = ("run_dir", "completed", "failed")
RESULT_FIELDS = ("stage", "global_step", "params", "steps_per_sec", "wall_time_s", "peak_memory_bytes")


@dataclass(frozen=True)
class Skipped:
    """A run directory left out of the collection, and why."""

    run_dir: str
    reason: str


def find_run_dirs(root: str | os.PathLike) -> Iterator[Path]:
    """Directories under `root` (itself included) holding results.json or config.yaml, sorted.

    Hidden directories (Hydra's `.hydra/` holds an unresolved config.yaml, `.submitit/` logs) are
    not descended into.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if runs.RESULTS in filenames or runs.CONFIG in filenames:
            yield Path(dirpath)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": leaf}; lists become tuples so cells stay hashable."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): _freeze(tree)} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = _freeze(value)
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            return tuple(value)
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, dict):  # an empty mapping
        return None
    return value


def _number(value: Any) -> Any:
    """Metric values as floats where possible (None -> NaN); anything else kept as written."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, int)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """One run's row: status flags, flattened config, flattened results.

    Raises ValueError when config.yaml or results.json exists but cannot be read as a mapping.
    Metrics become plain columns named like the metric (`fvd_synth`); a metric whose name is
    already a column keeps its `metrics.` prefix.
    """
    run_dir = Path(run_dir)
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "completed": (run_dir / runs.COMPLETED).exists(),
        "failed": (run_dir / runs.FAILED).exists(),
    }
    config = _read_mapping(run_dir / runs.CONFIG, yaml.safe_load)
    results = _read_mapping(run_dir / runs.RESULTS, json.loads)
    for key in _CONFIG_SKIP:
        config.pop(key, None)
    row.update(flatten(config))

    metrics = results.pop(_METRICS, None) or {}
    if not isinstance(metrics, dict):
        raise ValueError(f"{runs.RESULTS}: 'metrics' is {type(metrics).__name__}, expected a mapping")
    protocol = results.pop(_PROTOCOL, None)
    overrides = results.pop(_OVERRIDES, None)
    for key, value in flatten(results).items():
        row[key] = _number(value) if key in RESULT_FIELDS[1:] else value
    for name, value in metrics.items():
        row[f"{_METRICS}.{name}" if name in row else name] = _number(value)
    if isinstance(protocol, dict):
        row.update(flatten(protocol, f"{_PROTOCOL}."))
    if overrides is not None:
        row[_OVERRIDES] = " ".join(map(str, overrides)) if isinstance(overrides, list) else str(overrides)
    return row


def _column_order(rows: list[dict]) -> list[str]:
    """Status first, then config keys (dotted, grouped), results fields, metrics and the rest."""
    seen = dict.fromkeys(BASE_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(row))
    rest = [c for c in seen if c not in BASE_COLUMNS and c not in RESULT_FIELDS]
    config = sorted(c for c in rest if "." in c and not c.startswith(("metrics.", "protocol.")))
    tail = [c for c in rest if c not in config]
    fields = [c for c in RESULT_FIELDS if c in seen]
    return list(BASE_COLUMNS) + config + fields + tail


def _read_mapping(path: Path, parse) -> dict:
    if not path.exists():
        return {}
    try:
        data = parse(path.read_text())
    except Exception as err:  # yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError, OSError
        raise ValueError(f"{path.name} is unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds {type(data).__name__}, expected a mapping (half-written?)")
    return data


def collect_runs(root: str | os.PathLike) -> pd.DataFrame:
    """All run directories under `root` (a sweep, a runs folder, or one run) as a DataFrame.

    Columns: run_dir, completed, failed, the flattened config (`model.patch_size`, ...), the
    results fields (params, steps_per_sec, wall_time_s, peak_memory_bytes, global_step, stage),
    the metrics by name (`fvd`, `fvd_synth`, ...), `protocol.*` and `overrides` (one string).
    Unreadable runs are skipped with a warning; `df.attrs["skipped"]` lists them as dicts
    {run_dir, reason} so callers can count and report them.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such runs directory: {root}")
    rows, skipped = [], []
    for run_dir in find_run_dirs(root):
        try:
            rows.append(read_run(run_dir))
        except ValueError as err:
            log.warning("skipping run %s: %s", run_dir, err)
            skipped.append(Skipped(str(run_dir), str(err)))
    frame = pd.DataFrame(rows, columns=_column_order(rows))
    frame.attrs["skipped"] = [asdict(s) for s in skipped]
    if skipped:
        log.warning("collected %d run(s) under %s; skipped %d unreadable", len(rows), root, len(skipped))
    return frame
