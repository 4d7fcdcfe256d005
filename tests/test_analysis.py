"""Analysis package: run collection, W.A.L.T Table 3 in the paper's layout, writers, plots, CLI.

The fixture is one runs folder holding every Table 3 sweep (as a real `multirun/` would), built
with tmp_path: runs are config.yaml + results.json + COMPLETED, exactly what walt.train leaves.
"""
from __future__ import annotations

import copy
import json
import logging
import math

import pandas as pd
import pytest
import yaml

from analysis import reference, render
from analysis.cli import main
from analysis.collect import collect_runs
from analysis.main_table import main_results
from analysis.plots import plot_table
from analysis.matching import window_label
from analysis.tables import TABLE3, table3, table3_all


def md_cells(table):
    """The Markdown body of `table` as dicts column name (header without its direction arrow) -> cell."""
    lines = render.to_markdown(table).splitlines()
    header = [c.strip().removesuffix(" ↓").removesuffix(" ↑") for c in lines[2].strip("|").split("|")]
    rows = [line for line in lines if line.startswith("| ")][1:]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in rows]

BASE = {
    "stage": "diffusion",
    "seed": 0,
    "data": {"dataset": "synthetic", "num_frames": 17},
    "model": {"patch_size": 1, "st_window": [5, 8, 8], "layout": "walt", "self_cond_prob": 0.9,
              "adaln_lora_rank": 2, "qk_norm": True, "depth": 2, "hidden_size": 64},
    "autoencoder": {"latent_channels": 8, "normalize_latents": True},
    "diffusion": {"zero_terminal_snr": True},
}


def make_run(root, name, overrides=None, metrics=None, *, completed=True, failed=False, base=BASE, **results):
    """A run directory as walt.train writes it; `overrides` are dotted config keys."""
    cfg = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    payload = {"stage": cfg["stage"], "metrics": metrics or {}, "global_step": 100, "params": 1_000_000,
               "wall_time_s": 10.0, "steps_per_sec": 2.0, "peak_memory_bytes": None,
               "overrides": [f"{k}={v}" for k, v in (overrides or {}).items()]}
    payload.update(results)
    (run / "results.json").write_text(json.dumps(payload))
    if completed:
        (run / "COMPLETED").write_text("ok\n")
    if failed:
        (run / "failure.json").write_text(json.dumps({"error": "boom"}))
    return run


def synth(fvd, is_=80.0):
    return {"fvd_synth": fvd, "is_synth": is_, "train/loss": 0.1}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun")
    # the baseline (paper defaults), two seeds: the default row of every sub-table
    for seed, (fvd, is_, sps) in enumerate(((10.0, 50.0, 2.0), (12.0, 52.0, 2.2))):
        run = make_run(root, f"baseline/{seed}", {"seed": seed}, synth(fvd, is_), steps_per_sec=sps)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text("model: ${oops}\n")  # Hydra's unresolved copy
    make_run(root, "t3a/p2", {"model.patch_size": 2}, synth(20.0))
    make_run(root, "t3a/p4_running", {"model.patch_size": 4}, synth(999.0), completed=False)
    make_run(root, "t3a/p4_failed", {"model.patch_size": 4}, synth(998.0), failed=True)
    make_run(root, "t3b/w544", {"model.st_window": [5, 4, 4]}, synth(30.0), steps_per_sec=3.0)
    make_run(root, "t3b/full", {"model.layout": "full"}, synth(40.0), steps_per_sec=1.0)
    make_run(root, "t3c/p00", {"model.self_cond_prob": 0.0}, synth(50.0))
    make_run(root, "t3c/p03", {"model.self_cond_prob": 0.3}, synth(45.0))
    for r, params in ((4, 1_100_000), (16, 1_500_000), (64, 2_000_000)):
        make_run(root, f"t3d/r{r}", {"model.adaln_lora_rank": r}, synth(10.0 + r), params=params)
    make_run(root, "t3e/noqk", {"model.qk_norm": False}, synth(14.0))
    make_run(root, "t3e/nozt", {"diffusion.zero_terminal_snr": False}, synth(33.0))
    make_run(root, "t3f/c4", {"autoencoder.latent_channels": 4}, synth(25.0))
    ae = {"stage": "autoencoder", "seed": 0, "data": BASE["data"], "autoencoder": {"latent_channels": 8}}
    make_run(root, "ae/c4", {"autoencoder.latent_channels": 4}, {"rfvd": 40.0, "psnr": 20.0}, base=ae)
    make_run(root, "ae/c8", {}, {"rfvd": 6.0}, base=ae)
    corrupt = root / "t3a" / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text(yaml.safe_dump(BASE))
    (corrupt / "results.json").write_text('{"metrics": {"fvd_synth": 1.')  # half-written
    return root


@pytest.fixture(scope="module")
def runs(runs_root):
    return collect_runs(runs_root)


# ours per sub-table: row -> (FVD_synth mean, n); rows absent here must be missing
EXPECTED_FVD = {
    "3a": {"1": (11.0, 2), "2": (20.0, 1)},
    "3b": {"5x4x4": (30.0, 1), "5x8x8": (11.0, 2), "full": (40.0, 1)},
    "3c": {"0.0": (50.0, 1), "0.3": (45.0, 1), "0.9": (11.0, 2)},
    "3d": {"2": (11.0, 2), "4": (14.0, 1), "16": (26.0, 1), "64": (74.0, 1)},
    "3e": {"w/o qk-norm": (14.0, 1), "w/o zero terminal SNR": (33.0, 1), "full method": (11.0, 2)},
    "3f": {"4": (25.0, 1), "8": (11.0, 2)},
}


def test_collect_flattens_config_and_results(runs):
    assert len(runs) == 17 and runs.attrs["skipped"] and len(runs.attrs["skipped"]) == 1
    base = runs[runs["run_dir"].str.endswith("baseline/0")].iloc[0]
    assert base["completed"] and not base["failed"]
    assert base["model.patch_size"] == 1 and base["model.st_window"] == (5, 8, 8)
    assert base["autoencoder.latent_channels"] == 8 and base["fvd_synth"] == 10.0
    assert base["train/loss"] == 0.1 and base["params"] == 1_000_000 and base["global_step"] == 100
    assert {"steps_per_sec", "wall_time_s", "peak_memory_bytes"} <= set(runs.columns)
    assert not runs["run_dir"].str.contains(".hydra", regex=False).any()
    failed = runs[runs["run_dir"].str.endswith("p4_failed")].iloc[0]
    assert failed["failed"] and failed["completed"]


def test_collect_skips_corrupt_results_with_warning(tmp_path, caplog):
    make_run(tmp_path, "good", {}, synth(1.0))
    bad = make_run(tmp_path, "bad", {}, synth(2.0))
    (bad / "results.json").write_text('{"metrics": ')
    half_cfg = make_run(tmp_path, "half_cfg", {}, synth(3.0))
    (half_cfg / "config.yaml").write_text("model: {patch_size: [1,\n")
    (tmp_path / "running").mkdir()  # config written, no results yet: kept, not completed
    (tmp_path / "running" / "config.yaml").write_text(yaml.safe_dump(BASE))
    with caplog.at_level(logging.WARNING, logger="analysis.collect"):
        runs = collect_runs(tmp_path)
    assert sorted(runs["run_dir"].map(lambda p: p.rsplit("/", 1)[-1])) == ["good", "running"]
    assert [s["run_dir"].rsplit("/", 1)[-1] for s in runs.attrs["skipped"]] == ["bad", "half_cfg"]
    assert "bad" in caplog.text and "results.json" in caplog.text
    assert not runs.set_index(runs["run_dir"].str.rsplit("/", n=1).str[-1]).at["running", "completed"]


def test_table3_every_subtable_in_paper_layout(runs):
    ref = reference.walt_table3()
    text = reference.raw("walt_table3")
    tables = table3_all(runs)
    assert list(tables)[:6] == ["3a", "3b", "3c", "3d", "3e", "3f"]  # the paper's first, then ours
    assert not any(TABLE3[k].paper for k in list(tables)[6:])
    tables = {k: t for k, t in tables.items() if TABLE3[k].paper}
    for key, table in tables.items():
        frame, paper = table.frame, ref[ref["table"] == key]
        assert frame[table.axis_column].tolist() == paper["value"].tolist()  # the paper's row order
        fvd_paper, fvd_ours = table.columns["fvd"]
        assert (fvd_paper, fvd_ours) == ("FVD (paper)", "FVD_synth (ours)")
        assert table.columns["is"] == ("IS (paper)", "IS_synth (ours)")
        assert "FVD (ours)" not in frame.columns and any("not the paper's FVD" in n for n in table.notes)
        for q, (paper_col, _) in table.columns.items():  # paper values copied exactly
            assert frame[paper_col].tolist() == pytest.approx(paper[q].tolist(), nan_ok=True, abs=0)
        expected = EXPECTED_FVD[key]
        for i, label in enumerate(frame[table.axis_column]):
            if label in expected:
                assert frame.at[i, fvd_ours] == pytest.approx(expected[label][0])
                assert frame.at[i, "n"] == expected[label][1]
            else:  # missing, never zero
                assert math.isnan(frame.at[i, fvd_ours]) and math.isnan(frame.at[i, "IS_synth (ours)"])
                assert frame.at[i, "n"] == 0

        raw = text[text["table"] == key].reset_index(drop=True)
        for i, cells in enumerate(md_cells(table)):
            for q, (paper_col, ours_col) in table.columns.items():
                assert cells[paper_col] == raw.at[i, q]  # e.g. "2.00", as printed in the paper
                if math.isnan(frame.at[i, ours_col]):
                    assert cells[ours_col] == "—"
        tex = render.to_latex(table)
        assert r"\toprule" in tex and r"\bottomrule" in tex and "FVD\\_synth (ours) $\\downarrow$" in tex
        assert "nan" not in tex.lower().replace("\\_synth", "") and "nan" not in render.to_markdown(table)


def test_table3_extra_columns(runs):
    t3b, t3d, t3f = table3(runs, "3b"), table3(runs, "3d"), table3(runs, "3f")
    assert t3b.columns["steps_per_sec"] == ("steps/s (paper)", "steps/s (ours)")
    assert t3b.frame["steps/s (ours)"].tolist()[:2] == pytest.approx([3.0, 2.1])
    assert t3b.frame["steps/s (paper)"].tolist() == [2.24, 2.00, 1.75, 1.20]
    assert t3d.frame["params [M] (ours)"].tolist()[:4] == pytest.approx([1.0, 1.1, 1.5, 2.0])
    assert math.isnan(t3d.frame["params [M] (ours)"].iloc[4])
    assert t3d.frame["params [M] (paper)"].tolist() == [313, 314, 316, 324, 357]
    # rFVD comes from autoencoder runs (I3D rfvd: plain label), FVD from diffusion runs
    assert t3f.columns["rfvd"] == ("rFVD (paper)", "rFVD (ours)")
    f = t3f.frame
    assert f["rFVD (ours)"].tolist()[:2] == [40.0, 6.0] and f["n (rFVD)"].tolist() == [1, 1, 0, 0]
    assert f["n"].tolist() == [1, 2, 0, 0]
    for name in ("3a", "3c", "3e"):
        assert set(table3(runs, name).columns) == {"fvd", "is"}


def test_table3_prefers_i3d_fvd(tmp_path):
    make_run(tmp_path, "a", {}, {"fvd": 70.0, "fvd_synth": 1.0, "is_c3d": 80.0})
    make_run(tmp_path, "b", {"model.patch_size": 2}, {"fvd_synth": 2.0})
    t = table3(collect_runs(tmp_path), "3a")
    assert t.columns["fvd"][1] == "FVD (ours)" and t.columns["is"][1] == "IS (ours)"
    assert t.sources == {"fvd": "fvd", "is": "is_c3d"}
    assert t.frame["FVD (ours)"].iloc[0] == 70.0 and math.isnan(t.frame["FVD (ours)"].iloc[1])
    assert not any("synthetic" in n for n in t.notes)


def test_control_and_where(runs):
    uncontrolled = table3(runs, "3a", control=False)
    assert uncontrolled.frame.at[0, "n"] > 2  # p=1 now also averages the other sweeps' runs
    assert any("Rows average runs that differ in" in n and "model.self_cond_prob" in n for n in uncontrolled.notes)
    auto = table3(runs, "3a")
    held = next(n for n in auto.notes if n.startswith("Control (auto)"))
    assert "model.self_cond_prob = 0.9 (paper default; 2 run(s) at 0.0, 0.3 left out)" in held
    assert "model.st_window = 5x8x8 (paper default" in held
    paper = table3(runs, "3a", control="paper")  # every run here has the paper defaults available
    assert paper.frame["n"].tolist() == auto.frame["n"].tolist() == [2, 1, 0]
    none = table3(runs, "3a", where={"data.dataset": "ucf101"})
    assert none.frame["n"].tolist() == [0, 0, 0] and none.empty
    assert any("--where data.dataset=ucf101" in d and "synthetic" in d for d in none.diagnostics)
    # running + failed: two attempts at one config and seed, counted once (the first in run-directory order)
    everything = table3(runs, "3a", completed_only=False)
    assert everything.frame.at[2, "FVD_synth (ours)"] == 998.0 and everything.frame.at[2, "n"] == 1


def test_table3_counts_a_repeated_run_once_and_names_runs_without_a_row(tmp_path):
    # every sweep's copy of the default row: same config and seed under another run name
    for sweep, fvd in (("t3a", 10.0), ("t3f", 10.0), ("t3d", 10.5)):
        for seed in (0, 1):
            make_run(tmp_path, f"{sweep}/default_{seed}", {"seed": seed, "run_name": sweep}, synth(fvd + seed))
    make_run(tmp_path, "t3b/w522", {"model.st_window": [5, 2, 2]}, synth(30.0))  # scaled: no paper row
    # not copies: another sampling seed, another autoencoder (the control rule ignores both keys)
    make_run(tmp_path, "t3a/p2_eval0", {"model.patch_size": 2, "eval.seed": 0}, synth(20.0))
    make_run(tmp_path, "t3a/p2_eval1", {"model.patch_size": 2, "eval.seed": 1}, synth(22.0))
    make_run(tmp_path, "t3a/p4_ae400", {"model.patch_size": 4, "first_stage_steps": 400}, synth(40.0))
    make_run(tmp_path, "t3a/p4_ae2000", {"model.patch_size": 4, "first_stage_steps": 2000}, synth(44.0))
    runs = collect_runs(tmp_path)
    t = table3(runs, "3a")
    assert t.frame["n"].tolist() == [2, 2, 2]  # p = 1: 6 runs, 2 distinct (config, seed) pairs
    assert t.frame.at[1, "FVD_synth (ours)"] == 21.0 and t.frame.at[2, "FVD_synth (ours)"] == 42.0
    assert t.frame.at[0, "FVD_synth (ours)"] == 10.5  # the first copy of each (10, 11), not a mean over copies
    assert any(n.startswith("4 run(s) repeat another run's config and seed") for n in t.notes)
    b = table3(runs, "3b")
    assert any("1 stage-2 run(s) set this axis to values the paper's table has no row for" in n
               and "model.st_window=5x2x2: 1" in n for n in b.notes)
    assert not any("no row for" in n for n in t.notes)  # the 3b run sets 3a's axis to its default row's value


def test_table3_mapping_matches_reference():
    ref = reference.walt_table3()
    for key, axis in ((k, a) for k, a in TABLE3.items() if a.paper):
        rows = ref[ref["table"] == key]
        assert list(axis.rows) == rows["value"].tolist()
        marked = rows.loc[rows["note"] == "default", "value"].tolist()
        assert marked in ([], [axis.default]) and axis.default in axis.rows
    assert window_label([5, 16, 16]) == window_label("5x16x16") == window_label("[5, 16, 16]") == "5x16x16"


def test_plot_and_main_results(runs, tmp_path):
    for key in ("3b", "3d"):
        png = plot_table(table3(runs, key), tmp_path / f"t{key}.png")
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main_t = main_results(runs)
    assert len(main_t.frame) == len(reference.walt_main_results())
    assert main_t.frame["ours"].isna().all() and "—" in render.to_markdown(main_t)


def test_cli_writes_tables(runs_root, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main([str(runs_root), "--out", str(out), "--tables", "3b,3f,main"]) == 0
    for stem in ("table3b", "table3f"):
        for ext in ("md", "tex", "csv", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    # no run of W.A.L.T-L on a paper task: main results are not written (no empty files), and the reason is said
    assert not (out / "main_results.md").exists() and not (out / "table3a.md").exists()
    all_runs = pd.read_csv(out / "all_runs.csv")
    assert len(all_runs) == 17 and "fvd_synth" in all_runs.columns
    printed = capsys.readouterr().out
    assert "FVD_synth (ours)" in printed and "1 unreadable skipped" in printed and str(out) in printed
    assert "main: no runs: no completed stage-2 run of W.A.L.T-L/XL" in printed
    with pytest.raises(SystemExit):
        main([str(runs_root), "--tables", "3z"])
    assert main([str(runs_root), "--out", str(out), "--tables", "main"]) == 1  # asked for, nothing to write


def test_a_new_axis_is_one_sweep_preset(tmp_path, monkeypatch):
    """A preset with an `axis:` block is both the sweep and the table: no other file names its rows."""
    from analysis.axes import load_axes

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mlp.yaml").write_text(
        "axis:\n  title: MLP ratio\n  label: mlp ratio\n  default: '4'\n"
        "hydra:\n  sweeper:\n    params:\n      seed: range(0,${seeds})\n      model.mlp_ratio: 2,4\n")
    axes = load_axes(str(tmp_path))
    assert list(axes) == ["mlp"] and not axes["mlp"].paper and list(axes["mlp"].rows) == ["2", "4"]
    monkeypatch.setitem(TABLE3, "mlp", axes["mlp"])
    root = tmp_path / "runs"
    for seed, (r2, r4) in enumerate([(30.0, 20.0), (32.0, 21.0), (31.0, 22.0)]):
        make_run(root, f"m2_s{seed}", {"model.mlp_ratio": 2, "seed": seed}, synth(r2))
        make_run(root, f"m4_s{seed}", {"model.mlp_ratio": 4, "seed": seed}, synth(r4))
    make_run(root, "other", {"model.mlp_ratio": 8}, synth(1.0))
    t = table3(collect_runs(root), "mlp")
    assert t.frame["mlp ratio"].tolist() == ["2", "4"] and t.frame["n"].tolist() == [3, 3]
    assert t.frame["FVD_synth (ours)"].tolist() == [31.0, 21.0]
    assert any("model.mlp_ratio=8: 1" in n for n in t.notes)


def test_axis_declarations_are_checked_against_the_paper(tmp_path):
    from analysis.axes import load_axes

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "bad.yaml").write_text(
        "axis:\n  table: '3a'\n  default: '1'\nhydra:\n  sweeper:\n    params:\n      model.patch_size: 1,3\n")
    with pytest.raises(ValueError, match=r"declare Table 3a rows \['1', '3'\]; the paper's are \['1', '2', '4'\]"):
        load_axes(str(tmp_path))
