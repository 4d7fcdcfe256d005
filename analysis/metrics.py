"""Which number in results.json stands for each quantity the paper reports, and how to label it.

The paper's FVD is I3D FVD. Runs without the I3D weights report `fvd_synth` (a Frechet distance
of a synthetic-data feature extractor): it may fill the "ours" column only under its own name, so
no one reads it as I3D FVD. Sources are tried in order; the first one any run of a table reports
is used for the whole column, never a per-row mixture.

Reconstruction quantities (rFVD) belong to the first stage: a stage-2 run carries its autoencoder's
metrics prefixed `first_stage/` (`first_stage/rfvd_synth`), an autoencoder run has them unprefixed;
`value` reads either (analysis.collect renames the unprefixed copies old stage-2 runs carry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from analysis.stats import ARROWS, HIGHER, LOWER

FIRST_STAGE = "first_stage/"


@dataclass(frozen=True)
class Quantity:
    """A paper column: its reference-CSV name, display label and results.json sources."""

    name: str
    label: str
    sources: tuple[str, ...]
    scale: float = 1.0  # ours = results value * scale (params -> millions)
    comparable: bool = True  # ours and paper share units (false for hardware-bound numbers)
    better: Optional[str] = None  # "lower" / "higher" is better; None: no direction (parameters)
    first_stage: bool = False  # a property of the autoencoder: stage-2 runs carry it as first_stage/<source>
    tested: bool = True  # noisy across seeds: rows are compared with the default row (marks)


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("fvd", "FVD", ("fvd", "fvd_synth"), better=LOWER),
        Quantity("is", "IS", ("is", "is_c3d", "isc", "is_synth"), better=HIGHER),
        Quantity("fid", "FID", ("fid", "fid_synth"), better=LOWER),
        Quantity("rfvd", "rFVD", ("rfvd", "rfvd_synth"), better=LOWER, first_stage=True, tested=False),
        Quantity("acc", "class acc", ("synth_acc",), better=HIGHER),
        # the same classifier on real clips: the ceiling class acc is read against (not a model property)
        Quantity("acc_real", "class acc real clips", ("synth_acc_real",), better=HIGHER, tested=False),
        Quantity("steps_per_sec", "steps/s", ("steps_per_sec",), comparable=False, better=HIGHER, tested=False),
        Quantity("peak_memory_gib", "peak memory [GiB]", ("peak_memory_bytes",), scale=2.0 ** -30,
                 comparable=False, better=LOWER, tested=False),
        Quantity("params_m", "params [M]", ("params",), scale=1e-6, comparable=False, tested=False),
    )
}


def is_synthetic(source: str) -> bool:
    """Numbers measured with the synthetic-data extractor, not the paper's network."""
    return source.endswith("_synth") or source.startswith("synth_")


def source_label(quantity: Quantity, source: str) -> str:
    """Column label of `source`: the paper's label, or e.g. "FVD_synth" for synthetic metrics."""
    if quantity.name in ("acc", "acc_real"):
        return quantity.label
    return f"{quantity.label}_synth" if is_synthetic(source) else quantity.label


def arrow(quantity: Quantity) -> str:
    """"↓" (lower is better), "↑" (higher is better) or "" (no direction)."""
    return ARROWS.get(quantity.better, "")


def direction_text(quantity: Quantity) -> str:
    return f"{quantity.better} is better" if quantity.better else ""


def value(run: Mapping[str, Any], quantity: Quantity, source: str) -> float:
    """The run's number for `quantity` read from `source` (NaN when the run lacks it).

    First-stage quantities also look under `first_stage/<source>` (a stage-2 run's copy).
    """
    raw = run.get(source)
    if quantity.first_stage and _missing(raw):
        raw = run.get(FIRST_STAGE + source)
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return math.nan
    return number * quantity.scale if math.isfinite(number) else math.nan


def choose_source(quantity: Quantity, runs: Iterable[Mapping[str, Any]]) -> str:
    """The first source in preference order that any of `runs` reports (else the first source)."""
    runs = list(runs)
    for source in quantity.sources:
        if any(not math.isnan(value(r, quantity, source)) for r in runs):
            return source
    return quantity.sources[0]


def _missing(raw: Any) -> bool:
    return raw is None or (isinstance(raw, float) and math.isnan(raw))
