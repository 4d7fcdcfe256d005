"""The control rule: which runs a table compares, so that its rows differ in the table's axis only.

A table has an *axis* (the config keys its rows are defined by, e.g. `model.patch_size` for W.A.L.T
Table 3a). A runs folder may hold runs that also differ in other keys (a 2x2 demo grid, every Table 3
sweep in one `multirun/`). Three modes:

auto (default)
    Every other config key that takes more than one value among the table's runs is *held* at one
    value, one key at a time, until none is left that varies inside a row:
    - a key with a paper default (another Table 3 axis) is held whenever it varies at all, at the
      paper default when it fills as many rows as any other value (a run without the key counts as at
      the default), otherwise at the value that fills the most rows (one folder of every sweep: Table
      3b's runs at the paper's window do not shut out Table 3a's rows, all run at the demo's window);
    - any other key is held when it varies inside a row (e.g. trainer.max_steps), at the value that
      fills the most rows (ties: the most runs, then the first value in sorted order);
    - keys that do not describe the experiment never are: `seed` (replicates: runs identical except
      for seed are the n of a row; other seeds such as eval.seed count as replicates too), run names,
      tags, notes, paths, checkpoints, loggers, callbacks, worker counts (`ignored` below).
    Keys constant within rows but different between rows, without a paper default (e.g. a derived
    model.in_channels that follows the latent channels), are part of the row and are listed.
    A sweep over p x self_cond_prob x seed thus gives Table 3a at self_cond_prob = 0.9 (the paper
    default, present among the runs) and Table 3c at p = 1, whatever else the sweep holds fixed
    (the demo's tiny windows included). The table notes name every key held, at which value, why, and
    how many runs it left out.
paper
    Every other Table 3 axis at the paper default (a run without the key counts as at the default);
    nothing else is held. Runs of a tiny model whose windows differ from the paper's are all left out.
none
    No filter: rows average every matching run (the notes say which keys the rows mix).
A `--where KEY=VALUE` filter is applied before any of these.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from analysis.matching import MISSING, DefaultsTo, lookup, value_matches, window_label

MODES = ("auto", "paper", "none")
REPLICATE_KEYS = ("seed",)
# config keys that do not describe the experiment: never held, never reported as mixing
_IGNORED_EXACT = {"seed", "run_name", "tags", "notes", "force", "stage", "first_stage_ckpt", "first_stage_steps",
                  "overrides", "eval.after_train", "eval.batch_size", "data.num_workers", "eval.num_workers",
                  "data.latent_cache", "data.root", "eval.weights", "eval.device"}
_IGNORED_PREFIX = ("paths.", "hydra.", "logger.", "callbacks.", "checkpoint.")
_IGNORED_PATTERN = re.compile(r"(^|[._])(dir|path|root|ckpt|cache|num_workers|progress_bar|log_every_n_steps|"
                              r"enable_progress_bar|enable_model_summary|default_root_dir)($|[._])")
ABSENT = "(absent)"


def is_seed(key: str) -> bool:
    """Keys that say which replicate a run is: `seed`, and any other seed such as eval.seed or data.seed."""
    return key in REPLICATE_KEYS or key.endswith((".seed", "_seed"))


def ignored(key: str) -> bool:
    """Keys that say where or how a run was stored or logged, or which replicate it is (is_seed: other seeds
    may follow the run's seed)."""
    return (key in _IGNORED_EXACT or key.startswith(_IGNORED_PREFIX) or bool(_IGNORED_PATTERN.search(key))
            or is_seed(key))


def canon(value: Any) -> str:
    """One spelling per config value: 1 == 1.0 -> "1", [5, 8, 8] == "5x8x8", True -> "true"."""
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return ABSENT
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, (list, tuple)):
        return "x".join(canon(v) for v in value)
    return window_label(value)


def display(value: Any) -> str:
    """A config value as the notes print it: like canon, but floats keep their point (0.0, not 0)."""
    if isinstance(value, float) and not math.isnan(value):
        return str(value)
    if type(value).__module__ == "numpy" and "float" in type(value).__name__:
        return str(float(value))
    if isinstance(value, (list, tuple)):
        return "x".join(display(v) for v in value)
    return canon(value)


def _sorted_labels(labels) -> list[str]:
    def key(text):
        try:
            return (0, float(text), text)
        except ValueError:
            return (1, 0.0, text)
    return sorted(labels, key=key)


def _displays(members, key: str, labels) -> list[str]:
    """Each canonical label of `key` in `labels`, as the first run having it spells it, numerically sorted."""
    seen: dict[str, str] = {}
    for _, r in members:
        value = lookup(r, key)
        seen.setdefault(canon(value), display(value))
    return [seen.get(lb, lb) for lb in _sorted_labels(labels)]


def show(expected: Any) -> str:
    """A spec value as the notes print it."""
    if isinstance(expected, DefaultsTo):
        expected = expected.value
    return display(expected)


@dataclass
class Hold:
    """One key held at one value by the control rule."""

    key: str
    value: str
    reason: str  # "paper default", "fills the most rows", "paper default (--control paper)"
    dropped: int  # runs left out for having another value
    others: list[str] = field(default_factory=list)  # the values left out

    def text(self) -> str:
        left = (f"; {self.dropped} run(s) at {', '.join(self.others)} left out" if self.dropped and self.others
                else f"; {self.dropped} run(s) left out" if self.dropped else "")
        return f"{self.key} = {self.value} ({self.reason}{left})"


@dataclass
class ControlReport:
    """What the control rule did for one table (rendered into the table's notes)."""

    mode: str
    axis: str  # what the rows vary, e.g. "patch size p (model.patch_size)"
    holds: list[Hold] = field(default_factory=list)
    off_default: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value in every run, paper)
    follows_axis: list[str] = field(default_factory=list)  # keys constant in rows, different between rows
    mixed: list[str] = field(default_factory=list)  # mode none: keys whose values a row averages over
    n_before: int = 0
    n_after: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.mode == "auto":
            held = "; ".join(h.text() for h in self.holds) if self.holds else "nothing (no other key varies)"
            out.append(f"Control (auto): rows differ in {self.axis} only; held fixed: {held}. Runs identical "
                       f"except for seed are replicates (n). Other choices: --where KEY=VALUE holds another "
                       f"value, --control paper holds every other Table 3 axis at the paper default, "
                       f"--no-control uses every run.")
        elif self.mode == "paper":
            held = "; ".join(h.text() for h in self.holds) if self.holds else "no run was off the paper default"
            out.append(f"Control (paper): other Table 3 axes at the paper default: {held}. "
                       f"--control auto (the default) holds them at values present among the runs.")
        else:
            out.append(f"Control (none): rows average every run matching them, whatever their other settings.")
        if self.off_default:
            which = ", ".join(f"{k} = {v} (paper {p})" for k, v, p in self.off_default)
            out.append(f"Held by every run, off the paper default: {which}.")
        if self.follows_axis:
            out.append(f"Also different between rows (part of each row's setting): {', '.join(self.follows_axis)}.")
        if self.mixed:
            out.append(f"Rows average runs that differ in: {', '.join(self.mixed)}.")
        return out


def apply_control(members: Sequence[tuple[str, Mapping[str, Any]]], *, axis_keys: set[str], axis: str,
                  preferred: Mapping[str, Any], config_keys: Sequence[str], mode: str = "auto",
                  hold_across_rows: bool = True, row_order: Sequence[str] = ()) -> tuple[list[tuple[str, Mapping[str, Any]]], ControlReport]:
    """The (row label, run) pairs the table keeps under `mode`, and what was done.

    members: every run that matches a row, with its row label.
    axis_keys: the config keys that define the rows (never held).
    preferred: {config key: paper default} of the other axes (DefaultsTo or plain values).
    config_keys: the config columns of the runs (candidates for holding).
    hold_across_rows: hold a key with a paper default even when it is constant inside every row (Table 3:
        another ablation axis must not change along this one); False for tables whose rows are whole
        recipes (the cross-paper layout table: Latte's preset brings its own patch size), where only keys
        varying inside a row are held and the rest are listed as part of each row's setting.
    """
    if mode not in MODES:
        raise ValueError(f"control mode {mode!r} is not one of {MODES}")
    report = ControlReport(mode, axis, n_before=len(members))
    candidates = [k for k in config_keys if k not in axis_keys and not ignored(k)]
    if mode == "paper":
        kept = list(members)
        for key, expected in preferred.items():
            want = expected if isinstance(expected, DefaultsTo) else DefaultsTo(expected)
            off = [(lb, r) for lb, r in kept if not value_matches(lookup(r, key), want)]
            if off:
                kept = [(lb, r) for lb, r in kept if value_matches(lookup(r, key), want)]
                others = _displays(off, key, {canon(lookup(r, key)) for _, r in off})
                report.holds.append(Hold(key, show(expected), "paper default", len(off), others))
        members = kept
    elif mode == "auto":
        pending = list(dict.fromkeys([*(k for k in preferred if k not in axis_keys),
                                      *sorted(k for k in candidates if k not in preferred)]))
        while True:
            pick = None
            for key in pending:
                per_row: dict[str, set] = {}
                for lb, r in members:
                    per_row.setdefault(lb, set()).add(_label(r, key, preferred.get(key)))
                values = set().union(*per_row.values()) if per_row else set()
                if len(values) <= 1:
                    continue
                if (hold_across_rows and key in preferred) or any(len(v) > 1 for v in per_row.values()):
                    pick = key
                    break
            if pick is None:
                break
            pending.remove(pick)
            members, hold = _hold(members, pick, preferred.get(pick))
            report.holds.append(hold)
    else:
        report.mixed = _mixed(members, [k for k in candidates if k in preferred] + ["data.dataset"])
    report.n_after = len(members)
    if mode != "none":
        for key, expected in preferred.items():
            if key in axis_keys:
                continue
            values = {canon(lookup(r, key)) for _, r in members}
            want = expected if isinstance(expected, DefaultsTo) else DefaultsTo(expected)
            if len(values) == 1 and members and not value_matches(lookup(members[0][1], key), want):
                report.off_default.append((key, display(lookup(members[0][1], key)), show(expected)))
        report.follows_axis = _follows_axis(members, [k for k in candidates if k not in preferred or not hold_across_rows],
                                            row_order)
    return list(members), report


def _label(run: Mapping[str, Any], key: str, expected: Any) -> str:
    """canon(run[key]), with every spelling of the paper default (absent included) as the default."""
    if expected is not None:
        want = expected if isinstance(expected, DefaultsTo) else DefaultsTo(expected)
        if value_matches(lookup(run, key), want):
            return show(expected)
    return canon(lookup(run, key))


def _hold(members, key: str, expected: Any) -> tuple[list, Hold]:
    """Keep the runs at one value of `key`: the paper default when it fills as many rows as any other value,
    else the value that fills the most rows (a folder of every sweep: Table 3b's runs at the paper's window
    must not shut out Table 3a's rows, which all ran at another window)."""
    by_value: dict[str, list] = {}
    for lb, r in members:
        by_value.setdefault(canon(lookup(r, key)), []).append((lb, r))
    rows = {v: len({lb for lb, _ in m}) for v, m in by_value.items()}
    note = ""
    if expected is not None:
        want = expected if isinstance(expected, DefaultsTo) else DefaultsTo(expected)
        at_default = [(lb, r) for lb, r in members if value_matches(lookup(r, key), want)]
        filled = len({lb for lb, _ in at_default})
        if at_default and filled >= max(rows.values()):
            off = [(lb, r) for lb, r in members if not value_matches(lookup(r, key), want)]
            others = _displays(off, key, {canon(lookup(r, key)) for _, r in off})
            return at_default, Hold(key, show(expected), "paper default", len(members) - len(at_default), others)
        note = (f"; paper default {show(expected)} fills {filled} row(s)" if at_default
                else f"; paper default {show(expected)} is in no run")
    best = max(_sorted_labels(by_value), key=lambda v: (rows[v], len(by_value[v])))
    # max() returns the first maximum: ties go to the first value in (numerically) sorted order
    reason = "fills the most rows" + note
    others = _displays(members, key, [v for v in by_value if v != best])
    return by_value[best], Hold(key, _displays(members, key, [best])[0], reason,
                                len(members) - len(by_value[best]), others)


def _mixed(members, keys: Sequence[str]) -> list[str]:
    out = []
    for key in keys:
        per_row: dict[str, set] = {}
        for lb, r in members:
            value = lookup(r, key)
            if value is not MISSING:
                per_row.setdefault(lb, set()).add(canon(value))
        rows = [f"{lb}: {', '.join(_sorted_labels(v))}" for lb, v in per_row.items() if len(v) > 1]
        if rows:
            out.append(f"{key} ({'; '.join(rows)})")
    return out


def _follows_axis(members, keys: Sequence[str], row_order: Sequence[str] = (), limit: int = 6) -> list[str]:
    order = {lb: i for i, lb in enumerate(row_order)}
    out = []
    for key in keys:
        per_row: dict[str, set] = {}
        shown: dict[str, str] = {}
        for lb, r in sorted(members, key=lambda m: order.get(m[0], len(order))):
            per_row.setdefault(lb, set()).add(canon(lookup(r, key)))
            shown.setdefault(lb, display(lookup(r, key)))
        if len(set().union(*per_row.values()) if per_row else set()) > 1:
            out.append(f"{key} ({'; '.join(f'{lb}: {shown[lb]}' for lb in per_row)})")
    if len(out) > limit:
        out = out[:limit] + [f"{len(out) - limit} more"]
    return out


def count_values(runs: Sequence[Mapping[str, Any]], key: str) -> Counter:
    """How many runs have each value of `key` (canonical spelling)."""
    return Counter(canon(lookup(r, key)) for r in runs)
