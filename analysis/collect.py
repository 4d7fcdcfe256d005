"""Runs on disk -> one pandas row per run directory.

Analysis reads only the files a run leaves behind (walt.runs conventions): config.yaml (the
resolved config), results.json (training + evaluation numbers), the COMPLETED marker and
failure.json. Sweeps are collected while they are still running, so half-written or unreadable
files are expected: such a run is skipped with a warning and listed in `df.attrs["skipped"]`
instead of failing the whole collection.

Normalisations (so old and new run directories read the same):
- The first stage's metrics are columns prefixed `first_stage/` (`first_stage/rfvd_synth`). Old
  stage-2 runs carry unprefixed copies (`rfvd`, `psnr`, ...) and a `first_stage.metrics` section:
  both become `first_stage/<name>`; the section is not flattened again.
- `autoencoder.normalize_latents` (old key) is read as `diffusion.normalize_latents` (Table 3e).
- results.json's `evaluation.config` repeats the config's `eval.*`: left out. Per-checkpoint
  evaluations (`checkpoints`) are read by analysis.checkpoints; here only their steps are kept
  (`checkpoint_steps`).
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

from analysis.control import ignored
from walt import runs

log = logging.getLogger(__name__)

# results.json sections that are not flattened into columns as-is
_METRICS = "metrics"
_PROTOCOL = "protocol"
_OVERRIDES = "overrides"
_CHECKPOINTS = "checkpoints"
FIRST_STAGE_PREFIX = "first_stage/"
# metrics old stage-2 runs copied from their autoencoder without a prefix
_RECON_METRICS = ("rfvd", "rfvd_synth", "psnr", "ssim", "lpips")
# renamed config keys: old -> new
KEY_ALIASES = {"autoencoder.normalize_latents": "diffusion.normalize_latents"}
# config sections that describe the launcher or the sweep's table, not the experiment
_CONFIG_SKIP = ("hydra", "axis")
BASE_COLUMNS = ("run_dir", "completed", "failed")
RUN_ARTEFACTS = {"checkpoints", "tensorboard", "eval", "samples", "tables", "checkpoint_tables"}
RESULT_FIELDS = ("stage", "global_step", "params", "steps_per_sec", "wall_time_s", "peak_memory_bytes")


@dataclass(frozen=True)
class Skipped:
    """A run directory left out of the collection, and why."""

    run_dir: str
    reason: str


def find_run_dirs(root: str | os.PathLike) -> Iterator[Path]:
    """Directories under `root` (itself included) holding results.json or config.yaml, sorted.

    Hidden directories (Hydra's `.hydra/` holds an unresolved config.yaml, `.submitit/` logs) are
    not descended into, nor a run's own artefact folders (checkpoints/, tensorboard/, eval/, ...).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if runs.RESULTS in filenames or runs.CONFIG in filenames:
            dirnames[:] = [d for d in dirnames if d not in RUN_ARTEFACTS]
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
    """One run's row (see _read_run)."""
    return _read_run(run_dir)[0]


def _read_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """One run's row: status flags, flattened config, flattened results.

    Raises ValueError when config.yaml or results.json exists but cannot be read as a mapping.
    Metrics become plain columns named like the metric (`fvd_synth`); a metric whose name is
    already a column keeps its `metrics.` prefix. Returns (row, its config columns, its metric columns).
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
    flat_config = flatten(config)
    for old, new in KEY_ALIASES.items():
        if old in flat_config:
            value = flat_config.pop(old)
            flat_config.setdefault(new, value)
    row.update(flat_config)

    metrics = results.pop(_METRICS, None) or {}
    if not isinstance(metrics, dict):
        raise ValueError(f"{runs.RESULTS}: 'metrics' is {type(metrics).__name__}, expected a mapping")
    metrics = _first_stage_metrics(metrics, results, stage=results.get("stage", config.get("stage")))
    protocol = results.pop(_PROTOCOL, None)
    overrides = results.pop(_OVERRIDES, None)
    checkpoints = results.pop(_CHECKPOINTS, None)
    evaluation = results.get("evaluation")
    if isinstance(evaluation, dict):
        evaluation.pop("config", None)  # the config's eval.* again
    for key, value in flatten(results).items():
        row[key] = _number(value) if key in RESULT_FIELDS[1:] else value
    for name, value in metrics.items():
        row[f"{_METRICS}.{name}" if name in row else name] = _number(value)
    metric_columns = tuple(f"{_METRICS}.{n}" if f"{_METRICS}.{n}" in row else n for n in metrics)
    if isinstance(checkpoints, dict) and checkpoints:
        row["checkpoint_steps"] = ",".join(str(s) for s in sorted(checkpoints, key=_step_key))
    if isinstance(protocol, dict):
        row.update(flatten(protocol, f"{_PROTOCOL}."))
    if overrides is not None:
        row[_OVERRIDES] = " ".join(map(str, overrides)) if isinstance(overrides, list) else str(overrides)
    return row, tuple(flat_config), metric_columns


def _first_stage_metrics(metrics: dict, results: dict, stage: Any) -> dict:
    """Stage-2 metrics with the autoencoder's under `first_stage/` (old unprefixed copies renamed).

    Pops results["first_stage"]["metrics"] (the same numbers again) so it is not flattened.
    """
    section = results.get("first_stage")
    copied = section.pop("metrics", None) if isinstance(section, dict) else None
    if stage != "diffusion":
        return metrics
    out = {}
    for name, value in metrics.items():
        if name in _RECON_METRICS and FIRST_STAGE_PREFIX + name not in metrics:
            name = FIRST_STAGE_PREFIX + name
        out[name] = value
    if isinstance(copied, dict) and not any(n.startswith(FIRST_STAGE_PREFIX) for n in metrics):
        for name, value in copied.items():
            out.setdefault(FIRST_STAGE_PREFIX + name, value)
    return out


def _step_key(step: Any) -> tuple:
    try:
        return (0, int(step), "")
    except (TypeError, ValueError):
        return (1, 0, str(step))


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
    the metrics by name (`fvd`, `fvd_synth`, `first_stage/rfvd_synth`, ...), `protocol.*` and
    `overrides` (one string). Unreadable runs are skipped with a warning; `df.attrs["skipped"]`
    lists them as dicts {run_dir, reason} so callers can count and report them;
    `df.attrs["config_columns"]` / `["metric_columns"]` name the columns that came from config.yaml /
    results.json's metrics, `df.attrs["root"]` the folder collected.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such runs directory: {root}")
    rows, skipped = [], []
    config_keys: dict[str, None] = {}
    metric_keys: dict[str, None] = {}
    for run_dir in find_run_dirs(root):
        try:
            row, config_cols, metric_cols = _read_run(run_dir)
        except ValueError as err:
            log.warning("skipping run %s: %s", run_dir, err)
            skipped.append(Skipped(str(run_dir), str(err)))
            continue
        rows.append(row)
        config_keys.update(dict.fromkeys(config_cols))
        metric_keys.update(dict.fromkeys(metric_cols))
    frame = pd.DataFrame(rows, columns=_column_order(rows))
    for col in config_keys:  # as written in config.yaml: ints stay ints where other runs lack the key
        frame[col] = pd.Series([r.get(col, math.nan) for r in rows], dtype=object, index=frame.index)
    frame.attrs["skipped"] = [asdict(s) for s in skipped]
    frame.attrs["config_columns"] = list(config_keys)
    frame.attrs["metric_columns"] = list(metric_keys)
    frame.attrs["root"] = str(root)
    if skipped:
        log.warning("collected %d run(s) under %s; skipped %d unreadable", len(rows), root, len(skipped))
    return frame


# ---- all_runs.csv ----------------------------------------------------------------------------
ALL_RUNS = "all_runs.csv"
CONSTANTS = "all_runs_constants.csv"


def config_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that came from config.yaml (collect_runs records them; a guess for other frames)."""
    known = frame.attrs.get("config_columns")
    if known is not None:
        return [c for c in known if c in frame.columns]
    skip = ("metrics.", "protocol.", "evaluation.", "first_stage.", "checkpoints.")
    top = {"seed", "run_name", "force", "first_stage_ckpt", "first_stage_steps", "tags", "notes"}
    return [c for c in frame.columns if (("." in c and not c.startswith(skip)) or c in top)]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that came from results.json's metrics (own metrics first, then first_stage/)."""
    known = frame.attrs.get("metric_columns")
    if known is None:
        known = [c for c in frame.columns if "/" in c or c.endswith(("_synth", "fvd", "fid", "is"))]
    known = [c for c in known if c in frame.columns]
    return sorted(known, key=lambda c: (c.startswith(FIRST_STAGE_PREFIX), 0 if "/" not in c else 1,
                                        known.index(c)))


def relative_paths(frame: pd.DataFrame, root: str | os.PathLike) -> pd.DataFrame:
    """A copy whose absolute paths (run_dir and any other cell that is an absolute path) are relative
    to `root` (the folder given to walt-tables), so the CSV does not depend on where runs were moved."""
    root = os.path.abspath(root)
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = [os.path.relpath(v, root) if isinstance(v, str) and os.path.isabs(v) else v
                        for v in out[col].tolist()]
    return out


def _is_constant(series: pd.Series) -> bool:
    values = {repr(v) if not (isinstance(v, float) and math.isnan(v)) else "nan" for v in series.tolist()}
    return len(values) <= 1


def split_constant_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(varying, constants): the run table with varying hyperparameters and metrics first, and the
    columns holding one value in every run as a two-column table (column, value).

    Order of `varying`: run_dir, completed, failed; config keys that differ between runs (seed last);
    metrics (always, even when equal: they are the results); results fields (global_step, params,
    steps_per_sec, wall_time_s, peak_memory_bytes); everything else that differs (bookkeeping config
    keys such as paths.*, protocol.*, evaluation.*, overrides, ...). Columns empty in every run are
    dropped, and so are paths.run_dir when it repeats run_dir and results columns that repeat a config
    column (first_stage.ckpt = first_stage_ckpt).
    """
    frame = frame.loc[:, [c for c in frame.columns if not frame[c].isna().all()]]
    metrics = metric_columns(frame)
    fields = [c for c in RESULT_FIELDS if c in frame.columns and c != "stage"]
    keep_always = set(BASE_COLUMNS) | set(metrics) | set(fields)
    constant = [c for c in frame.columns if c not in keep_always and _is_constant(frame[c])]
    if "paths.run_dir" in frame.columns and frame["paths.run_dir"].tolist() == frame["run_dir"].tolist():
        frame = frame.drop(columns="paths.run_dir")
    config = [c for c in config_columns(frame) if c not in constant and c not in keep_always
              and (c == "seed" or not ignored(c))]
    config.sort(key=lambda c: (c == "seed", c))
    head = [c for c in BASE_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in constant and c not in set(head) | set(config) | set(metrics)
            | set(fields)]
    known = set(config_columns(frame))
    seen = {tuple(map(repr, frame[c].tolist())): c for c in config_columns(frame) if c in frame.columns}
    rest = [c for c in rest if c in known or tuple(map(repr, frame[c].tolist())) not in seen]  # e.g. first_stage.ckpt
    varying = frame[head + config + metrics + fields + rest]
    constants = pd.DataFrame({"column": constant,
                              "value": [_cell(frame[c].iloc[0]) if len(frame) else "" for c in constant]})
    return varying, constants


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def write_runs_csv(frame: pd.DataFrame, out_dir: str | os.PathLike, root: str | os.PathLike) -> list[Path]:
    """all_runs.csv (one row per run, varying columns only, paths relative to `root`) and
    all_runs_constants.csv (the columns every run shares). Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    varying, constants = split_constant_columns(relative_paths(frame, root))
    varying = varying.copy()
    for col in varying.columns:  # windows and tags as JSON lists, not Python tuples
        if varying[col].dtype == object:
            varying[col] = [json.dumps(list(v)) if isinstance(v, tuple) else v for v in varying[col].tolist()]
    paths = [out_dir / ALL_RUNS, out_dir / CONSTANTS]
    varying.to_csv(paths[0], index=False)
    constants.to_csv(paths[1], index=False)
    return paths


def collect_many(roots: list[str | os.PathLike]) -> pd.DataFrame:
    """collect_runs over several folders, as one frame (a run found twice is kept once)."""
    frames = [collect_runs(r) for r in roots]
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop_duplicates(subset="run_dir", ignore_index=True)
    for key in ("config_columns", "metric_columns"):
        frame.attrs[key] = list(dict.fromkeys(c for f in frames for c in f.attrs.get(key, [])))
    frame.attrs["skipped"] = [s for f in frames for s in f.attrs.get("skipped", [])]
    frame.attrs["root"] = common_root(roots)
    return frame


def common_root(roots: list[str | os.PathLike]) -> str:
    """The deepest folder holding every one of `roots` (the folder itself for one)."""
    paths = [os.path.abspath(r) for r in roots]
    if len(paths) == 1:
        return paths[0]
    return os.path.commonpath(paths)
