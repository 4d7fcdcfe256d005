"""Ablation axes, declared once: in the sweep preset that runs them (sweeps/sweep/*.yaml).

A sweep preset's `axis:` block names its table (a W.A.L.T Table 3 key such as "3a", whose rows and
paper values are in reference/walt_table3.csv, or a name of ours), title, first-column label, default
row and, where a value's label is not its spelling, `labels`. The rows themselves are the values the
preset's `hydra.sweeper.params` sweeps: walt-train runs exactly the rows walt-tables builds.

- The swept key is the param with several values (seed aside); single-valued params are settings
  every row holds (a run without such a key counts as having it: the schema default).
- A config-group axis (e.g. `ablation: none,no_qk_norm,...`) matches runs by what each option sets,
  and by the default config's value of every key that another option of the axis sets.
- Several presets may declare one table (3b's windows and its full-attention row): its rows are
  the union of theirs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from analysis.matching import DefaultsTo, Spec, window_label


@dataclass(frozen=True)
class Axis:
    """One table: its title, first-column header, default row, row specs, and the presets that run it.

    `rows` maps a row label to the config spec a run must match (see analysis.matching), in the
    paper's order for a paper table.
    """

    table: str
    title: str
    label: str
    default: str
    rows: dict[str, Spec]
    sweeps: tuple[str, ...]
    paper: bool = True


def _label(value: Any) -> str:
    return window_label(value) if isinstance(value, (list, tuple)) else str(value)


def _params(params: Mapping[str, str]) -> tuple[str, list, dict[str, Any]]:
    """(swept key, its values, {key: value} of the single-valued params) of a sweeper's params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept, fixed = [], {}
    for key, text in params.items():
        if key in ("seed", "first_stage_seed"):  # replicates, not the axis
            continue
        override = parser.parse_overrides([f"{key}={text}"])[0]
        if override.is_sweep_override():
            swept.append((key, list(override.sweep_iterator())))
        else:
            fixed[key] = override.value()
    if len(swept) > 1:
        raise ValueError(f"an axis sweeps one key; got {[k for k, _ in swept]}")
    if swept:
        return swept[0][0], swept[0][1], fixed
    key, value = next(iter(fixed.items()))  # a preset that adds one row (3b's full attention)
    return key, [value], {k: v for k, v in fixed.items() if k != key}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _group_specs(group: str, options: list[str], fixed: Mapping[str, Any]) -> dict[str, Spec]:
    """Option -> spec for an axis over config group `group`: the keys the option sets, and for the keys the
    other options set, their value in the default config (walt-train's primary config with no overrides)."""
    from omegaconf import OmegaConf

    from walt.config import CONFIG_DIR, compose

    sets = {o: _flatten(yaml.safe_load(Path(CONFIG_DIR, group, f"{o}.yaml").read_text()) or {}) for o in options}
    base = _flatten(OmegaConf.to_container(compose([]), resolve=False))
    keys = sorted(set().union(*sets.values()))
    return {o: {**{k: DefaultsTo(v) for k, v in fixed.items()},
                **{k: sets[o][k] if k in sets[o] else DefaultsTo(base[k]) for k in keys}} for o in options}


def read_axis(path: str) -> Axis | None:
    """The axis a sweep preset declares, or None (a grid over several axes such as the demo's)."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    meta = doc.get("axis")
    if not meta:
        return None
    key, values, fixed = _params(doc["hydra"]["sweeper"]["params"])
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    if "." in key:
        specs = {_label(v): {key: v, **{k: DefaultsTo(f) for k, f in fixed.items()}} for v in values}
    else:
        specs = _group_specs(key, [str(v) for v in values], fixed)
    rows = {labels.get(name, name): spec for name, spec in specs.items()}
    name = os.path.basename(path)[:-5]
    return Axis(str(meta.get("table") or name), meta.get("title", ""), meta.get("label", key),
                str(meta.get("default", "")), rows, (name,), paper=bool(meta.get("table")))


def load_axes(sweeps_dir: str | None = None) -> dict[str, Axis]:
    """Every table the sweep presets declare, paper tables first in the paper's order ("3a".."3f"), each
    with its rows in the paper's order (reference/walt_table3.csv) or, for ours, the presets' order."""
    from analysis import reference
    from walt.config import SWEEPS_DIR

    folder = os.path.join(sweeps_dir or SWEEPS_DIR, "sweep")
    merged: dict[str, Axis] = {}
    for file in sorted(os.listdir(folder)):
        axis = read_axis(os.path.join(folder, file)) if file.endswith(".yaml") else None
        if axis is None:
            continue
        if axis.table in merged:
            first = merged[axis.table]
            axis = Axis(first.table, first.title or axis.title, first.label, first.default or axis.default,
                        {**first.rows, **axis.rows}, first.sweeps + axis.sweeps, first.paper)
        merged[axis.table] = axis
    ref = reference.walt_table3()
    order = {key: ref.loc[ref["table"] == key, "value"].tolist() for key in ref["table"].unique()}
    out = {}
    for key in [*order, *sorted(k for k in merged if k not in order)]:
        axis = merged.get(key)
        if axis is None:
            continue
        if axis.paper:
            if set(axis.rows) != set(order.get(key, ())):
                raise ValueError(f"sweeps {', '.join(axis.sweeps)} declare Table {key} rows {list(axis.rows)}; "
                                 f"the paper's are {order.get(key)}")
            axis = Axis(axis.table, axis.title, axis.label, axis.default, {lb: axis.rows[lb] for lb in order[key]},
                        axis.sweeps, True)
        if axis.default not in axis.rows:
            raise ValueError(f"Table {key}'s default row {axis.default!r} is not one of {list(axis.rows)}")
        out[key] = axis
    return out
