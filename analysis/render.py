"""Tables as Markdown (pipe tables) and LaTeX (booktabs tabular, through pandas' Styler).

The cells are formatted here, not by pandas, whose writers would print NaN as "nan": a missing number
is written as a dash (Markdown "—", LaTeX "--"), never as 0, and paper numbers keep the paper's decimals.
Markdown needs no writer (pandas' to_markdown would need tabulate); LaTeX is Styler.to_latex (Jinja2),
which escapes LaTeX's special characters in cells and headers.
Ours is written "mean ± SE" in one cell (the SE column is folded in; with n = 1 the mean alone), and
each metric's header carries its direction: ↓ lower is better, ↑ higher is better. The table's
numbers, SE columns included, also go to <stem>.csv.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.aggregate import MISSING_TEXT, Table
from analysis.stats import ARROWS

LATEX_MISSING = "--"
# what Styler's LaTeX escaping leaves alone but text mode would not print (applied after it)
_LATEX_SYMBOLS = {"↓": r"$\downarrow$", "↑": r"$\uparrow$", "±": r"$\pm$", "<": r"$<$", ">": r"$>$", "—": "--", "≈": r"$\approx$"}


def format_number(x: Any, decimals: int | None = None, missing: str = MISSING_TEXT, widen: bool = False) -> str:
    """`x` with `decimals` digits; NaN / None -> `missing`; decimals=None: shortest form ("2.56").

    widen: add digits up to 3 significant ones, so small numbers of ours (0.0123) do not print as
    0.0. Paper numbers are not widened: they keep the paper's decimals exactly.
    """
    if x is None or isinstance(x, bool) or not isinstance(x, numbers.Number):
        return missing if x is None else str(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return missing
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if decimals is None:
        return f"{x:g}"
    if widen and x != 0:
        decimals = max(decimals, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def shown_columns(table: Table) -> list[str]:
    """The frame's columns as written: SE columns are folded into their ours column."""
    folded = set(table.errors.values())
    return [c for c in table.frame.columns if c not in folded]


def header(table: Table, column: str) -> str:
    """A column's header: its name, with the metric's direction arrow (↓ / ↑) where it has one."""
    better = table.direction_of_column(column)
    return f"{column} {ARROWS[better]}" if better in ARROWS else str(column)


def cells(table: Table, missing: str = MISSING_TEXT) -> list[list[str]]:
    """The table body as strings, column by column formatted as `table.decimals` says; ours columns
    with an SE column read "mean ± SE" (the mean alone when the SE is undefined, n < 2)."""
    frame = table.frame
    ours = {o for _, o in table.columns.values()}
    columns = []
    for c in shown_columns(table):
        values = frame[c].tolist()
        text = [format_number(v, table.decimals.get(c), missing, widen=c in ours) for v in values]
        if c in table.errors:
            for i, e in enumerate(frame[table.errors[c]].tolist()):
                if text[i] != missing and _finite(e):
                    mean_text, se_text = _with_error(values[i], e, text[i])
                    text[i] = f"{mean_text} ± {se_text}"
        columns.append(text)
    return [list(row) for row in zip(*columns)]


def _finite(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool) and math.isfinite(float(x))


def _with_error(mean: float, se: float, mean_text: str) -> tuple[str, str]:
    """(mean, SE) as text with the same decimals: two significant digits of the SE, at least as many
    decimals as the mean alone would get."""
    decimals = len(mean_text.split(".", 1)[1]) if "." in mean_text else 0
    if se != 0:
        decimals = max(decimals, 1 - math.floor(math.log10(abs(se))))
    return f"{float(mean):.{decimals}f}", f"{float(se):.{decimals}f}"


def alignment(table: Table) -> list[str]:
    """"l" for the label column and text columns, "r" for numbers."""
    return ["l" if i == 0 or not pd.api.types.is_numeric_dtype(table.frame[c]) else "r"
            for i, c in enumerate(shown_columns(table))]


def to_markdown(table: Table, *, heading: bool = True) -> str:
    """A pipe table (first column left-aligned, numbers right-aligned) plus its notes."""
    heads = [header(table, c) for c in shown_columns(table)]
    rows = cells(table)
    lines = [f"### {table.caption}", ""] if heading else []
    lines.append("| " + " | ".join(_md_escape(h) for h in heads) + " |")
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in alignment(table)) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A booktabs `tabular` (needs \\usepackage{booktabs}) written by Styler.to_latex; caption and notes as
    % comments above it, so the file can be \\input into any table float."""
    body = pd.DataFrame(cells(table, missing=LATEX_MISSING), columns=[header(table, c) for c in shown_columns(table)])
    styler = (body.style.hide(axis="index").format(_latex_symbols, escape="latex")
              .format_index(_latex_symbols, escape="latex", axis=1))
    comments = [table.caption] + [n.replace(MISSING_TEXT, LATEX_MISSING) for n in table.notes]
    return "".join(f"% {c}\n" for c in comments) + styler.to_latex(column_format="".join(alignment(table)), hrules=True)


def _latex_symbols(text: str) -> str:
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in text)


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def write(table: Table, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write <stem>.md, <stem>.tex and <stem>.csv (the numbers, SE columns included; stem defaults to
    "table<key>"); returns {"md": path, "tex": path, "csv": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"table{table.key}"
    paths = {"md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex", "csv": out_dir / f"{stem}.csv"}
    paths["md"].write_text(to_markdown(table))
    paths["tex"].write_text(to_latex(table))
    table.frame.to_csv(paths["csv"], index=False)
    return paths
