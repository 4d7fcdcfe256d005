"""PNG plots of the Table 3 sub-tables: paper vs ours along the ablation axis.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed).
Ours goes on its own (twin) y axis whenever its number is not in the paper's units (synthetic
metrics, throughput on other hardware, parameters at our model size), so a shared scale never
suggests a comparison the numbers cannot bear. Missing runs are NaN and simply not drawn.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.metrics import QUANTITIES, is_synthetic
from analysis.tables import Table

PAPER_STYLE = dict(color="C0", marker="o", linestyle="-")
OURS_STYLE = dict(color="C1", marker="s", linestyle="--")


def plot_table(table: Table, path: str | Path) -> Path:
    """The default plot of `table`: the FVD/steps-s trade-off for 3b, paper vs ours panels otherwise."""
    if table.key == "3b" and "steps_per_sec" in table.columns:
        fig = speed_tradeoff_figure(table)
    else:
        fig = quantities_figure(table)
    return save(fig, path)


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def quantities_figure(table: Table, quantities: Sequence[str] | None = None) -> Figure:
    """One panel per quantity (FVD, IS, extras): metric vs axis value, paper beside ours."""
    quantities = list(quantities or table.columns)
    fig = Figure(figsize=(4.2 * len(quantities), 3.6))
    for ax, q in zip(fig.subplots(1, len(quantities), squeeze=False)[0], quantities):
        paper_col, ours_col = table.columns[q]
        shared = QUANTITIES[q].comparable and not is_synthetic(table.sources[q])
        ours_ax = ax if shared else ax.twinx()
        lines = _series(ax, table, paper_col, PAPER_STYLE) + _series(ours_ax, table, ours_col, OURS_STYLE)
        ax.set_ylabel(QUANTITIES[q].label if shared else paper_col, color="black" if shared else "C0")
        if not shared:
            ours_ax.set_ylabel(ours_col, color="C1")
        _axis_ticks(ax, table)
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
        _no_runs(ax, table, ours_col)
    fig.suptitle(table.caption, fontsize=10)
    fig.tight_layout()
    return fig


def speed_tradeoff_figure(table: Table) -> Figure:
    """Table 3b: FVD (left axis) and steps/s (twin axis) vs ST window, one panel paper, one ours."""
    fvd_paper, fvd_ours = table.columns["fvd"]
    sps_paper, sps_ours = table.columns["steps_per_sec"]
    fig = Figure(figsize=(9.5, 3.8))
    for ax, (title, fvd, sps) in zip(fig.subplots(1, 2), (("paper", fvd_paper, sps_paper),
                                                            ("ours", fvd_ours, sps_ours))):
        twin = ax.twinx()
        lines = _series(ax, table, fvd, PAPER_STYLE) + _series(twin, table, sps, dict(OURS_STYLE, color="C2"))
        ax.set_ylabel(fvd, color="C0")
        twin.set_ylabel(sps, color="C2")
        ax.set_title(title, fontsize=10)
        _axis_ticks(ax, table)
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
        _no_runs(ax, table, fvd, sps)
    fig.suptitle(table.caption, fontsize=10)
    fig.tight_layout()
    return fig


def _series(ax: Axes, table: Table, column: str, style: dict) -> list:
    x = list(range(len(table.frame)))
    return ax.plot(x, table.frame[column].astype(float).tolist(), label=column, **style)


def _axis_ticks(ax: Axes, table: Table) -> None:
    labels = [str(v) for v in table.frame[table.axis_column]]
    ax.set_xticks(range(len(labels)), labels, rotation=20 if max(map(len, labels)) > 6 else 0, fontsize=8)
    ax.set_xlabel(table.axis_column)
    ax.set_xlim(-0.5, len(labels) - 0.5)


def _no_runs(ax: Axes, table: Table, *columns: str) -> None:
    if all(all(math.isnan(v) for v in table.frame[c].astype(float)) for c in columns):
        ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center", color="0.5")
