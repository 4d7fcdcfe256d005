"""Runs -> paper-layout tables and plots (W.A.L.T Table 3 (a)-(f), main results, cross-paper layouts).

collect (run folders -> DataFrame; all_runs.csv + constants), control (which runs a table compares),
stats (mean ± SE, n, Welch marks), tables.table3 / main_table.main_results / layouts.layout_table
(paper value beside ours), checkpoints (metric against step), render.to_markdown / to_latex / write,
plots, cli.main (`walt-tables`). Modules are imported on demand so collecting runs does not pull in
matplotlib. Reads run directories only: from walt, only walt.runs.
"""
