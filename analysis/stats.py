"""Replicate statistics for table rows: mean, standard error, n, and whether a difference is resolved.

The rule every table states in its notes (RULE below):
- A row's number is the mean over its n runs (seeds); "±" is the standard error of that mean,
  SE = s / sqrt(n) with the sample standard deviation s (ddof = 1). With n = 1 there is no SE.
- A row is compared with the reference row (W.A.L.T Table 3: the paper-default row) by Welch's
  two-sided t-test (unequal variances). The difference is *resolved* when p < ALPHA (0.05); the mark
  then says whether the row is better or worse than the reference, by the metric's direction
  (lower FVD is better, higher IS is better). Otherwise it says "not resolved", and with n < 2 in
  either row the test cannot be made: "not resolved (n=1)". No multiple-comparison correction.

Why SE + Welch rather than a bootstrap interval: sweeps give 2-5 seeds per row, where a bootstrap
interval is degenerate (with n = 2 it is the two values themselves) and too narrow, while the t
distribution accounts for the few degrees of freedom honestly (with n = 2 per row a difference must be
large against the spread to count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

ALPHA = 0.05
RULE = (f"Ours: mean ± standard error over the n runs (seeds) of a row (no ± when n = 1). "
        f"'vs default': Welch's two-sided t-test of the row against the paper-default row; "
        f"'better'/'worse' when p < {ALPHA:g} (by the metric's direction: ↓ lower is better, ↑ higher is "
        f"better), otherwise 'not resolved' (also when either row has n < 2); no multiple-comparison "
        f"correction.")

LOWER, HIGHER = "lower", "higher"
ARROWS = {LOWER: "↓", HIGHER: "↑"}


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and standard error of the finite values of a row."""

    n: int
    mean: float
    sd: float  # NaN when n < 2
    se: float  # NaN when n < 2

    @property
    def ci95(self) -> tuple[float, float]:
        """The t-based 95% interval of the mean (NaN when n < 2)."""
        if self.n < 2:
            return (math.nan, math.nan)
        from scipy import stats

        half = float(stats.t.ppf(0.975, self.n - 1)) * self.se
        return (self.mean - half, self.mean + half)


def summarize(values: Iterable[float]) -> Summary:
    """Summary of the finite values (NaN and None are ignored; no value -> n = 0, mean NaN)."""
    finite = [float(v) for v in values if v is not None and not _nan(v)]
    n = len(finite)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = math.fsum(finite) / n
    if n < 2:
        return Summary(1, mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal values up to rounding (1.4 vs 1.4000000000000001)
        sd = 0.0
    return Summary(n, mean, sd, sd / math.sqrt(n))


def welch_p(a: Summary, b: Summary) -> float:
    """Two-sided p-value of Welch's t-test between two rows; NaN when either has n < 2.

    Both rows without spread (identical replicates, e.g. a deterministic metric): p = 0 when the means
    differ, 1 when they are equal.
    """
    if a.n < 2 or b.n < 2:
        return math.nan
    va, vb = a.se ** 2, b.se ** 2
    diff = a.mean - b.mean
    if va + vb == 0:
        return 0.0 if diff != 0 else 1.0
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    from scipy import stats

    return float(2 * stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class Verdict:
    """How a row compares with the reference row on one metric.

    direction: "better" / "worse" (the metric has a direction) or "higher" / "lower" (it has none)
        when resolved; None when not resolved or for the reference row itself.
    paper: the paper's direction of the same row against the paper's default row (None when unknown).
    """

    label: str
    resolved: bool
    direction: Optional[str]
    p: float
    reason: str = ""  # why not resolved: "n<2", "p", "no reference", "reference"
    paper: Optional[str] = None

    @property
    def text(self) -> str:
        if self.reason == "reference":
            return "(default)"
        if self.reason == "no runs":
            return ""
        if self.reason == "no reference":
            return "not resolved (no default runs)"
        paper = f"; paper: {self.paper}" if self.paper else ""
        if self.reason == "n<2":
            return f"not resolved (n<2{paper})"
        if not self.resolved:
            return f"not resolved ({format_p(self.p)}{paper})"
        return f"{self.direction} ({format_p(self.p)}{paper})"

    @property
    def agrees_with_paper(self) -> Optional[bool]:
        """Resolved in the paper's direction (True), resolved against it (False), else None."""
        if not self.resolved or self.paper not in ("better", "worse"):
            return None
        return self.direction == self.paper


def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"


def compare(label: str, row: Summary, reference: Optional[Summary], better: Optional[str], *,
            is_reference: bool = False, paper: Optional[str] = None, alpha: float = ALPHA) -> Verdict:
    """The Verdict of `row` against `reference` (see the module docstring for the rule)."""
    if is_reference:
        return Verdict(label, False, None, math.nan, "reference", paper)
    if row.n == 0:
        return Verdict(label, False, None, math.nan, "no runs", paper)
    if reference is None or reference.n == 0:
        return Verdict(label, False, None, math.nan, "no reference", paper)
    p = welch_p(row, reference)
    if math.isnan(p):
        return Verdict(label, False, None, p, "n<2", paper)
    if p >= alpha:
        return Verdict(label, False, None, p, "p", paper)
    return Verdict(label, True, direction_of(row.mean, reference.mean, better), p, "", paper)


def direction_of(value: float, reference: float, better: Optional[str]) -> Optional[str]:
    """"better"/"worse" of `value` against `reference` for a metric with a direction, else "higher"/"lower"."""
    if _nan(value) or _nan(reference) or value == reference:
        return None
    higher = value > reference
    if better is None:
        return "higher" if higher else "lower"
    return "better" if higher == (better == HIGHER) else "worse"


def _nan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True
