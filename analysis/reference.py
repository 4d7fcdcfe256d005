"""The papers' published numbers, shipped as CSV beside this module (analysis/reference/*.csv).

Tables print these beside our numbers, so they are read verbatim: the axis value stays a string
("0.0", "5x8x8", "w/o qk-norm") and `raw()` keeps every cell as written, which is how the writers
reproduce the paper's number of decimals ("2.00", not "2.0").
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
NAMES = ("walt_table3", "walt_main_results", "walt_table4_sizes", "latte_sizes")
# columns that name things rather than measure them: never parsed as numbers
_TEXT_COLUMNS = {
    "walt_table3": {"table", "axis", "value", "note"},  # value is the row label: "0.0", "5x8x8"
    "walt_main_results": {"table", "task", "method", "metric"},
    "walt_table4_sizes": {"model", "adaln"},
    "latte_sizes": {"model", "note"},
}


def path(name: str) -> Path:
    """The CSV file of reference table `name` (one of NAMES)."""
    if name not in NAMES:
        raise KeyError(f"unknown reference table {name!r}; available: {', '.join(NAMES)}")
    return REFERENCE_DIR / f"{name}.csv"


@lru_cache(maxsize=None)
def _read(name: str, as_text: bool) -> pd.DataFrame:
    text = pd.read_csv(path(name), dtype=str, keep_default_na=False)
    if as_text:
        return text
    out = text.copy()
    for col in out.columns:
        if col not in _TEXT_COLUMNS[name]:
            out[col] = pd.to_numeric(out[col].replace("", None), errors="raise").astype(float)
    return out


def load(name: str) -> pd.DataFrame:
    """Reference table `name` with measurements as floats (NaN where the paper has no number)."""
    return _read(name, False).copy()


def raw(name: str) -> pd.DataFrame:
    """Reference table `name` exactly as written in the CSV (all strings, "" where empty)."""
    return _read(name, True).copy()


def walt_table3() -> pd.DataFrame:
    """W.A.L.T Table 3 (a)-(f): table, axis, value, fvd, is, steps_per_sec, params_m, rfvd, note."""
    return load("walt_table3")


def walt_main_results() -> pd.DataFrame:
    """W.A.L.T Tables 1, 2, 5, 7: table, task, method, metric, value, params_m, sampling_steps."""
    return load("walt_main_results")


def walt_table4_sizes() -> pd.DataFrame:
    """W.A.L.T Table 4 model sizes (layers, hidden, heads, AdaLN kind, params, FVD, IS, final loss)."""
    return load("walt_table4_sizes")


def latte_sizes() -> pd.DataFrame:
    """Latte model sizes (depth, hidden, heads, patch, params in M)."""
    return load("latte_sizes")


def decimals(text: str) -> int:
    """Digits after the point in a number as written ("2.00" -> 2, "313" -> 0)."""
    return len(text.split(".", 1)[1]) if "." in text else 0
