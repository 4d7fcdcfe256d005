"""Tables as Markdown (pipe tables) and LaTeX (booktabs tabular), with no template engine.

pandas' own writers need optional packages (to_markdown: tabulate, to_latex: jinja2) that the
suite does not depend on, and they would print NaN as "nan": here a missing number is written as a
dash (Markdown "—", LaTeX "--"), never as 0, and paper numbers keep the paper's decimals.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import MISSING_TEXT, Table

LATEX_MISSING = "--"
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--"}


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


def cells(table: Table, missing: str = MISSING_TEXT) -> list[list[str]]:
    """The table body as strings, column by column formatted as `table.decimals` says."""
    frame = table.frame
    ours = {o for _, o in table.columns.values()}
    columns = [[format_number(v, table.decimals.get(c), missing, widen=c in ours) for v in frame[c].tolist()]
               for c in frame.columns]
    return [list(row) for row in zip(*columns)]


def alignment(table: Table) -> list[str]:
    """"l" for the label column and text columns, "r" for numbers."""
    return ["l" if i == 0 or not pd.api.types.is_numeric_dtype(table.frame[c]) else "r"
            for i, c in enumerate(table.frame.columns)]


def to_markdown(table: Table, *, heading: bool = True) -> str:
    """A pipe table (first column left-aligned, numbers right-aligned) plus its notes."""
    header = [str(c) for c in table.frame.columns]
    rows = cells(table)
    lines = [f"### {table.caption}", ""] if heading else []
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in alignment(table)) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A booktabs `tabular` (needs \\usepackage{booktabs}); caption and notes as % comments."""
    header = [latex_escape(str(c)) for c in table.frame.columns]
    rows = cells(table, missing=LATEX_MISSING)
    lines = [f"% {table.caption}"] + [f"% {n.replace(MISSING_TEXT, LATEX_MISSING)}" for n in table.notes]
    lines.append(r"\begin{tabular}{" + "".join(alignment(table)) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(header) + r" \\")
    lines.append(r"\midrule")
    for row in rows:
        lines.append(" & ".join(c if c == LATEX_MISSING else latex_escape(c) for c in row) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def write(table: Table, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write <stem>.md and <stem>.tex (stem defaults to "table<key>"); returns {"md": path, "tex": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"table{table.key}"
    paths = {"md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex"}
    paths["md"].write_text(to_markdown(table))
    paths["tex"].write_text(to_latex(table))
    return paths
