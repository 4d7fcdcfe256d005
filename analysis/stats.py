"""Replicate statistics for table rows: mean, standard error, n, and whether a difference is resolved.

The rule every table states in its notes (RULE below):
- A row's number is the mean over its runs; "±" is the standard error of that mean, SE = s / sqrt(n)
  with the sample standard deviation s (ddof = 1). With n = 1 there is no SE.
- Replicates come at two levels: the autoencoder (first_stage_seed: every row of a sweep shares it) and
  the stage-2 seed. A row is compared with the reference row on *paired* differences: runs of both rows
  with the same (first_stage_seed, seed), which cancels the noise the two rows share. The unit the test
  resamples is the autoencoder when the pairs span several (the per-autoencoder mean difference; the
  autoencoder-level means, not a hierarchical bootstrap, because K and M are 2-5 here), else the seed,
  and then the mark holds for that one autoencoder only (conditional on it).
- The difference is *resolved* when a two-sided one-sample t-test of the units' differences gives a
  Holm-corrected p < ALPHA across the table's rows, and only with >= MIN_UNITS units; with fewer the
  mark is "direction only (n too small)" with the sign and the share of pairs that agree with it.
- Rows with no common pair fall back to Welch's two-sided t-test between the rows (same Holm and
  MIN_UNITS rule, on the smaller row's n).

Why t-tests and not a bootstrap interval: with 2-5 units a bootstrap interval is degenerate (with n = 2
it is the two values themselves) and too narrow, while the t distribution accounts for the few degrees
of freedom honestly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional

ALPHA = 0.05
MIN_UNITS = 3
RULE = (f"Ours: mean ± standard error over the n runs of a row (no ± when n = 1); 'AE x seeds' counts its "
        f"autoencoders (first_stage_seed) and stage-2 seeds. 'vs default': paired differences against the "
        f"paper-default row over runs sharing (autoencoder, seed), tested per autoencoder when the pairs span "
        f"several, else per seed (then conditional on that one autoencoder); 'better'/'worse' when the "
        f"Holm-corrected p (over the table's rows) < {ALPHA:g} with >= {MIN_UNITS} units (by the metric's "
        f"direction: ↓ lower is better, ↑ higher is better), 'direction only (n too small)' with fewer units, "
        f"else 'not resolved'. Rows without common pairs: Welch's t-test, same rule.")

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
    reason: str = ""  # why not resolved: "n<2", "p", "n too small", "no reference", "reference"
    paper: Optional[str] = None
    unit: str = ""  # what the test resampled: "autoencoders", "seeds (one autoencoder)", "runs (unpaired)"
    units: int = 0
    diff: float = math.nan  # mean difference row - reference (paired) or of the means (unpaired)
    ci: tuple[float, float] = (math.nan, math.nan)  # its t-based 95% interval
    agree: str = ""  # "k/n": pairs whose difference has the sign of the mean difference
    sign: Optional[str] = None  # the direction of diff ("better"/"worse" or "higher"/"lower"), resolved or not

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
        if self.reason == "n too small":
            share = f" in {self.agree} pairs" if self.agree else ""
            return f"direction only (n too small): {self.sign or 'equal'}{share}{paper}"
        if not self.resolved:
            return f"not resolved (Holm {format_p(self.p)}{paper})" if self.unit else \
                f"not resolved ({format_p(self.p)}{paper})"
        if self.unit:
            return f"{self.direction} (Holm {format_p(self.p)}, {self.units} {self.unit}{paper})"
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


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and are not counted)."""
    order = sorted((p, i) for i, p in enumerate(ps) if not _nan(p))
    out, running = [math.nan] * len(ps), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def _t_test(units: list[float]) -> tuple[float, tuple[float, float]]:
    """Two-sided p of a one-sample t-test of `units` against 0, and the 95% interval of their mean."""
    s = summarize(units)
    if s.n < 2:
        return math.nan, (math.nan, math.nan)
    if s.se == 0:
        return (0.0 if s.mean != 0 else 1.0), (s.mean, s.mean)
    from scipy import stats

    return float(2 * stats.t.sf(abs(s.mean / s.se), s.n - 1)), s.ci95


PairKey = tuple  # (first_stage_seed, seed)


def compare_rows(rows: dict[str, dict[PairKey, list[float]]], reference: Optional[str], better: Optional[str], *,
                 paper: Optional[dict[str, Optional[str]]] = None, alpha: float = ALPHA) -> list[Verdict]:
    """The Verdict of every row against `reference` by the module's rule: paired where runs share
    (first_stage_seed, seed), Holm-corrected over the rows, resolved only with >= MIN_UNITS units.

    rows: label -> {pair key: values of the runs with that key} (several values: copies, averaged).
    """
    paper = paper or {}
    ref = {k: sum(v) / len(v) for k, v in (rows.get(reference) or {}).items() if v} if reference else {}
    raw: list[Verdict] = []
    for label, runs in rows.items():
        own = {k: sum(v) / len(v) for k, v in runs.items() if v}
        if label == reference and own:
            raw.append(Verdict(label, False, None, math.nan, "reference", paper.get(label)))
            continue
        if not own:
            raw.append(Verdict(label, False, None, math.nan, "no runs", paper.get(label)))
            continue
        if not ref:
            raw.append(Verdict(label, False, None, math.nan, "no reference", paper.get(label)))
            continue
        common = sorted(set(own) & set(ref))
        if common:
            diffs = {k: own[k] - ref[k] for k in common}
            by_ae: dict[Any, list[float]] = {}
            for (ae, _), d in diffs.items():
                by_ae.setdefault(ae, []).append(d)
            if len(by_ae) > 1:
                units, unit = [sum(v) / len(v) for v in by_ae.values()], "autoencoders"
            else:
                units, unit = list(diffs.values()), "seeds (one autoencoder)"
            mean = sum(units) / len(units)
            p, ci = _t_test(units)
            agree = sum(1 for d in diffs.values() if d != 0 and (d > 0) == (mean > 0))
            share = f"{agree}/{len(diffs)}"
        else:  # nothing shared: the two rows' means, Welch
            a, b = summarize(list(own.values())), summarize(list(ref.values()))
            mean, p, unit, units, share = a.mean - b.mean, welch_p(a, b), "runs (unpaired)", [0.0] * min(a.n, b.n), ""
            ci = (math.nan, math.nan)
        sign = direction_of(mean, 0.0, better)
        raw.append(Verdict(label, False, None, p, "p", paper.get(label), unit, len(units), mean, ci, share, sign))
    adjusted = holm([v.p if v.reason == "p" and v.units >= MIN_UNITS else math.nan for v in raw])
    out = []
    for v, p_adj in zip(raw, adjusted):
        if v.reason != "p":
            out.append(v)
        elif v.units < MIN_UNITS:
            out.append(replace(v, reason="n too small" if v.units >= 1 else "n<2"))
        elif _nan(p_adj) or p_adj >= alpha:
            out.append(replace(v, p=p_adj))
        else:
            out.append(replace(v, resolved=True, direction=v.sign, p=p_adj, reason=""))
    return out


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
