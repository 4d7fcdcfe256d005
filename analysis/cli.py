"""`walt-tables <sweep-or-runs-dir>`: collect runs, write the paper-layout tables and plots.

Writes into --out (default <dir>/tables): all_runs.csv (every collected run, one row each),
table3X.md / .tex / .png per Table 3 sub-table, main_results.md / .tex; prints the Markdown
tables and where the files went.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import yaml

from analysis import render
from analysis.collect import collect_runs
from analysis.main_table import main_results
from analysis.plots import plot_table
from analysis.tables import TABLE3, table3

TABLE_NAMES = (*TABLE3, "main")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="walt-tables", description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="a sweep or runs directory (searched recursively)")
    p.add_argument("--out", type=Path, help="output folder (default: <root>/tables)")
    p.add_argument("--tables", default=",".join(TABLE_NAMES),
                   help=f"comma-separated subset of {','.join(TABLE_NAMES)} (default: all)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose config KEY equals VALUE (YAML value; repeatable), "
                        "e.g. --where data.dataset=ucf101")
    p.add_argument("--no-control", action="store_true",
                   help="also use runs whose other Table 3 axes are off the paper default")
    p.add_argument("--include-incomplete", action="store_true",
                   help="also use runs without the COMPLETED marker")
    args = p.parse_args(argv)
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in args.tables if t not in TABLE_NAMES]
    if unknown:
        p.error(f"unknown table(s) {unknown}; choose from {', '.join(TABLE_NAMES)}")
    where = {}
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--where expects KEY=VALUE, got {item!r}")
        where[key.strip()] = yaml.safe_load(value)
    args.where = where
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `walt-tables`; returns the exit status."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.root.is_dir():
        print(f"walt-tables: no such directory: {args.root}", file=sys.stderr)
        return 2
    out = args.out or args.root / "tables"
    out.mkdir(parents=True, exist_ok=True)

    runs = collect_runs(args.root)
    skipped = runs.attrs.get("skipped", [])
    csv_path = out / "all_runs.csv"
    runs.to_csv(csv_path, index=False)
    n_done = int(runs["completed"].sum()) if len(runs) else 0
    print(f"collected {len(runs)} run(s) under {args.root}: {n_done} completed, {len(skipped)} unreadable skipped")
    for s in skipped:
        print(f"  skipped {s['run_dir']}: {s['reason']}")

    written = [csv_path]
    options = dict(where=args.where, completed_only=not args.include_incomplete)
    for name in args.tables:
        if name == "main":
            table = main_results(runs, **options)
            written += render.write(table, out, stem="main_results").values()
        else:
            table = table3(runs, name, control=not args.no_control, **options)
            written += render.write(table, out).values()
            written.append(plot_table(table, out / f"table{name}.png"))
        print()
        print(render.to_markdown(table), end="")
    print()
    print(f"wrote {len(written)} file(s) to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
