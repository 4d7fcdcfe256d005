"""Cross-paper table: the space-time layouts of W.A.L.T, Latte (V1-V4) and LaVie side by side, ours only.

A row is a layout, read from each stage-2 run's config: `model.layout` (walt, s_t, s_then_t,
s_plus_t, split, full, spatial, or an explicit list of block kinds) and `model.temporal_pos`
(absolute or rope). Named rows (LAYOUT_ROWS, in this order) come first, then any other layout the
runs used, labelled by its config value. Columns: the FVD-style metric (I3D `fvd`, else `fvd_synth`),
the IS-style metric, the synthetic class accuracy when runs report it, training steps/s, peak
memory and parameters: each mean ± standard error over the row's runs, with n, and for the noisy
metrics a mark against the W.A.L.T row (Welch's t-test, analysis.stats.RULE; the first row with runs
when no W.A.L.T run exists).

The control rule is Table 3's (analysis.control, mode auto by default) with one difference: a row is
a whole recipe, so only keys that vary *inside* a row (seeds aside) are held, at the W.A.L.T paper
default when runs have it, else at the value that fills the most rows. Keys a preset changes together
with the layout (Latte's patch size 2, sin-cos position embedding, separate AdaLN) stay part of the row
and are listed in the notes ("Also different between rows"). To compare layouts at one patch size, run
them at one patch size (or pass --where model.patch_size=1).

There is no paper column: the papers report these designs on different data, model sizes and budgets.
Throughput and memory depend on the hardware: compare rows measured on one machine.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from analysis.aggregate import MISSING_TEXT, Table, add_quantity
from analysis.collect import config_columns
from analysis.control import apply_control, canon
from analysis.matching import MISSING, DefaultsTo, lookup, matches
from analysis.metrics import QUANTITIES, choose_source
from analysis.stats import RULE
from analysis.tables import is_stage2, paper_defaults, reported, select

AXIS_KEYS = ("model.layout", "model.temporal_pos")
_ABS = DefaultsTo("absolute")
# ---- named layouts (config spec per row); edit here when the transformer's layout names change ----
LAYOUT_ROWS: dict[str, Mapping[str, Any]] = {
    "W.A.L.T (S / ST windows)": {"model.layout": DefaultsTo("walt"), "model.temporal_pos": _ABS},
    "W.A.L.T full attention": {"model.layout": "full", "model.temporal_pos": _ABS},
    "Latte V1 (S / T blocks alternate)": {"model.layout": "s_t", "model.temporal_pos": _ABS},
    "Latte V2 (late fusion: S blocks, then T)": {"model.layout": "s_then_t", "model.temporal_pos": _ABS},
    "Latte V3 (S then T attention per block)": {"model.layout": "s_plus_t", "model.temporal_pos": _ABS},
    "Latte V4 (heads split S / T)": {"model.layout": "split", "model.temporal_pos": _ABS},
    "LaVie (S then T per block, temporal RoPE)": {"model.layout": "s_plus_t", "model.temporal_pos": "rope"},
    "spatial only (no temporal mixing)": {"model.layout": "spatial", "model.temporal_pos": _ABS},
}
REFERENCE = "W.A.L.T (S / ST windows)"
QUANTITY_ORDER = ("fvd", "is", "acc", "acc_real", "steps_per_sec", "peak_memory_gib", "params_m")
# --------------------------------------------------------------------------------------------


def layout_label(run: Mapping[str, Any]) -> str:
    """The row of a run: a named layout, or e.g. "layout s_t + temporal RoPE" / "layout [S, ST, T]"."""
    for label, spec in LAYOUT_ROWS.items():
        if matches(run, spec):
            return label
    layout = lookup(run, "model.layout")
    text = (f"[{', '.join(map(str, layout))}]" if isinstance(layout, (list, tuple))
            else "walt" if layout is MISSING else str(layout))
    rope = canon(lookup(run, "model.temporal_pos")) == "rope"
    return f"layout {text}" + (" + temporal RoPE" if rope else "")


def layout_table(runs: pd.DataFrame, *, where: Mapping[str, Any] | None = None, control: Any = "auto",
                 completed_only: bool = True) -> Table:
    """Rows = the layouts the runs used (see the module docstring); ours only, mean ± SE, n, marks."""
    mode = "auto" if control is True else "none" if control in (False, None) else control
    records = [r for r in runs.to_dict("records") if is_stage2(r)]
    matching = [(layout_label(r), r) for r in records]
    selected, notes, diagnostics = select(matching, where=where, completed_only=completed_only,
                                          what="the layout table")
    if not matching:
        diagnostics.append(f"no stage-2 run (stage: diffusion) among the {len(runs)} run(s) collected")
    axis_text = "layout (model.layout, model.temporal_pos)"
    kept, report = apply_control(selected, axis_keys=set(AXIS_KEYS), axis=axis_text,
                                 preferred=paper_defaults(exclude=AXIS_KEYS), config_keys=config_columns(runs),
                                 mode=mode, hold_across_rows=False,
                                 row_order=list(LAYOUT_ROWS) + sorted({lb for lb, _ in selected} - set(LAYOUT_ROWS)))
    found = {lb for lb, _ in kept}
    rows = [lb for lb in LAYOUT_ROWS if lb in found] + sorted(found - set(LAYOUT_ROWS))
    members = {lb: [r for l2, r in kept if l2 == lb] for lb in rows}
    reference = REFERENCE if REFERENCE in rows else (rows[0] if rows else None)
    everyone = [r for _, r in kept]
    quantities = [q for q in QUANTITY_ORDER if reported(q, everyone)] or ["fvd"]
    table = Table("layouts", "space-time layouts", pd.DataFrame(), "layout", control=report,
                  reference_row=reference, diagnostics=diagnostics,
                  caption_text="Cross-paper layouts: W.A.L.T, Latte V1-V4, LaVie (ours, no paper column)")
    data: dict[str, list] = {"layout": rows}
    for i, q in enumerate(quantities):
        source = choose_source(QUANTITIES[q], everyone)
        add_quantity(table, data, q, rows, members, source, decimals=2, reference=reference,
                     count_column="n" if i == 0 else None)
    n = data.pop("n", [0] * len(rows))
    data["n"] = n
    frame = pd.DataFrame(data)
    frame["n"] = frame["n"].astype(int)
    table.frame = frame
    for q, col in table.marks.items():  # "vs default" reads "vs W.A.L.T" here, "(default)" "(reference)"
        renamed = col.replace("vs default", f"vs {'W.A.L.T' if reference == REFERENCE else reference}")
        table.frame = table.frame.rename(columns={col: renamed})
        table.frame[renamed] = table.frame[renamed].replace("(default)", "(reference)")
        table.marks[q] = renamed
    table.notes = [RULE.replace("paper-default row", "reference row (W.A.L.T when it has runs)")] + report.notes() \
        + notes + [
            "Rows: model.layout and model.temporal_pos of each run (Latte V1-V4 = s_t, s_then_t, s_plus_t, split; "
            "LaVie = s_plus_t with temporal RoPE). No paper column: the papers measured these designs on "
            "other data, sizes and budgets.",
            "steps/s and peak memory depend on the hardware: compare rows measured on one machine.",
            f"{MISSING_TEXT} = no run.",
        ]
    if len(rows) == 1:
        table.diagnostics.append(f"only one layout ({rows[0]}) among the runs")
    return table
