"""Whether two sweeps of one preset draw the same conclusions (`walt-tables --replicate DIR_A DIR_B`).

Two machines, two clusters or two autoencoder seeds (first_stage_seed) run the same sweep; each is built
into its tables, and every row is compared across the two: does the sign of its difference from the
default row agree, do the two intervals of that difference overlap, and, for a row resolved (better /
worse) in either sweep, is it resolved the same way in the other. A conclusion replicates only when
both sweeps resolve it in the same direction; "k of n conclusions replicate" counts those.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

RESOLVED = ("better", "worse", "higher", "lower")


@dataclass(frozen=True)
class RowReplication:
    table: str
    metric: str
    row: str
    a: Optional[Mapping[str, Any]]  # the row's summary entry (analysis.aggregate.Table.summary) or None
    b: Optional[Mapping[str, Any]]

    @property
    def conclusion(self) -> bool:
        """Resolved in either sweep: a finding a reader would take from it."""
        return any(s and s.get("verdict") in RESOLVED for s in (self.a, self.b))

    @property
    def replicates(self) -> bool:
        return bool(self.a and self.b and self.a.get("verdict") in RESOLVED
                    and self.a.get("verdict") == self.b.get("verdict"))

    @property
    def signs_agree(self) -> Optional[bool]:
        if not (self.a and self.b) or self.a.get("sign") is None or self.b.get("sign") is None:
            return None
        return self.a["sign"] == self.b["sign"]

    @property
    def overlap(self) -> Optional[bool]:
        """Whether the two 95% intervals of the difference from the default row overlap (None: no interval)."""
        ia, ib = _interval(self.a), _interval(self.b)
        if ia is None or ib is None:
            return None
        return ia[0] <= ib[1] and ib[0] <= ia[1]

    @property
    def status(self) -> str:
        if self.a is None or self.b is None:
            return f"missing in {'A' if self.a is None else 'B'}"
        if self.replicates:
            return "replicates"
        if self.conclusion:
            return "does not replicate"
        return "no conclusion in either"


def _interval(entry: Optional[Mapping[str, Any]]) -> Optional[tuple[float, float]]:
    ci = entry.get("ci") if entry else None
    if not ci or any(v is None or math.isnan(v) for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def compare_summaries(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[RowReplication]:
    """Row by row over the tables and metrics of two summary.json-like dicts (table -> metric -> entry)."""
    out = []
    for table in sorted(set(a) | set(b)):
        metrics = set((a.get(table) or {})) | set((b.get(table) or {}))
        for metric in sorted(metrics):
            ra = ((a.get(table) or {}).get(metric) or {}).get("rows") or {}
            rb = ((b.get(table) or {}).get(metric) or {}).get("rows") or {}
            for row in list(dict.fromkeys([*ra, *rb])):
                out.append(RowReplication(table, metric, row, ra.get(row), rb.get(row)))
    return out


def report(rows: list[RowReplication], name_a: str, name_b: str) -> str:
    """The Markdown report: a line per row, then "k of n conclusions replicate"."""
    def cell(entry):
        if entry is None:
            return "—"
        ci = _interval(entry)
        interval = f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else ""
        return f"{entry.get('verdict')} ({entry.get('sign') or 'equal'}{interval}, n={entry.get('n')})"

    def flag(value):
        return "—" if value is None else "yes" if value else "no"

    lines = [f"Replication: A = {name_a}, B = {name_b}", "",
             "| table | metric | row | A: verdict (sign, 95% interval of the paired difference) | B | signs agree "
             "| intervals overlap | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.table} | {r.metric} | {r.row} | {cell(r.a)} | {cell(r.b)} | {flag(r.signs_agree)} | "
                     f"{flag(r.overlap)} | {r.status} |")
    conclusions = [r for r in rows if r.conclusion]
    k = sum(r.replicates for r in conclusions)
    signs = [r.signs_agree for r in rows if r.signs_agree is not None]
    lines += ["", f"{k} of {len(conclusions)} conclusions replicate "
                  f"(a conclusion: a row resolved better/worse in either sweep; it replicates when both resolve it "
                  f"the same way); the signs agree in {sum(signs)} of {len(signs)} rows measured in both."]
    return "\n".join(lines) + "\n"
