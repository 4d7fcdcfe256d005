"""The table object every builder returns, and the columns of one quantity over replicate rows.

A row's number is the mean over its runs, with its standard error, n, and (for noisy metrics) a
mark saying whether it differs from the reference row beyond noise (analysis.stats.RULE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from analysis.control import ControlReport
from analysis.metrics import QUANTITIES, Quantity, source_label, value
from analysis.stats import Summary, Verdict, compare, compare_rows, direction_of, summarize

MISSING_TEXT = "—"


@dataclass
class Table:
    """A built table: `frame` holds numbers (NaN = no run); the rest tells writers how to show it.

    columns: quantity -> (paper column or None, ours column); ours holds the row mean.
    errors: ours column -> its standard-error column (writers print "mean ± SE" in one cell).
    marks: quantity -> its "vs default" column (Verdict.text per row); verdicts: the Verdicts.
    counts: quantity -> its n column.
    """

    key: str
    title: str
    frame: pd.DataFrame
    axis_column: str
    columns: dict[str, tuple[Optional[str], str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # quantity -> results metric used for ours
    decimals: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    marks: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    control: Optional[ControlReport] = None
    reference_row: Optional[str] = None
    diagnostics: list[str] = field(default_factory=list)  # why rows are empty (which flag to add)
    caption_text: Optional[str] = None
    uninformative: list[str] = field(default_factory=list)  # quantities that do not separate from untrained

    @property
    def caption(self) -> str:
        if self.caption_text:
            return self.caption_text
        name = f"Table {self.key}: " if self.key[:1].isdigit() else ""
        return f"W.A.L.T {name}{self.title} (paper vs ours)"

    @property
    def filled_rows(self) -> list[str]:
        """Row labels with at least one run (by the first count column)."""
        if not self.counts:
            return []
        n = self.frame[next(iter(self.counts.values()))]
        return [str(lb) for lb, k in zip(self.frame[self.axis_column], n.tolist()) if k > 0]

    @property
    def empty(self) -> bool:
        return not self.filled_rows

    def quantity(self, q: str) -> Quantity:
        return QUANTITIES[q]

    def direction_of_column(self, column: str) -> Optional[str]:
        """"lower"/"higher" (is better) for a paper or ours column of a quantity, else None."""
        for q, (paper, ours) in self.columns.items():
            if column in (paper, ours) and q in QUANTITIES:
                return QUANTITIES[q].better
        return None

    def resolved(self, q: str = "fvd") -> dict[str, Verdict]:
        """Row label -> Verdict of quantity `q` against the reference row (see analysis.stats)."""
        return {v.label: v for v in self.verdicts.get(q, [])}

    def summary(self, q: str = "fvd") -> dict[str, Any]:
        """A JSON-able account of quantity `q` (e.g. for walt-demo's check): the reference row, and for
        every other row with runs its n, mean, SE, verdict ("better"/"worse"/"not resolved"), p, the
        paper's direction and whether ours agrees with it (None when not resolved)."""
        if q not in self.columns:
            return {"metric": None, "reference": self.reference_row, "rows": {}}
        _, ours = self.columns[q]
        n_col = self.counts.get(q) or next(iter(self.counts.values()), None)
        rows = {}
        for i, verdict in enumerate(self.verdicts.get(q, [])):
            n = int(self.frame[n_col].iloc[i]) if n_col else 0
            if n == 0 or verdict.reason == "reference":
                continue
            rows[verdict.label] = {
                "n": n, "mean": float(self.frame[ours].iloc[i]), "se": float(self.frame[self.errors[ours]].iloc[i]),
                "verdict": verdict.direction if verdict.resolved else
                "direction only" if verdict.reason == "n too small" else "not resolved",
                "p": None if math.isnan(verdict.p) else verdict.p, "paper": verdict.paper,
                "agrees_with_paper": verdict.agrees_with_paper, "sign": verdict.sign, "unit": verdict.unit,
                "units": verdict.units, "diff": None if math.isnan(verdict.diff) else verdict.diff,
                "ci": None if math.isnan(verdict.ci[0]) else list(verdict.ci), "agree": verdict.agree}
        return {"metric": self.sources.get(q), "reference": self.reference_row, "rows": rows,
                "uninformative": q in self.uninformative}


def add_quantity(table: Table, data: dict[str, list], q: str, rows: Sequence[str],
                 members: Mapping[str, Sequence[Mapping[str, Any]]], source: str, *,
                 paper: Optional[Mapping[str, float]] = None, decimals: int = 1,
                 reference: Optional[str] = None, values=None, count_column: Optional[str] = None) -> None:
    """Add quantity `q`'s columns to `data` (column -> list, in `rows` order) and describe them in `table`.

    paper: row -> the paper's number (a "(paper)" column when given).
    reference: the row every other row is compared with (marks only for QUANTITIES[q].tested).
    values: row -> list of numbers, instead of reading `source` from each member run.
    count_column: name of the n column to add for this quantity (None: none).
    """
    quantity = QUANTITIES[q]
    label = source_label(quantity, source)
    ours_col, se_col = f"{label} (ours)", f"{label} (ours) SE"
    per_row = {lb: list(values[lb]) if values is not None else [value(r, quantity, source) for r in members.get(lb, ())]
               for lb in rows}
    summaries = {lb: summarize(v) for lb, v in per_row.items()}
    paper_col = None
    if paper is not None:
        paper_col = f"{quantity.label} (paper)"
        data[paper_col] = [float(paper.get(lb, math.nan)) for lb in rows]
        table.decimals[paper_col] = decimals
    data[ours_col] = [summaries[lb].mean for lb in rows]
    data[se_col] = [summaries[lb].se for lb in rows]
    table.decimals[ours_col] = table.decimals[se_col] = decimals
    table.columns[q] = (paper_col, ours_col)
    table.errors[ours_col] = se_col
    table.sources[q] = source
    if quantity.tested:
        paper_ref = paper.get(reference) if paper is not None and reference is not None else None
        paper_dirs = {lb: direction_of(paper.get(lb, math.nan), paper_ref, quantity.better)
                      for lb in rows if paper is not None and paper_ref is not None and lb != reference}
        if values is None:  # paired by (first_stage_seed, seed) where the rows share runs
            keyed = {lb: _by_pair(members.get(lb, ()), quantity, source) for lb in rows}
            verdicts = compare_rows(keyed, reference, quantity.better, paper=paper_dirs)
        else:
            ref = summaries.get(reference) if reference is not None else None
            verdicts = [compare(lb, summaries[lb], ref, quantity.better, paper=paper_dirs.get(lb),
                                is_reference=lb == reference and summaries[lb].n > 0) for lb in rows]
        mark_col = f"{label} vs default"
        data[mark_col] = [v.text for v in verdicts]
        table.marks[q] = mark_col
        table.verdicts[q] = verdicts
    if count_column:
        data[count_column] = [summaries[lb].n for lb in rows]
        table.counts[q] = count_column


def pair_key(run: Mapping[str, Any]) -> tuple[int, int]:
    """(first_stage_seed, seed) of a run: the replicate it is of both levels (absent = 0, the defaults)."""
    from analysis.matching import MISSING, lookup

    return tuple(0 if lookup(run, k) is MISSING else int(float(lookup(run, k))) for k in ("first_stage_seed", "seed"))


def _by_pair(runs: Sequence[Mapping[str, Any]], quantity: Quantity, source: str) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for run in runs:
        v = value(run, quantity, source)
        if not math.isnan(v):
            out.setdefault(pair_key(run), []).append(v)
    return out


def replicates(runs: Sequence[Mapping[str, Any]]) -> str:
    """"K x M": the distinct autoencoders (first_stage_seed) and stage-2 seeds among a row's runs."""
    keys = [pair_key(r) for r in runs]
    return f"{len({k[0] for k in keys})} x {len({k[1] for k in keys})}" if keys else "0"


def summaries_of(table: Table, q: str) -> dict[str, Summary]:
    """Row label -> Summary (n, mean, SE) of quantity `q`, rebuilt from the table's columns."""
    _, ours = table.columns[q]
    se = table.errors[ours]
    n_col = table.counts.get(q) or next(iter(table.counts.values()), None)
    out = {}
    for i, lb in enumerate(table.frame[table.axis_column].tolist()):
        n = int(table.frame[n_col].iloc[i]) if n_col else 0
        out[str(lb)] = Summary(n, float(table.frame[ours].iloc[i]), math.nan, float(table.frame[se].iloc[i]))
    return out


def completed(run: Mapping[str, Any]) -> bool:
    """The run finished (COMPLETED marker) and has no failure.json."""
    return _is_true(run.get("completed")) and not _is_true(run.get("failed"))


def _is_true(flag: Any) -> bool:
    return flag is True or (type(flag).__name__ == "bool_" and bool(flag))


def nanmean(values) -> float:
    """Mean of the non-NaN values; NaN when there are none (a missing row, never 0)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def check_against_baseline(table: Table, baseline: Mapping[str, Any], *, alpha: float = 0.05) -> list[str]:
    """Flag metrics that do not separate trained rows from an untrained baseline run (e.g. walt-demo's).

    A metric *separates* when every row with runs is better than the baseline's value (by the
    metric's direction) and, for rows with n >= 2, a one-sample t-test of the row against that value
    gives p < alpha. A metric with a row no better than the baseline has all its marks replaced by
    "uninformative (≈ untrained)"; when every row is better but some not beyond noise (n too small: with
    n = 2 the test needs |t| > 12.7), those rows' marks become "not shown better than untrained" and the
    rows shown better keep their verdicts; each with a note. Returns the quantities flagged.
    """
    from scipy import stats as st

    flagged = []
    for q in list(table.marks):
        quantity = QUANTITIES[q]
        if quantity.better is None:
            continue
        base = value(baseline, quantity, table.sources[q])
        if math.isnan(base):
            continue
        rows = summaries_of(table, q)
        filled = {lb: s for lb, s in rows.items() if s.n > 0 and not math.isnan(s.mean)}
        if not filled:
            continue
        worse, unshown = [], {}  # not better than untrained / better, but the row's n cannot show it
        for lb, s in filled.items():
            if direction_of(s.mean, base, quantity.better) != "better":
                worse.append(lb)
            elif s.n >= 2 and s.se > 0:
                t = (s.mean - base) / s.se
                p = float(2 * st.t.sf(abs(t), s.n - 1))
                if p >= alpha:
                    unshown[lb] = f"{lb} (n={s.n}, p={p:.2g})"
        if not (worse or unshown):
            continue
        flagged.append(q)
        col, label = table.marks[q], table.columns[q][1]
        if worse:
            table.uninformative.append(q)
            table.frame[col] = ["uninformative (≈ untrained)" if t else t for t in table.frame[col].tolist()]
            table.notes.append(
                f"{label} does not separate trained runs from the untrained baseline ({base:.4g}) in row(s) "
                f"{', '.join(worse)}: differences between rows in this metric are not evidence at this budget.")
        else:  # with n = 2 a t-test needs |t| > 12.7 for p < 0.05: more seeds decide it
            labels = [str(lb) for lb in table.frame[table.axis_column].tolist()]
            table.frame[col] = ["not shown better than untrained" if t and lb in unshown else t
                                for lb, t in zip(labels, table.frame[col].tolist())]
            table.notes.append(
                f"{label}: every row is better than the untrained baseline ({base:.4g}), but not beyond noise in "
                f"row(s) {', '.join(unshown.values())} (t-test, alpha {alpha}); more seeds would decide whether "
                f"those rows' differences in this metric are evidence.")
    return flagged
