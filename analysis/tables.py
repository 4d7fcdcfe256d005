"""W.A.L.T Table 3 (a)-(f) regenerated from runs, in the paper's layout, paper value beside ours.

A run belongs to a row when its resolved config matches the row's spec in TABLE3 (the one place
that knows the config key names: they belong to the model / autoencoder / diffusion code, so when
one is renamed, change it here). Several matching runs (seeds) are averaged and counted in `n`.
By default a table only uses runs whose *other* Table 3 axes sit at the paper's default (or are
absent from their config), so one runs folder holding every sweep still gives controlled
comparisons; `control=False` drops that filter. Rows without runs stay NaN, never 0.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from analysis import reference
from analysis.metrics import QUANTITIES, choose_source, is_synthetic, source_label, value
from analysis.matching import MISSING, DefaultsTo, Spec, filter_runs, lookup, matches, spec_keys, window_label


@dataclass(frozen=True)
class Axis:
    """One sub-table: its title, first-column header, the paper's default row, and row specs.

    `rows` maps the paper's row label (exactly as in reference/walt_table3.csv, in the paper's
    order) to the config spec a run must match (see analysis.matching).
    """

    title: str
    label: str
    default: str
    rows: dict[str, Spec]


_ON = DefaultsTo(True)  # a run without the key has the feature on (the schema default)
_WALT = DefaultsTo("walt")  # alternating S / ST blocks; "full" layout = full attention everywhere

# ---- the mapping Table 3 axis -> config key; edit here when config keys change --------------
TABLE3: dict[str, Axis] = {
    "3a": Axis("Patch size", "patch size p", "1", {
        "1": {"model.patch_size": 1},
        "2": {"model.patch_size": 2},
        "4": {"model.patch_size": 4},
    }),
    "3b": Axis("Spatiotemporal window size", "ST window", "5x8x8", {
        "5x4x4": {"model.st_window": "5x4x4", "model.layout": _WALT},
        "5x8x8": {"model.st_window": "5x8x8", "model.layout": _WALT},
        "5x16x16": {"model.st_window": "5x16x16", "model.layout": _WALT},
        # paper: full self-attention; the transformer spells it layout=full, the sweep may say st_window=full
        "full": [{"model.layout": "full"}, {"model.st_window": "full", "model.layout": _WALT}],
    }),
    "3c": Axis("Self-conditioning rate", "self-cond p", "0.9", {
        "0.0": {"model.self_cond_prob": 0.0},
        "0.3": {"model.self_cond_prob": 0.3},
        "0.6": {"model.self_cond_prob": 0.6},
        "0.9": {"model.self_cond_prob": 0.9},
    }),
    "3d": Axis("AdaLN-LoRA rank", "rank r", "2", {
        str(r): {"model.adaln_lora_rank": r} for r in (2, 4, 16, 64, 256)
    }),
    "3e": Axis("Other design choices", "setting", "full method", {
        "w/o qk-norm": {"model.qk_norm": False, "autoencoder.normalize_latents": _ON,
                        "diffusion.zero_terminal_snr": _ON},
        "w/o latent norm": {"model.qk_norm": _ON, "autoencoder.normalize_latents": False,
                            "diffusion.zero_terminal_snr": _ON},
        "w/o zero terminal SNR": {"model.qk_norm": _ON, "autoencoder.normalize_latents": _ON,
                                  "diffusion.zero_terminal_snr": False},
        "full method": {"model.qk_norm": _ON, "autoencoder.normalize_latents": _ON,
                        "diffusion.zero_terminal_snr": _ON},
    }),
    "3f": Axis("Latent channels", "latent channels c", "8", {
        str(c): {"autoencoder.latent_channels": c} for c in (4, 8, 16, 32)
    }),
}
# keys whose differing values inside one row mean the row mixes unlike runs
MIX_KEYS = ("data.dataset",)
# --------------------------------------------------------------------------------------------

EXTRA_QUANTITIES = ("steps_per_sec", "params_m", "rfvd")  # shown where the paper has them
COUNTED = {"fvd": "n", "rfvd": "n (rFVD)"}  # run counts shown for these quantities
MISSING_TEXT = "—"


@dataclass
class Table:
    """A built table: `frame` holds numbers (NaN = no run); the rest tells writers how to show it."""

    key: str
    title: str
    frame: pd.DataFrame
    axis_column: str
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # quantity -> (paper, ours)
    sources: dict[str, str] = field(default_factory=dict)  # quantity -> results metric used for ours
    decimals: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def caption(self) -> str:
        name = f"Table {self.key}: " if self.key[:1].isdigit() else ""
        return f"W.A.L.T {name}{self.title} (paper vs ours)"


def table3(runs: pd.DataFrame, key: str, *, where: Mapping[str, Any] | None = None, control: bool = True,
           completed_only: bool = True) -> Table:
    """Sub-table `key` ("3a".."3f") of W.A.L.T Table 3 from collected runs (analysis.collect).

    where: extra {config key: value} every run must match (e.g. {"data.dataset": "ucf101"}).
    control: keep only runs whose other Table 3 axes are at the paper default or absent.
    completed_only: leave out runs without the COMPLETED marker or with failure.json.
    """
    if key not in TABLE3:
        raise KeyError(f"unknown table {key!r}; available: {', '.join(TABLE3)}")
    axis = TABLE3[key]
    ref, ref_text = _reference_rows(key, axis)
    records = filter_runs(runs.to_dict("records"), where)
    baseline = {k: a.rows[a.default] for k, a in TABLE3.items() if k != key}
    members: dict[str, list[dict]] = {label: [] for label in axis.rows}
    off_default: Counter = Counter()  # other sub-table -> runs left out for being off its default
    n_off = n_pending = 0
    for run in records:
        label = next((lb for lb, spec in axis.rows.items() if matches(run, spec)), None)
        if label is None:
            continue
        off = [k for k, s in baseline.items() if not matches(run, s, absent_ok=True)]
        if control and off:
            off_default.update(off)
            n_off += 1
        elif completed_only and not completed(run):
            n_pending += 1
        else:
            members[label].append(run)
    notes: list[str] = []
    if n_pending:
        notes.append(f"{n_pending} matching run(s) not completed (or failed) are left out.")
    if off_default:
        which = ", ".join(f"{k} ({n})" for k, n in sorted(off_default.items()))
        notes.append(f"{n_off} run(s) of other ablations are left out: another Table 3 axis is off the "
                     f"paper default ({which}); control=False (--no-control) includes them.")
    notes += _mixing_notes(members, axis, baseline)

    quantities = ["fvd", "is"] + [q for q in EXTRA_QUANTITIES if ref[q].notna().any()]
    everyone = [r for rs in members.values() for r in rs]
    sources = {q: choose_source(QUANTITIES[q], everyone) for q in quantities}
    data: dict[str, list] = {axis.label: list(axis.rows)}
    columns, decimals = {}, {}
    for q in quantities:
        quantity, source = QUANTITIES[q], sources[q]
        paper_col = f"{quantity.label} (paper)"
        ours_col = f"{source_label(quantity, source)} (ours)"
        data[paper_col] = [float(ref.at[label, q]) for label in axis.rows]
        data[ours_col] = [nanmean(value(r, quantity, source) for r in members[label]) for label in axis.rows]
        columns[q] = (paper_col, ours_col)
        decimals[paper_col] = decimals[ours_col] = max(
            (reference.decimals(t) for t in ref_text[q] if t), default=1)
    for q, name in COUNTED.items():
        if q in quantities:
            quantity, source = QUANTITIES[q], sources[q]
            data[name] = [sum(not math.isnan(value(r, quantity, source)) for r in members[label])
                          for label in axis.rows]
    notes += _metric_notes(quantities, sources)
    frame = pd.DataFrame(data)
    for name in COUNTED.values():
        if name in frame:
            frame[name] = frame[name].astype(int)
    return Table(key, axis.title, frame, axis.label, columns, sources, decimals, notes)


def table3_all(runs: pd.DataFrame, keys=None, **kwargs) -> dict[str, Table]:
    """Every requested sub-table (default all of 3a-3f), keyed by "3a".. in the paper's order."""
    return {k: table3(runs, k, **kwargs) for k in (keys or TABLE3)}


def _reference_rows(key: str, axis: Axis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's rows of sub-table `key`, indexed by row label (numbers, and as written)."""
    ref = reference.walt_table3()
    text = reference.raw("walt_table3")
    ref, text = ref[ref["table"] == key].set_index("value"), text[text["table"] == key].set_index("value")
    if list(ref.index) != list(axis.rows):
        raise ValueError(f"TABLE3[{key!r}] rows {list(axis.rows)} differ from the paper's {list(ref.index)}")
    return ref, text


def nanmean(values) -> float:
    """Mean of the non-NaN values; NaN when there are none (a missing row, never 0)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def completed(run: Mapping[str, Any]) -> bool:
    """The run finished (COMPLETED marker) and has no failure.json."""
    return _is_true(run.get("completed")) and not _is_true(run.get("failed"))


def _is_true(flag: Any) -> bool:
    return flag is True or (type(flag).__name__ == "bool_" and bool(flag))


def _mixing_notes(members: dict[str, list[dict]], axis: Axis, baseline: dict[str, Spec]) -> list[str]:
    """Rows whose runs disagree on another axis or the dataset: their mean mixes unlike runs."""
    own = set().union(*(spec_keys(s) for s in axis.rows.values()))
    keys = sorted(set().union(*(spec_keys(s) for s in baseline.values())) - own) + list(MIX_KEYS)
    notes = []
    for label, rows in members.items():
        for k in keys:
            seen = {window_label(v) for v in (lookup(r, k) for r in rows) if v is not MISSING}
            if len(seen) > 1:
                notes.append(f"Row {label!r} averages runs with different {k} ({', '.join(sorted(seen))}).")
    return notes


def _metric_notes(quantities: list[str], sources: dict[str, str]) -> list[str]:
    notes = []
    for q in quantities:
        source = sources[q]
        if is_synthetic(source):
            label = source_label(QUANTITIES[q], source)
            notes.append(f"{label} (ours) is `{source}`, measured with the synthetic-data feature extractor: "
                         f"it is not the paper's {QUANTITIES[q].label} and its scale is not comparable.")
    if "steps_per_sec" in quantities:
        notes.append("steps/s (ours) is training throughput at our scale and hardware: compare ratios "
                     "between rows, not absolute values.")
    if "params_m" in quantities:
        notes.append("params [M] (ours) counts the trainable parameters of our model size.")
    notes.append(f"Ours: mean over the n completed runs of a row; {MISSING_TEXT} = no run.")
    return notes
