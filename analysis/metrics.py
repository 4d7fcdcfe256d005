"""Which number in results.json stands for each quantity the paper reports, and how to label it.

The paper's FVD is I3D FVD. Runs without the I3D weights report `fvd_synth` (a Frechet distance
of a synthetic-data feature extractor): it may fill the "ours" column only under its own name, so
no one reads it as I3D FVD. Sources are tried in order; the first one any run of a table reports
is used for the whole column, never a per-row mixture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Quantity:
    """A paper column: its reference-CSV name, display label and results.json sources."""

    name: str
    label: str
    sources: tuple[str, ...]
    scale: float = 1.0  # ours = results value * scale (params -> millions)
    comparable: bool = True  # ours and paper share units (false for hardware-bound numbers)


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("fvd", "FVD", ("fvd", "fvd_synth")),
        Quantity("is", "IS", ("is", "is_c3d", "isc", "is_synth")),
        Quantity("fid", "FID", ("fid", "fid_synth")),
        Quantity("rfvd", "rFVD", ("rfvd", "rfvd_synth")),
        Quantity("steps_per_sec", "steps/s", ("steps_per_sec",), comparable=False),
        Quantity("params_m", "params [M]", ("params",), scale=1e-6, comparable=False),
    )
}


def is_synthetic(source: str) -> bool:
    """Numbers measured with the synthetic-data extractor, not the paper's network."""
    return source.endswith("_synth")


def source_label(quantity: Quantity, source: str) -> str:
    """Column label of `source`: the paper's label, or e.g. "FVD_synth" for synthetic metrics."""
    return f"{quantity.label}_synth" if is_synthetic(source) else quantity.label


def value(run: Mapping[str, Any], quantity: Quantity, source: str) -> float:
    """The run's number for `quantity` read from `source` (NaN when the run lacks it)."""
    raw = run.get(source)
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
