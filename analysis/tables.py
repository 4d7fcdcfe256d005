"""W.A.L.T Table 3 (a)-(f) regenerated from runs, in the paper's layout, paper value beside ours.

A run belongs to a row when its resolved config matches the row's spec in TABLE3, which the sweep
presets declare (analysis.axes: the values a preset sweeps are the rows of its table). Which matching runs a table compares is decided by the control rule
(analysis.control: by default every other varying key is held at the paper default when runs have
it, else at the value that fills the most rows; seeds are replicates). A row shows the mean over its
runs ± standard error and n, and a mark saying whether it differs from the paper-default row beyond
noise (analysis.stats.RULE). Rows without runs stay NaN, never 0.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import reference
from analysis.axes import Axis, load_axes
from analysis.aggregate import (MISSING_TEXT, Table, add_quantity, completed, nanmean,  # noqa: F401 (re-exported)
                                pair_key, replicates)
from analysis.collect import config_columns
from analysis.control import ABSENT, apply_control, canon, count_values, ignored, is_seed, show
from analysis.matching import MISSING, lookup, matches, spec_keys  # noqa: F401 (MISSING re-exported)
from analysis.metrics import QUANTITIES, choose_source, is_synthetic, source_label, value
from analysis.stats import RULE


# the tables, declared by the sweep presets that run them (analysis.axes): a new axis is a new sweep preset
TABLE3: dict[str, Axis] = load_axes()

EXTRA_QUANTITIES = ("steps_per_sec", "params_m", "rfvd")  # shown where the paper has them
OURS_ONLY = ("acc", "acc_real")  # ours-only quantities, shown when any run of the table reports them
COUNTED = {"fvd": "n", "rfvd": "n (rFVD)"}  # run counts shown for these quantities
CONTROL_MODES = ("auto", "paper", "none")


def axis_keys(key: str) -> set[str]:
    """The config keys the rows of sub-table `key` are defined by."""
    return set().union(*(spec_keys(s) for s in TABLE3[key].rows.values()))


def paper_defaults(key: str | None = None, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """{config key: paper default} of every Table 3 axis other than `key` (the control's preferred values),
    leaving out the keys of `key`'s own axis and `exclude`."""
    skip = set(exclude) | (axis_keys(key) if key else set())
    out: dict[str, Any] = {}
    for other, axis in TABLE3.items():
        spec = axis.rows[axis.default]
        if other == key or not isinstance(spec, Mapping):
            continue
        for k, v in spec.items():
            if k not in skip:
                out.setdefault(k, v)
    return out


def is_stage2(run: Mapping[str, Any]) -> bool:
    """A latent-diffusion run (or one that does not say its stage)."""
    return canon(lookup(run, "stage")) in ("diffusion", ABSENT)


def is_stage1(run: Mapping[str, Any]) -> bool:
    return canon(lookup(run, "stage")) == "autoencoder"


def _control_mode(control: Any) -> str:
    if control is True:
        return "auto"
    if control is False or control is None:
        return "none"
    if control not in CONTROL_MODES:
        raise ValueError(f"control={control!r} is not one of {CONTROL_MODES}")
    return control


def select(matching: Sequence[tuple[str, Mapping[str, Any]]], *, where: Mapping[str, Any] | None,
           completed_only: bool, what: str) -> tuple[list, list[str], list[str]]:
    """Apply --where and the completion filter to (row, run) pairs: (kept, notes, diagnostics).

    diagnostics say, when a filter leaves no run, which one and which flag to add.
    """
    notes, diagnostics = [], []
    kept = list(matching)
    if where:
        after = [(lb, r) for lb, r in kept if matches(r, where)]
        if kept and not after:
            for k, v in where.items():
                values = count_values([r for _, r in kept], k)
                have = ", ".join(f"{val} ({n})" for val, n in sorted(values.items()))
                diagnostics.append(f"--where {k}={show(v)} leaves none of the {len(kept)} run(s) of {what} "
                                   f"(they have {k} = {have}); drop or change --where")
        kept = after
    if completed_only:
        done = [(lb, r) for lb, r in kept if completed(r)]
        pending = len(kept) - len(done)
        if pending:
            notes.append(f"{pending} matching run(s) not completed (or failed) are left out "
                         f"(--include-incomplete includes them).")
        if kept and not done:
            diagnostics.append(f"none of the {len(kept)} run(s) of {what} has completed (COMPLETED marker, no "
                               f"failure.json): add --include-incomplete to use them")
        kept = done
    return kept, notes, diagnostics


def table3(runs: pd.DataFrame, key: str, *, where: Mapping[str, Any] | None = None, control: Any = "auto",
           completed_only: bool = True) -> Table:
    """Sub-table `key` ("3a".."3f") of W.A.L.T Table 3 from collected runs (analysis.collect).

    where: extra {config key: value} every run must match (e.g. {"data.dataset": "ucf101"}).
    control: "auto" (default; True), "paper" or "none" (False): see analysis.control.
    completed_only: leave out runs without the COMPLETED marker or with failure.json.
    """
    if key not in TABLE3:
        raise KeyError(f"unknown table {key!r}; available: {', '.join(TABLE3)}")
    mode = _control_mode(control)
    axis = TABLE3[key]
    ref, ref_text = _reference_rows(key, axis)
    records = runs.to_dict("records")
    own = axis_keys(key)
    axis_text = f"{axis.label} ({', '.join(sorted(own))})"

    def row_of(run):
        return next((lb for lb, spec in axis.rows.items() if matches(run, spec)), None)

    matching = [(lb, r) for r in records if is_stage2(r) for lb in [row_of(r)] if lb is not None]
    diagnostics = []
    if not any(is_stage2(r) for r in records):
        diagnostics.append(f"no stage-2 run (stage: diffusion) among the {len(records)} run(s) collected")
    elif not matching:
        diagnostics.append(f"no stage-2 run sets {axis_text} to a row's value "
                           f"({', '.join(axis.rows)})")
    selected, notes, diag = select(matching, where=where, completed_only=completed_only, what=f"Table {key}")
    diagnostics += diag
    notes += _no_row_note([r for r in records if is_stage2(r) and row_of(r) is None], sorted(own), where)
    config_keys = config_columns(runs)
    kept, report = apply_control(selected, axis_keys=own, axis=axis_text, preferred=paper_defaults(key),
                                 config_keys=config_keys, mode=mode, row_order=list(axis.rows))
    if selected and not kept:
        which = "; ".join(h.text() for h in report.holds)
        diagnostics.append(f"--control paper leaves none of the {len(selected)} run(s): {which}; use --control "
                           f"auto (the default: other axes held at values present among the runs) or --no-control")
    members: dict[str, list[dict]] = {label: [r for lb, r in kept if lb == label] for label in axis.rows}
    members, repeats = _count_once(members, config_keys)
    if repeats:
        notes.append(f"{repeats} run(s) repeat another run's config and seed (another sweep's copy of the same "
                     f"run, e.g. a default row measured by every sub-table) and are counted once.")

    everyone = [r for rows in members.values() for r in rows]
    quantities = ["fvd", "is"] + [q for q in OURS_ONLY if reported(q, everyone)]
    quantities += [q for q in EXTRA_QUANTITIES if ref[q].notna().any()]
    ae_runs = _autoencoder_runs(records, where, completed_only) if "rfvd" in quantities else []
    table = Table(key, axis.title, pd.DataFrame(), axis.label, control=report, reference_row=axis.default,
                  diagnostics=diagnostics)
    data: dict[str, list] = {axis.label: list(axis.rows)}
    counts: dict[str, list] = {}
    for q in quantities:
        quantity = QUANTITIES[q]
        values = None
        if q == "rfvd":
            source = choose_source(quantity, everyone + ae_runs)
            values = _rfvd_values(axis, members, ae_runs, source)
            notes += _unmeasured_autoencoders(members, values)
        else:
            source = choose_source(quantity, everyone)
        paper = {label: float(ref.at[label, q]) for label in axis.rows} if q in ref.columns else None
        decimals = max((reference.decimals(t) for t in ref_text[q] if t), default=1) if q in ref_text else 2
        count = COUNTED.get(q)
        add_quantity(table, data, q, list(axis.rows), members, source, paper=paper, decimals=decimals,
                     reference=axis.default, values=values, count_column=count)
        if count:
            counts[count] = data.pop(count)
    data.update(counts)
    data["AE x seeds"] = [replicates(members[label]) for label in axis.rows]
    frame = pd.DataFrame(data)
    for name in counts:
        frame[name] = frame[name].astype(int)
    table.frame = frame
    if members[axis.default] == [] and everyone:
        notes.append(f"The paper-default row ({axis.default}) has no runs: rows are not compared.")
    notes += _same_model_notes(members, config_keys)
    table.notes = [RULE, *budget(everyone)] + report.notes() + notes + _metric_notes(quantities, table.sources)
    if everyone and len({pair_key(r)[0] for r in everyone}) == 1:
        table.notes.insert(1, f"Every run shares one autoencoder (first_stage_seed {pair_key(everyone[0])[0]}): "
                              f"the marks hold for that autoencoder; whether they hold beyond it is what "
                              f"`walt-tables --replicate` over a sweep with another first_stage_seed answers.")
    filled = table.filled_rows
    if len(filled) == 1 and len(axis.rows) > 1:
        table.diagnostics.append(f"only row {filled[0]} has runs: the runs do not vary {axis_text}")
    return table


def budget(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The training and evaluation budget of a table's runs, for its caption: a result at 750 steps is
    read as that."""
    def values(key: str, fallback: str | None = None) -> str:
        found = {int(float(lookup(r, key))) for r in runs if lookup(r, key) is not MISSING}
        if not found and fallback:
            return values(fallback)
        return "/".join(map(str, sorted(found))) or "?"

    if not runs:
        return []
    return [f"Budget: autoencoder {values('first_stage_steps')} steps, stage 2 "
            f"{values('global_step', 'trainer.max_steps')} steps, {values('eval.num_samples')} samples per evaluation."]


WINDOW_KEYS = ("model.st_window", "model.st_window_tokens", "model.s_window", "model.s_window_tokens", "model.t_window")


def _same_model_notes(members: dict[str, list[dict]], config_keys: Sequence[str]) -> list[str]:
    """Rows that train one model under different labels: their runs differ only in window settings and attend
    over the same token windows (results.json token_windows), e.g. Table 3b's windows on a grid smaller
    than all of them, each clamped to the whole grid."""
    def windows(rows):  # collect flattens results.json's token_windows into token_windows.<kind> columns
        return {", ".join(f"{k[len('token_windows.'):]} {v}" for k, v in sorted(r.items())
                          if k.startswith("token_windows.") and isinstance(v, str)) for r in rows}

    filled = [(label, rows) for label, rows in members.items() if rows]
    seen = {label: windows(rows) for label, rows in filled}
    groups: list[list[str]] = []
    for i, (label, rows) in enumerate(filled):
        mine = seen[label]
        if len(mine) != 1 or mine == {""} or any(label in g for g in groups):
            continue
        same = [other for other, rows_b in filled[i + 1:] if seen[other] == mine and all(
            {canon(lookup(r, k)) for r in rows} == {canon(lookup(r, k)) for r in rows_b}
            for k in config_keys if k not in WINDOW_KEYS and not ignored(k))]
        if same:
            groups.append([label, *same])
    return [f"Rows {', '.join(g)} train one model: their windows all clamp to the same token windows "
            f"({next(iter(seen[g[0]]))}) on this latent grid, so they are one model under {len(g)} "
            f"labels, not a comparison of windows (use a grid the windows tile, e.g. data.synthetic.resolution=128)."
            for g in groups]


def _count_once(members: dict[str, list[dict]], config_keys: Sequence[str]) -> tuple[dict[str, list[dict]], int]:
    """Each row's runs with one run per (config, seeds): a copy of the same run under another run name (the
    paper-default row of every sweep in one runs folder) is the same measurement, not another replicate.
    Every seed key and first_stage_steps (another autoencoder) tell runs apart, though the control rule
    ignores them."""
    keys = [k for k in config_keys if not ignored(k) or is_seed(k) or k == "first_stage_steps"]
    out, repeats = {}, 0
    for label, rows in members.items():
        seen, out[label] = set(), []
        for run in rows:
            fingerprint = tuple(canon(lookup(run, k)) for k in keys)
            if fingerprint in seen:
                repeats += 1
                continue
            seen.add(fingerprint)
            out[label].append(run)
    return out, repeats


def _no_row_note(unmatched: Sequence[Mapping[str, Any]], keys: Sequence[str], where) -> list[str]:
    """A note counting the runs that set the table's axis to values it has no row for (e.g. an ST window
    scaled to a smaller grid), so that no run leaves a table without a word."""
    counts: dict[str, int] = {}
    for run in unmatched:
        if (where and not matches(run, where)) or all(lookup(run, k) is MISSING for k in keys):
            continue
        label = ", ".join(f"{k}={canon(lookup(run, k))}" for k in keys)
        counts[label] = counts.get(label, 0) + 1
    if not counts:
        return []
    which = "; ".join(f"{label}: {n}" for label, n in sorted(counts.items()))
    return [f"{sum(counts.values())} stage-2 run(s) set this axis to values the paper's table has no row for "
            f"and are not shown ({which})."]


def reported(q: str, runs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any run reports quantity `q` under any of its sources."""
    return any(not math.isnan(value(r, QUANTITIES[q], s)) for r in runs for s in QUANTITIES[q].sources)


def table3_all(runs: pd.DataFrame, keys=None, **kwargs) -> dict[str, Table]:
    """Every requested sub-table (default all of 3a-3f), keyed by "3a".. in the paper's order."""
    return {k: table3(runs, k, **kwargs) for k in (keys or TABLE3)}


def _autoencoder_runs(records, where, completed_only) -> list[dict]:
    out = [r for r in records if is_stage1(r)]
    if where:
        out = [r for r in out if matches(r, where, absent_ok=True)]
    return [r for r in out if completed(r)] if completed_only else out


def _ae_identity(run: Mapping[str, Any]) -> str:
    """The autoencoder a run's reconstruction numbers belong to: its run dir (stage 1) or the run dir
    of the first-stage checkpoint a stage-2 run used (so seeds sharing one autoencoder count once)."""
    ckpt = lookup(run, "first_stage.ckpt")
    if not isinstance(ckpt, str):
        ckpt = lookup(run, "first_stage_ckpt")
    if isinstance(ckpt, str) and ckpt not in ("auto", ""):
        return os.path.normpath(os.path.abspath(os.path.dirname(os.path.dirname(ckpt))))
    return os.path.normpath(os.path.abspath(str(run.get("run_dir"))))


def _rfvd_values(axis: Axis, members: Mapping[str, list], ae_runs: list, source: str) -> dict[str, list]:
    """Row -> rFVD of each distinct autoencoder: those of the row's stage-2 runs and the matching stage-1 runs."""
    quantity = QUANTITIES["rfvd"]
    out = {}
    for label, spec in axis.rows.items():
        seen: dict[str, float] = {}
        for run in list(members[label]) + [r for r in ae_runs if matches(r, spec)]:
            v = value(run, quantity, source)
            if not math.isnan(v):
                seen.setdefault(_ae_identity(run), v)
        out[label] = list(seen.values())
    return out


def _unmeasured_autoencoders(members: Mapping[str, list], values: Mapping[str, list]) -> list[str]:
    """A note with the exact commands for rows that have runs but no rFVD: their autoencoder was never
    evaluated (trained by `walt-data encode`, which does not evaluate, or given by path)."""
    dirs = sorted({_ae_identity(r) for label, rows in members.items() if rows and not values.get(label) for r in rows})
    if not dirs:
        return []
    evals = "; ".join(f"`walt-eval {d}`" for d in dirs)
    return [f"rFVD: the autoencoder(s) of rows without it were never evaluated: {evals}, then pass their folder(s) "
            f"to walt-tables beside the runs (`walt-tables <runs dir> {' '.join(dirs)}`)."]


def _reference_rows(key: str, axis: Axis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's rows of sub-table `key`, indexed by row label (numbers, and as written)."""
    ref = reference.walt_table3()
    text = reference.raw("walt_table3")
    if not axis.paper:  # a table of ours: the paper's columns, empty
        empty = pd.DataFrame(index=pd.Index(list(axis.rows), name="value"), columns=ref.columns, dtype=float)
        return empty, empty.astype(object).fillna("")
    ref, text = ref[ref["table"] == key].set_index("value"), text[text["table"] == key].set_index("value")
    return ref, text


def _metric_notes(quantities: list[str], sources: dict[str, str]) -> list[str]:
    notes = []
    for q in quantities:
        source = sources[q]
        if is_synthetic(source) and q not in ("acc", "acc_real"):
            label = source_label(QUANTITIES[q], source)
            notes.append(f"{label} (ours) is `{source}`, measured with the synthetic-data feature extractor: "
                         f"it is not the paper's {QUANTITIES[q].label} and its scale is not comparable.")
    if "acc" in quantities:
        notes.append(f"class acc (ours) is `{sources['acc']}`: the synthetic classifier's accuracy on class-"
                     f"conditional samples (the class asked for vs the class recognised); no paper value.")
    if "acc_real" in quantities:
        notes.append(f"class acc real clips (ours) is `{sources['acc_real']}`: the same classifier on real clips, "
                     f"the ceiling for class acc.")
    if "rfvd" in quantities:
        notes.append("rFVD (ours) is the autoencoder's: n (rFVD) counts distinct autoencoders (stage-1 runs, "
                     "or the first-stage checkpoint of the row's stage-2 runs), not seeds of stage 2.")
    if "steps_per_sec" in quantities:
        notes.append("steps/s (ours) is training throughput at our scale and hardware: compare ratios "
                     "between rows, not absolute values.")
    if "params_m" in quantities:
        notes.append("params [M] (ours) counts the trainable parameters of our model size.")
    notes.append(f"{MISSING_TEXT} = no run.")
    return notes
