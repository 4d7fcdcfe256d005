"""`walt-tables <sweep-or-runs dir>...`: collect runs, write the tables the runs fill, with plots.

    walt-tables outputs/multirun/demo                 every table the sweep ran, no flags needed
    walt-tables outputs/multirun --tables 3a,3c       those tables (written when any row has runs)
    walt-tables --checkpoints outputs/runs/a outputs/runs/b    metric against checkpoint step
    walt-tables --replicate sweep_a sweep_b            do two sweeps of one preset draw the same conclusions?

Writes into --out (default <dir>/tables):
  all_runs.csv            one row per run: run_dir, status, the config keys that differ between runs,
                          metrics, results fields, then other differing columns; paths relative to <dir>
  all_runs_constants.csv  every column with one value in all runs (column, value)
  table3X.md/.tex/.csv/.png, main_results.md/.tex/.csv, tablelayouts.md/.tex/.csv/.png
  summary.json            per table and metric: each row's n, mean, SE, verdict against the default row
                          (better / worse / not resolved), p, the paper's direction and agreement
Which tables: by default (--tables auto) every Table 3 sub-table whose rows are filled for at least
two values of its axis (the sweep varied it), the cross-paper layout table when runs use at least two
layouts, and the main-results table when any of its rows has runs; a table left out is named with the
reason, and its old files in --out are removed. Rows: mean ± standard error over seeds, n, and a
resolved / not-resolved mark against the paper-default row (analysis.stats). Which runs a table
compares: the control rule (analysis.control), explained in every table's notes.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import yaml

from analysis import render
from analysis.collect import collect_many, common_root, write_runs_csv
from analysis.control import MODES
from analysis.tables import TABLE3

TABLE_NAMES = (*TABLE3, "main", "layouts")
CONTROL_HELP = (
    "which runs a table compares (default auto): auto = hold every other varying config key at one value "
    "(another Table 3 axis at the paper default when that fills as many rows as any value, else at the "
    "value that fills the most rows); seeds are replicates; paper = other Table 3 axes at the paper default only; none = every "
    "matching run")
_STEMS = {"main": "main_results"}
SUMMARY = "summary.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="walt-tables", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("roots", nargs="+", type=Path, metavar="DIR",
                   help="sweep or runs directories (searched recursively); with --checkpoints: run directories")
    p.add_argument("--out", type=Path, help="output folder (default: <DIR>/tables, or <common parent>/tables; "
                                            "with --checkpoints <common parent>/checkpoint_tables)")
    p.add_argument("--tables", default="auto",
                   help=f"auto (default: the tables the runs fill), all, or a comma-separated subset of "
                        f"{','.join(TABLE_NAMES)}")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose config KEY equals VALUE (YAML value; repeatable), "
                        "e.g. --where data.dataset=ucf101")
    p.add_argument("--control", choices=MODES, default="auto", help=CONTROL_HELP)
    p.add_argument("--no-control", action="store_true", help="same as --control none")
    p.add_argument("--include-incomplete", action="store_true",
                   help="also use runs without the COMPLETED marker (or with failure.json)")
    p.add_argument("--baseline", type=Path, metavar="RUN_DIR",
                   help="an untrained model's evaluated run dir (walt-demo's demo_baseline): metrics that do not "
                        "separate trained rows from it are marked (uninformative: a row no better; not shown better: "
                        "better, but not beyond seed noise)")
    p.add_argument("--checkpoints", action="store_true",
                   help="metric-against-step tables and plots from results.json `checkpoints` of the given runs")
    p.add_argument("--replicate", action="store_true",
                   help="two sweep directories of one preset (two machines, two first_stage_seed values): build each "
                        "one's tables and report, row by row, whether the directions agree, the intervals overlap and "
                        "the resolved conclusions replicate (replication.md in --out)")
    p.add_argument("--metrics", default="",
                   help="with --checkpoints: comma-separated metrics to include (default: all evaluated)")
    args = p.parse_args(argv)
    if args.no_control:
        args.control = "none"
    text = args.tables.strip()
    args.auto = text == "auto"
    if text in ("auto", "all"):
        args.tables = list(TABLE_NAMES)
    else:
        args.tables = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in args.tables if t not in TABLE_NAMES]
    if unknown:
        p.error(f"unknown table(s) {unknown}; choose from auto, all, {', '.join(TABLE_NAMES)}")
    where = {}
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--where expects KEY=VALUE, got {item!r}")
        where[key.strip()] = yaml.safe_load(value)
    args.where = where
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    return args


def build(name: str, runs, args):
    """Table `name` from the collected runs under the CLI's options."""
    options = dict(where=args.where, completed_only=not args.include_incomplete)
    if name == "main":
        from analysis.main_table import main_results

        return main_results(runs, **options)
    if name == "layouts":
        from analysis.layouts import layout_table

        return layout_table(runs, control=args.control, **options)
    from analysis.tables import table3

    return table3(runs, name, control=args.control, **options)


def wanted(name: str, table, auto: bool) -> tuple[bool, str]:
    """(write it?, why not): auto mode needs the axis varied (>= 2 filled rows; main: any row)."""
    filled = table.filled_rows
    if not filled:
        return False, "no runs" + (": " + "; ".join(table.diagnostics) if table.diagnostics else "")
    if auto and name != "main" and len(filled) < 2:
        why = "; ".join(table.diagnostics) or f"only row {filled[0]} has runs"
        return False, f"{why} (--tables {name} writes it anyway)"
    return True, ""


def _stale(out: Path, name: str) -> list[Path]:
    stem = _STEMS.get(name, f"table{name}")
    return [out / f"{stem}.{ext}" for ext in ("md", "tex", "csv", "png") if (out / f"{stem}.{ext}").exists()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `walt-tables`; returns the exit status (2: a directory is missing; 1: tables were
    asked for by name and none could be written)."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [r for r in args.roots if not r.is_dir()]
    if missing:
        print(f"walt-tables: no such directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    root = Path(common_root(args.roots))
    if args.checkpoints:
        return _checkpoints(args, args.out or root / "checkpoint_tables")
    if args.replicate:
        return _replicate(args, args.out or root / "replication")
    out = args.out or root / "tables"

    baseline = None
    if args.baseline is not None:
        from analysis.collect import read_run

        if not (args.baseline / "results.json").exists():
            print(f"walt-tables: --baseline {args.baseline} has no results.json", file=sys.stderr)
            return 2
        baseline = read_run(args.baseline)
    runs = collect_many(args.roots)
    skipped = runs.attrs.get("skipped", [])
    written = write_runs_csv(runs, out, root)
    n_done = int(runs["completed"].sum()) if len(runs) else 0
    print(f"collected {len(runs)} run(s) under {', '.join(map(str, args.roots))}: {n_done} completed, "
          f"{len(skipped)} unreadable skipped")
    for s in skipped:
        print(f"  skipped {s['run_dir']}: {s['reason']}")
    print(f"control rule ({args.control}): {_rule_line(args.control)}")

    left_out, summary = [], {}
    for name in args.tables:
        table = build(name, runs, args)
        ok, why = wanted(name, table, args.auto)
        if not ok:
            left_out.append((name, why))
            if args.auto:
                for path in _stale(out, name):
                    path.unlink()
            continue
        if baseline is not None and name != "main":
            from analysis.aggregate import check_against_baseline

            check_against_baseline(table, baseline)
        stem = _STEMS.get(name, f"table{name}")
        written += render.write(table, out, stem=stem).values()
        if name != "main":
            from analysis.plots import plot_table

            written.append(plot_table(table, out / f"{stem}.png"))
        if name != "main":
            summary[name] = {q: table.summary(q) for q in table.marks}
        print()
        print(render.to_markdown(table), end="")
    summary_path = out / SUMMARY
    if summary:
        summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        written.append(summary_path)
    elif summary_path.exists():
        summary_path.unlink()
    print()
    if left_out:
        print("tables not written:")
        for name, why in left_out:
            print(f"  {name}: {why}")
    print(f"wrote {len(written)} file(s) to {out}:")
    for path in written:
        print(f"  {path}")
    if not args.auto and len(left_out) == len(args.tables):
        return 1
    return 0


def summaries(runs, args) -> dict:
    """Table -> metric -> Table.summary of every table the runs fill (as summary.json holds)."""
    out = {}
    for name in args.tables:
        if name == "main":
            continue
        table = build(name, runs, args)
        if wanted(name, table, args.auto)[0]:
            out[name] = {q: table.summary(q) for q in table.marks}
    return out


def _replicate(args, out: Path) -> int:
    from analysis.replicate import compare_summaries, report

    if len(args.roots) != 2:
        print(f"walt-tables --replicate takes two sweep directories, got {len(args.roots)}", file=sys.stderr)
        return 2
    a, b = (summaries(collect_many([root]), args) for root in args.roots)
    if not a and not b:
        print("walt-tables --replicate: neither directory fills a table", file=sys.stderr)
        return 1
    text = report(compare_summaries(a, b), str(args.roots[0]), str(args.roots[1]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "replication.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / 'replication.md'}")
    return 0


def _rule_line(mode: str) -> str:
    if mode == "auto":
        return ("each table compares runs that differ in its own axis (and seed, the replicates); every other "
                "config key that varies is held at one value: the paper default when it fills as many rows as "
                "any value, else the value that fills the most rows. Each table's notes say what was held.")
    if mode == "paper":
        return "each table keeps runs whose other Table 3 axes are at the paper default (absent = default)."
    return "no filter: a row averages every run that matches it."


def _checkpoints(args, out: Path) -> int:
    from analysis.checkpoints import write_checkpoint_tables

    written, tables = write_checkpoint_tables(args.roots, out, args.metrics or None)
    if not tables:
        print("walt-tables --checkpoints: no evaluated checkpoints (results.json `checkpoints`, or metrics with "
              "a global_step) in " + ", ".join(map(str, args.roots))
              + ("; --metrics " + ",".join(args.metrics) + " matched none" if args.metrics else "")
              + ". Evaluate checkpoints first: walt-eval <run> ckpt=all", file=sys.stderr)
        return 1
    for table in tables:
        print()
        print(render.to_markdown(table), end="")
    print()
    print(f"wrote {len(written)} file(s) to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
