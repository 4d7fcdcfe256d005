"""W.A.L.T main results (Tables 1, 2, 5, 7) in long form: one row per paper number, ours beside it.

Which runs count for a task and a model size is decided by TASKS and METHODS below (the config
key names live here only). Only W.A.L.T rows can get ours; baselines (MAGVIT, DiT, ...) keep the
paper's number for context. Runs with a Table 3 axis off the paper default are left out, so
ablation runs never leak into main results.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from analysis import reference
from analysis.aggregate import MISSING_TEXT, Table, completed
from analysis.metrics import QUANTITIES, choose_source, is_synthetic, value
from analysis.matching import DefaultsTo, Spec, filter_runs, matches
from analysis.stats import summarize
from analysis.tables import TABLE3, is_stage2

# ---- paper task / method -> config spec; a task or method missing here gets no "ours" ------
TASKS: dict[str, Spec] = {
    "ucf101_class_conditional": {"data.dataset": "ucf101", "model.context_frames": DefaultsTo(0)},
    "k600_frame_prediction": {"data.dataset": "kinetics600", "model.context_frames": lambda v: float(v) > 0},
    "imagenet256_class_conditional": {"data.dataset": "imagenet"},
    # imagenet256_class_conditional_cfg and ucf101_zero_shot_t2v: no config key for them yet
}
METHODS: dict[str, Spec] = {
    "W.A.L.T-L": {"model.depth": 24, "model.hidden_size": 1024},
    "W.A.L.T-XL": {"model.depth": 28, "model.hidden_size": 1152},
}
# --------------------------------------------------------------------------------------------


def main_results(runs: pd.DataFrame, *, where: Mapping[str, Any] | None = None,
                 completed_only: bool = True) -> Table:
    """The paper's main-result numbers (reference/walt_main_results.csv order) with ours where mapped."""
    ref = reference.walt_main_results()
    records = filter_runs(runs.to_dict("records"), where)
    records = [r for r in records if is_stage2(r)]
    if completed_only:
        records = [r for r in records if completed(r)]
    defaults = [a.rows[a.default] for a in TABLE3.values()]
    records = [r for r in records if all(matches(r, s, absent_ok=True) for s in defaults)]

    ours, errors, used, counts = [], [], [], []
    for row in ref.itertuples(index=False):
        task, method = TASKS.get(row.task), METHODS.get(row.method)
        quantity = QUANTITIES.get(row.metric)
        if task is None or method is None or quantity is None:
            ours.append(math.nan)
            errors.append(math.nan)
            used.append("")
            counts.append(0)
            continue
        members = [r for r in records if matches(r, task) and matches(r, method)]
        source = choose_source(quantity, members)
        summary = summarize(value(r, quantity, source) for r in members)
        ours.append(summary.mean)
        errors.append(summary.se)
        used.append(source if summary.n else "")
        counts.append(summary.n)
    frame = pd.DataFrame({
        "method": ref["method"], "table": ref["table"], "task": ref["task"],
        "params [M] (paper)": ref["params_m"], "steps": ref["sampling_steps"], "metric": ref["metric"],
        "paper": ref["value"], "ours": ours, "ours SE": errors, "ours metric": used, "n": counts,
    })
    notes = [f"Ours: mean ± standard error over n completed runs (seeds) at the paper's default settings; "
             f"{MISSING_TEXT} = no run or no mapping from the paper's task/method to our configs."]
    if any(is_synthetic(s) for s in used if s):
        notes.insert(0, "Rows whose 'ours metric' ends in _synth use the synthetic-data feature extractor: "
                        "not comparable with the paper's number.")
    decimals = {"params [M] (paper)": 0, "steps": 0}
    table = Table("main", "main results (Tables 1, 2, 5, 7)", frame, "method",
                  {"value": ("paper", "ours")}, {}, decimals, notes, errors={"ours": "ours SE"}, counts={"value": "n"})
    if table.empty:
        table.diagnostics.append("no completed stage-2 run of W.A.L.T-L/XL (model.depth/hidden_size) on a main-"
                                 "results task (data.dataset ucf101/kinetics600/imagenet) with every Table 3 axis "
                                 "at the paper default")
    return table
