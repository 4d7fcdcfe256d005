"""Runs -> paper-layout tables and plots (W.A.L.T Table 3 (a)-(f), main results).

collect.collect_runs (run folders -> DataFrame), tables.table3 / main_table.main_results (paper
value beside ours), render.to_markdown / to_latex, plots.plot_table, cli.main (`walt-tables`).
Modules are imported on demand so collecting runs does not pull in matplotlib.
"""
