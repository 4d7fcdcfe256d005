"""Metric against training step, across runs: `walt-tables --checkpoints <run dirs...>`.

Reads each run's results.json `checkpoints` section, written when checkpoints are evaluated
(`walt-eval <run> ckpt=all`): {"<global_step>": {"metrics": {...}, "protocol": {...}}}. A run
without that section contributes one point: its top-level metrics at its `global_step`.

Runs that are identical except for `seed` (and bookkeeping keys: paths, run names, ...; see
analysis.control.ignored) are one *series*: at each step its value is the mean ± standard error
over those runs, with n. A series is labelled by the config keys that differ between the given runs
("model.patch_size=2"), or by its run directory when nothing but the seed differs.

Writes (into --out): checkpoints_long.csv (one row per run, step and metric; paths relative to the
folder holding the runs), checkpoints_<metric>.md/.tex/.csv (rows = steps, one column per series)
and checkpoints.png (one panel per metric, a line with ± SE bars per series).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import render
from analysis.aggregate import MISSING_TEXT, Table
from analysis.collect import _read_run, common_root, find_run_dirs
from analysis.control import canon, ignored
from analysis.matching import lookup
from analysis.metrics import FIRST_STAGE, QUANTITIES
from analysis.stats import ARROWS, LOWER, summarize
from walt import runs as run_files

LONG = "checkpoints_long.csv"
PLOT = "checkpoints.png"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class CheckpointData:
    """Every (run, step, metric, value) found, the series each run belongs to, and protocol notes."""

    long: pd.DataFrame  # run_dir, series, seed, step, metric, value
    series: dict[str, list[str]]  # series label -> run dirs
    notes: list[str]


def better_of(metric: str) -> str | None:
    """"lower"/"higher" is better for a metric name (eval/fvd_synth -> lower), None when unknown."""
    name = metric.rsplit("/", 1)[-1]
    for q in QUANTITIES.values():
        if name in q.sources:
            return q.better
    if "loss" in name:
        return LOWER
    return None


def _points(results: Mapping[str, Any]) -> list[tuple[int, dict, dict]]:
    """(step, metrics, protocol) per evaluated checkpoint of one results.json."""
    section = results.get("checkpoints")
    out = []
    if isinstance(section, Mapping) and section:
        for step, entry in section.items():
            try:
                step_i = int(step)
            except (TypeError, ValueError):
                continue
            if isinstance(entry, Mapping):
                metrics = entry.get("metrics", entry)
                out.append((step_i, dict(metrics) if isinstance(metrics, Mapping) else {},
                            dict(entry.get("protocol") or {})))
        return sorted(out, key=lambda p: p[0])
    metrics = results.get("metrics") or {}
    step = results.get("global_step")
    if isinstance(metrics, Mapping) and metrics and step is not None:
        protocol = results.get("protocol") or {}
        evaluated = {k: v for k, v in metrics.items() if not str(k).startswith(FIRST_STAGE)
                     and (not protocol or k in protocol)}
        out.append((int(step), evaluated, dict(protocol)))
    return out


def read_checkpoints(dirs: Sequence[str | os.PathLike], metrics: Sequence[str] | None = None) -> CheckpointData:
    """Collect per-checkpoint metrics of every run under `dirs` (run dirs or folders of runs)."""
    run_dirs = list(dict.fromkeys(p for d in dirs for p in find_run_dirs(d)))
    root = common_root([str(d) for d in dirs])
    configs, rows, protocols = {}, [], {}
    for run_dir in run_dirs:
        try:
            results = run_files.read_results(run_dir)
            row, config_keys, _ = _read_run(run_dir)
            configs[str(run_dir)] = {k: row[k] for k in config_keys}
        except (ValueError, json.JSONDecodeError, OSError):
            continue
        for step, values, protocol in _points(results):
            for name, v in values.items():
                if metrics and name not in metrics and name.rsplit("/", 1)[-1] not in metrics:
                    continue
                try:
                    number = float(v)
                except (TypeError, ValueError):
                    continue
                rows.append({"run_dir": os.path.relpath(run_dir, root), "step": step, "metric": name,
                             "value": number if math.isfinite(number) else math.nan, "_abs": str(run_dir)})
                if name in protocol:
                    protocols.setdefault(name, set()).add(json.dumps(protocol[name], sort_keys=True, default=str))
    series = _series(configs, root)
    label_of = {d: label for label, ds in series.items() for d in ds}
    for row in rows:
        row["series"] = label_of.get(row["_abs"], row["run_dir"])
        seed = lookup(configs.get(row.pop("_abs"), {}), "seed")
        row["seed"] = canon(seed)
    long = pd.DataFrame(rows, columns=["run_dir", "series", "seed", "step", "metric", "value"])
    notes = [f"{m}: the evaluation protocol differs between checkpoints or runs ({len(p)} variants; see "
             f"results.json `checkpoints.<step>.protocol`)." for m, p in sorted(protocols.items()) if len(p) > 1]
    return CheckpointData(long, series, notes)


def _series(configs: Mapping[str, Mapping[str, Any]], root: str) -> dict[str, list[str]]:
    """Group runs identical except for seed / bookkeeping; label each group by what differs."""
    keys = sorted({k for c in configs.values() for k in c if not ignored(k)})
    varying = [k for k in keys if len({canon(lookup(c, k)) for c in configs.values()}) > 1]
    groups: dict[tuple, list[str]] = {}
    for run_dir, config in configs.items():
        groups.setdefault(tuple(canon(lookup(config, k)) for k in varying), []).append(run_dir)
    out = {}
    for values, members in groups.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(varying, values))
        if not label:
            label = os.path.relpath(members[0], root) if len(members) == 1 else "all runs"
            label = os.path.basename(os.path.normpath(members[0])) if label == "." else label  # one run given
        out[label] = sorted(members)
    return out


def metric_table(data: CheckpointData, metric: str) -> Table:
    """Rows = checkpoint steps, one column per series: mean ± SE over its runs (n in its own column)."""
    sub = data.long[data.long["metric"] == metric]
    steps = sorted(sub["step"].unique().tolist())
    frame: dict[str, list] = {"step": steps}
    table = Table(f"checkpoints_{metric}", metric, pd.DataFrame(), "step")
    better = better_of(metric)
    arrow = f" {ARROWS[better]}" if better in ARROWS else ""
    table.caption_text = f"{metric}{arrow} against checkpoint step (mean ± SE over runs identical except for seed)"
    for label in data.series:
        s = sub[sub["series"] == label]
        if s.empty:
            continue
        summaries = [summarize(s.loc[s["step"] == st, "value"].tolist()) for st in steps]
        frame[label] = [x.mean for x in summaries]
        frame[f"{label} SE"] = [x.se for x in summaries]
        frame[f"n ({label})"] = [x.n for x in summaries]
        table.errors[label] = f"{label} SE"
        table.columns[label] = (None, label)
        table.decimals[label] = table.decimals[f"{label} SE"] = 3
        table.counts[label] = f"n ({label})"
    table.frame = pd.DataFrame(frame)
    for col in table.counts.values():
        table.frame[col] = table.frame[col].astype(int)
    table.notes = [f"{better} is better." if better else "No known direction for this metric.",
                   "Cells: mean ± standard error over the series' runs at that step (no ± when n = 1); "
                   f"{MISSING_TEXT} = not evaluated at that step."] + data.notes
    return table


def write_checkpoint_tables(dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                            metrics: Sequence[str] | None = None) -> tuple[list[Path], list[Table]]:
    """Everything `walt-tables --checkpoints` writes; returns (paths, tables)."""
    from analysis.plots import save, series_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = read_checkpoints(dirs, metrics)
    written, tables = [], []
    if data.long.empty:
        return written, tables
    data.long.to_csv(out / LONG, index=False)
    written.append(out / LONG)
    names = list(dict.fromkeys(data.long["metric"].tolist()))
    panels = {}
    for metric in names:
        table = metric_table(data, metric)
        tables.append(table)
        written += render.write(table, out, stem=f"checkpoints_{_SAFE.sub('_', metric)}").values()
        panels[metric] = {}
        for label in data.series:
            if label not in table.columns:
                continue
            f = table.frame[[table.axis_column, label, table.errors[label]]].dropna(subset=[label])
            panels[metric][label] = (f["step"].tolist(), f[label].tolist(), f[table.errors[label]].tolist())
    fig = series_figure("metric against checkpoint step; error bars: ± 1 SE over runs identical except for seed",
                        panels, xlabel="global step", directions={m: better_of(m) for m in names})
    written.append(save(fig, out / PLOT))
    return written, tables

