"""PNG plots of tables: each metric along the table's axis, paper and ours in separate panels.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed).
One y axis per panel, never twin axes: the paper's numbers are in the top row, ours (mean with
± 1 standard-error bars over seeds) in the bottom row, one column per metric, so a scale is never
shared by numbers that cannot be compared. Each panel's title carries the metric's direction
(↓ lower is better, ↑ higher is better); rows resolved beyond noise against the reference row are
marked (* better / worse, see analysis.stats). Missing runs are NaN and simply not drawn; a table
without runs is not plotted at all (the CLI skips it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.aggregate import Table
from analysis.metrics import QUANTITIES, arrow, direction_text

PAPER_STYLE = dict(color="C0", marker="o", linestyle="-")
OURS_STYLE = dict(color="C1", marker="s", linestyle="--", capsize=4)
ERROR_BARS = "error bars: ± 1 standard error over the n runs (seeds) of a row"


def plot_table(table: Table, path: str | Path) -> Path:
    """The default plot of `table` (see quantities_figure)."""
    return save(quantities_figure(table), path)


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def _values(table: Table, column: str | None) -> list[float]:
    if column is None:
        return []
    return [float(v) for v in table.frame[column].tolist()]


def _has(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def quantities_figure(table: Table, quantities: Sequence[str] | None = None) -> Figure:
    """Top row: the paper's number per quantity; bottom row: ours, mean ± SE; one column per quantity."""
    quantities = [q for q in (quantities or table.columns)
                  if _has(_values(table, table.columns[q][0])) or _has(_values(table, table.columns[q][1]))]
    has_paper = any(_has(_values(table, table.columns[q][0])) for q in quantities)
    nrows = 2 if has_paper else 1
    fig = Figure(figsize=(3.9 * max(1, len(quantities)), 3.1 * nrows + 0.6))
    grid = fig.subplots(nrows, max(1, len(quantities)), squeeze=False)
    for j, q in enumerate(quantities):
        paper_col, ours_col = table.columns[q]
        quantity = QUANTITIES.get(q)
        mark = f" {arrow(quantity)}" if quantity and arrow(quantity) else ""
        if has_paper:
            ax = grid[0][j]
            values = _values(table, paper_col)
            if _has(values):
                ax.plot(range(len(values)), values, label=paper_col, **PAPER_STYLE)
                ax.set_title(f"{paper_col}{mark}", fontsize=9)
                _axis(ax, table, quantity)
            else:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{quantity.label if quantity else q}: no paper value", transform=ax.transAxes,
                        ha="center", va="center", color="0.5", fontsize=8)
        ax = grid[-1][j]
        means = _values(table, ours_col)
        se = [0.0 if math.isnan(e) else e for e in _values(table, table.errors.get(ours_col))] or None
        ax.errorbar(range(len(means)), means, yerr=se, label=ours_col, **OURS_STYLE)
        _marks(ax, table, q, means)
        ax.set_title(f"{ours_col}{mark.rstrip()}, mean ± SE", fontsize=9)
        _axis(ax, table, quantity)
    fig.suptitle(f"{table.caption}\n{ERROR_BARS}; * = differs from the default row beyond noise", fontsize=9)
    fig.tight_layout()
    return fig


def _marks(ax: Axes, table: Table, q: str, means: Sequence[float]) -> None:
    if q in table.uninformative:
        ax.text(0.5, 0.92, "≈ untrained: not evidence", transform=ax.transAxes, ha="center", fontsize=7, color="C3")
        return
    for i, verdict in enumerate(table.verdicts.get(q, [])):
        if verdict.resolved and i < len(means) and not math.isnan(means[i]):
            ax.annotate(f"* {verdict.direction}", (i, means[i]), textcoords="offset points", xytext=(4, 6),
                        fontsize=7, color="C3")


def _axis(ax: Axes, table: Table, quantity) -> None:
    labels = [str(v) for v in table.frame[table.axis_column]]
    ax.set_xticks(range(len(labels)), labels, rotation=25 if max(map(len, labels), default=0) > 6 else 0,
                  fontsize=7, ha="right" if max(map(len, labels), default=0) > 6 else "center")
    ax.set_xlabel(table.axis_column, fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    if quantity is not None and quantity.better:
        ax.set_ylabel(direction_text(quantity), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    try:  # an offset ("1e-5+1") would overlap the title
        ax.ticklabel_format(axis="y", useOffset=False)
    except AttributeError:  # not a ScalarFormatter
        pass


def series_figure(title: str, panels: dict[str, dict[str, tuple[list, list, list]]], *, xlabel: str,
                  directions: dict[str, str | None] | None = None) -> Figure:
    """One panel per metric, one line per series: panels[metric][series] = (x, mean, se).

    Used for metric-vs-step plots (analysis.checkpoints); se may hold NaN (no bar).
    """
    directions = directions or {}
    names = list(panels)
    fig = Figure(figsize=(4.4 * max(1, len(names)), 3.6))
    for ax, metric in zip(fig.subplots(1, max(1, len(names)), squeeze=False)[0], names):
        for i, (series, (x, y, e)) in enumerate(panels[metric].items()):
            err = [0.0 if math.isnan(v) else v for v in e]
            ax.errorbar(x, y, yerr=err if any(err) else None, label=series, marker="o", capsize=3,
                        color=f"C{i % 10}")
        better = directions.get(metric)
        ax.set_title(f"{metric} {'↓' if better == 'lower' else '↑' if better == 'higher' else ''}".rstrip(),
                     fontsize=9)
        if better:
            ax.set_ylabel(f"{better} is better", fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
