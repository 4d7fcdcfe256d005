"""walt-tables on sweeps as the training side writes them now: seeds as an axis, replicate statistics,
the control rule without flags, skipped tables, the all_runs.csv split, checkpoints, layouts.

Fixtures are run directories (config.yaml, results.json, COMPLETED) in the current results format:
stage-2 metrics, the autoencoder's under `first_stage/`, per-metric protocol, an `evaluation` section
that repeats the eval config, tags/notes, and per-checkpoint `checkpoints` entries.
"""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import yaml
from matplotlib.container import ErrorbarContainer

from analysis import render, stats
from analysis.checkpoints import read_checkpoints
from analysis.cli import main
from analysis.collect import collect_runs
from analysis.layouts import layout_table
from analysis.plots import quantities_figure
from analysis.tables import table3

AE_CKPT = "/abs/outputs/autoencoders/ae-1234/checkpoints/last.ckpt"

# the demo's tiny model: windows differ from the paper's (st_window 5x4x4), so paper-default control drops it
DEMO_CONFIG = {
    "stage": "diffusion", "seed": 0, "run_name": "demo", "force": False, "tags": ["demo"], "notes": "",
    "first_stage_ckpt": AE_CKPT, "first_stage_steps": 300,
    "paths": {"output_dir": "/abs/outputs", "run_dir": "/abs/outputs/multirun/demo/x"},
    "data": {"dataset": "synthetic", "num_frames": 17, "batch_size": 16, "root": "/abs/data/synthetic",
             "latent_cache": "/abs/outputs/latents/abc"},
    "model": {"patch_size": 1, "st_window": [5, 4, 4], "st_window_tokens": None, "s_window": "full",
              "layout": "walt", "temporal_pos": "absolute", "self_cond_prob": 0.9, "adaln_lora_rank": 2,
              "qk_norm": True, "depth": 4, "hidden_size": 64},
    "autoencoder": {"latent_channels": 8},
    "diffusion": {"zero_terminal_snr": True, "normalize_latents": True},
    "trainer": {"max_steps": 2000},
    "eval": {"num_samples": 96, "num_real": 144, "batch_size": 48, "after_train": True, "seed": 0},
}
NOISE = (0.0, 0.05, -0.04)  # per seed


def set_key(cfg, dotted, value):
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def write_run(run, config, metrics, *, completed=True, checkpoints=None, **results):
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    protocol = {m: {"extractor": "synthetic", "num_fake": 96, "num_real": 144} for m in metrics if "/" not in m}
    payload = {
        "stage": config["stage"], "global_step": config.get("trainer", {}).get("max_steps", 100),
        "params": 250_000, "steps_per_sec": 9.0, "wall_time_s": 120.0, "peak_memory_bytes": None,
        "tags": config.get("tags", []), "notes": config.get("notes", ""),
        "metrics": {**metrics, "val/loss": 0.2, "first_stage/rfvd_synth": 3.0, "first_stage/psnr": 24.0},
        "protocol": protocol,
        "first_stage": {"ckpt": AE_CKPT, "metrics": {"rfvd_synth": 3.0, "psnr": 24.0}},
        "evaluation": {"stage": "diffusion", "global_step": 2000, "device": "cpu", "wall_time_s": 30.0,
                       "config": dict(config.get("eval", {}))},
        "overrides": [f"seed={config['seed']}"],
    }
    if checkpoints:
        payload["checkpoints"] = checkpoints
    payload.update(results)
    (run / "results.json").write_text(json.dumps(payload))
    if completed:
        (run / "COMPLETED").write_text("ok\n")
    return run


def demo_fvd(p, sc, seed):
    """Paper directions (smaller p better, self-conditioning helps) well beyond the seed noise."""
    return 1.0 + 0.5 * (p == 2) + 0.4 * (sc == 0.0) + NOISE[seed]


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory):
    """outputs/multirun/demo: model.patch_size x model.self_cond_prob x seed (2 x 2 x 3 runs)."""
    root = tmp_path_factory.mktemp("demo")
    for p in (1, 2):
        for sc in (0.0, 0.9):
            for seed in range(3):
                cfg = copy.deepcopy(DEMO_CONFIG)
                set_key(cfg, "model.patch_size", p)
                set_key(cfg, "model.self_cond_prob", sc)
                cfg["seed"] = seed
                name = f"model.patch_size={p},model.self_cond_prob={sc},seed={seed}"
                cfg["paths"]["run_dir"] = f"/abs/outputs/multirun/demo/{name}"
                # is_synth: no effect of either axis, only seed noise -> never resolved
                write_run(root / name, cfg, {"fvd_synth": demo_fvd(p, sc, seed), "is_synth": 1.04 + NOISE[seed] / 10,
                                             "synth_acc": 0.8 - 0.1 * (p == 2) + NOISE[seed] / 10,
                                             "synth_acc_real": 0.95})
    return root


def test_stats_summary_and_welch():
    s = stats.summarize([10.0, 12.0, math.nan])
    assert (s.n, s.mean, s.sd, s.se) == (2, 11.0, pytest.approx(math.sqrt(2)), pytest.approx(1.0))
    lo, hi = s.ci95
    assert lo < 11 - 12 and hi > 11 + 12  # t(0.975, 1 df) = 12.7: two seeds give a wide interval
    one = stats.summarize([5.0])
    assert one.n == 1 and math.isnan(one.se) and stats.summarize([]).n == 0
    a, b = stats.summarize([1.0, 1.1, 0.9, 1.05]), stats.summarize([2.0, 2.3, 1.8])
    from scipy.stats import ttest_ind
    assert stats.welch_p(a, b) == pytest.approx(ttest_ind([1.0, 1.1, 0.9, 1.05], [2.0, 2.3, 1.8], equal_var=False).pvalue)
    assert math.isnan(stats.welch_p(a, one))
    # verdicts: direction by the metric's sense, and "not resolved" instead of a ranking
    worse = stats.compare("2", b, a, stats.LOWER, paper="worse")
    assert worse.resolved and worse.direction == "worse" and worse.text.startswith("worse (p=")
    assert "paper: worse" in worse.text and worse.agrees_with_paper is True
    assert stats.compare("2", b, a, stats.HIGHER).direction == "better"
    close = stats.compare("x", stats.summarize([1.0, 1.2]), stats.summarize([1.1, 1.0]), stats.LOWER)
    assert not close.resolved and close.text.startswith("not resolved (p=")
    assert stats.compare("x", one, a, stats.LOWER).text == "not resolved (n<2)"
    assert stats.compare("1", a, a, stats.LOWER, is_reference=True).text == "(default)"


def test_demo_sweep_fills_3a_and_3c_without_flags(demo_sweep, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main([str(demo_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(["all_runs.csv", "all_runs_constants.csv", "summary.json",
                              *(f"table3{k}.{e}" for k in "ac" for e in ("md", "tex", "csv", "png"))])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"3a", "3c"} and set(summary["3a"]) == {"fvd", "is", "acc"}
    assert summary["3a"]["fvd"]["rows"]["2"]["verdict"] == "worse" and summary["3a"]["fvd"]["rows"]["2"]["agrees_with_paper"]
    assert summary["3c"]["fvd"]["rows"]["0.0"]["verdict"] == "worse"
    assert summary["3a"]["is"]["rows"]["2"]["verdict"] == "not resolved"
    # the tables the sweep did not vary are named with the reason, never written empty
    assert "tables not written:" in printed
    assert "3b: only row 5x4x4 has runs: the runs do not vary ST window" in printed and "--tables 3b" in printed
    assert "3d: only row 2 has runs" in printed and "main: no runs" in printed
    # the control rule is explained in the output
    assert "control rule (auto):" in printed
    assert "held fixed: model.self_cond_prob = 0.9 (paper default; 6 run(s) at 0.0 left out)" in printed
    assert "held fixed: model.patch_size = 1 (paper default; 6 run(s) at 2 left out)" in printed
    assert "Held by every run, off the paper default: model.st_window = 5x4x4 (paper 5x8x8)" in printed

    t3a = table3(collect_runs(demo_sweep), "3a")
    f = t3a.frame
    assert f["n"].tolist() == [3, 3, 0]
    assert f["FVD_synth (ours)"].tolist()[:2] == pytest.approx([1.0 + sum(NOISE) / 3, 1.5 + sum(NOISE) / 3])
    se = stats.summarize([1.0 + n for n in NOISE]).se
    assert f["FVD_synth (ours) SE"].tolist()[:2] == pytest.approx([se, se])
    fvd = t3a.resolved("fvd")
    assert fvd["2"].resolved and fvd["2"].direction == "worse" and fvd["2"].agrees_with_paper
    assert not t3a.resolved("is")["2"].resolved  # no effect in is_synth: "not resolved", no ranking
    cells = {c["patch size p"]: c for c in _md_rows(t3a)}
    assert cells["1"]["FVD_synth (ours)"] == f"{f.at[0, 'FVD_synth (ours)']:.3f} ± {se:.3f}"
    assert cells["1"]["FVD_synth vs default"] == "(default)"
    assert cells["2"]["FVD_synth vs default"].startswith("worse (Holm p") and "paper: worse" in cells["2"]["FVD_synth vs default"]
    assert cells["2"]["IS_synth vs default"].startswith("not resolved (Holm p=")
    assert cells["2"]["class acc (ours)"].startswith("0.7")  # synth_acc: ours only, no paper column
    assert "class acc (paper)" not in f.columns
    assert f["class acc real clips (ours)"].tolist()[:2] == pytest.approx([0.95, 0.95])  # the classifier's ceiling, beside it
    assert "class acc real clips vs default" not in f.columns

    t3c = table3(collect_runs(demo_sweep), "3c")
    assert t3c.frame["n"].tolist() == [3, 0, 0, 3]
    assert t3c.resolved("fvd")["0.0"].direction == "worse"  # self-conditioning helps, as in the paper
    md = (out / "table3c.md").read_text()
    assert "Welch" in md and "not resolved" in md and "FVD_synth (ours) ↓" in md and "IS_synth (ours) ↑" in md


def _md_rows(table):
    lines = render.to_markdown(table).splitlines()
    header = [c.strip().removesuffix(" ↓").removesuffix(" ↑") for c in lines[2].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines if ln.startswith("| ")][1:]


def test_single_seed_rows_are_not_resolved(tmp_path):
    for p in (1, 2):
        cfg = copy.deepcopy(DEMO_CONFIG)
        set_key(cfg, "model.patch_size", p)
        write_run(tmp_path / f"p{p}", cfg, {"fvd_synth": 1.0 + p})
    t = table3(collect_runs(tmp_path), "3a")
    assert t.frame["n"].tolist() == [1, 1, 0] and math.isnan(t.frame["FVD_synth (ours) SE"].iloc[0])
    assert t.resolved("fvd")["2"].text == "direction only (n too small): worse in 1/1 pairs; paper: worse"
    assert _md_rows(t)[0]["FVD_synth (ours)"] == "2.00"  # no "±" with one run


def test_filters_that_drop_every_run_name_the_flag(demo_sweep, tmp_path, capsys):
    out = tmp_path / "t"
    assert main([str(demo_sweep), "--out", str(out), "--tables", "3a", "--where", "data.dataset=ucf101"]) == 1
    printed = capsys.readouterr().out
    assert "--where data.dataset=ucf101 leaves none of the 12 run(s) of Table 3a (they have data.dataset = synthetic (12))" in printed
    assert main([str(demo_sweep), "--out", str(out), "--tables", "3a", "--control", "paper"]) == 1
    printed = capsys.readouterr().out
    assert "--control paper leaves none of the 12 run(s): model.st_window = 5x8x8" in printed
    assert "use --control auto" in printed
    # the old demo invocation still works
    assert main([str(demo_sweep), "--out", str(out), "--tables", "3a", "--no-control",
                 "--where", "model.self_cond_prob=0.9"]) == 0
    assert (out / "table3a.md").exists()


def test_incomplete_runs_name_include_incomplete(tmp_path, capsys):
    cfg = copy.deepcopy(DEMO_CONFIG)
    write_run(tmp_path / "running", cfg, {"fvd_synth": 1.0}, completed=False)
    assert main([str(tmp_path), "--out", str(tmp_path / "t"), "--tables", "3a"]) == 1
    assert "add --include-incomplete" in capsys.readouterr().out
    assert main([str(tmp_path), "--out", str(tmp_path / "t"), "--tables", "3a", "--include-incomplete"]) == 0


def test_auto_removes_stale_files_of_skipped_tables(demo_sweep, tmp_path):
    out = tmp_path / "tables"
    out.mkdir()
    (out / "table3d.md").write_text("old, empty table\n")
    (out / "table3d.png").write_bytes(b"old")
    assert main([str(demo_sweep), "--out", str(out)]) == 0
    assert not (out / "table3d.md").exists() and not (out / "table3d.png").exists()


def test_all_runs_csv_varying_first_constants_apart(demo_sweep, tmp_path):
    out = tmp_path / "tables"
    main([str(demo_sweep), "--out", str(out), "--tables", "3a"])
    runs = pd.read_csv(out / "all_runs.csv")
    cols = list(runs.columns)
    assert cols[:6] == ["run_dir", "completed", "failed", "model.patch_size", "model.self_cond_prob", "seed"]
    metrics = cols[6:6 + 7]
    assert metrics[:3] == ["fvd_synth", "is_synth", "synth_acc"] and "first_stage/rfvd_synth" in metrics
    assert cols.index("first_stage/psnr") > cols.index("val/loss")  # own metrics before the autoencoder's
    assert cols.index("global_step") > cols.index("first_stage/psnr")
    assert len(cols) < 25  # not 241
    assert not any(c.startswith(("evaluation.config", "first_stage.metrics")) for c in cols)
    assert "rfvd_synth" not in cols and "psnr" not in cols  # prefixed, never copied unprefixed
    assert runs["run_dir"].str.startswith("model.patch_size=").all()  # relative to the sweep dir
    assert not any(str(v).startswith("/") for v in runs.to_numpy().ravel())
    constants = pd.read_csv(out / "all_runs_constants.csv").set_index("column")["value"]
    assert constants["model.st_window"] == "[5, 4, 4]" and constants["eval.num_samples"] == "96"
    assert "model.patch_size" not in constants.index and "fvd_synth" not in constants.index
    assert constants["first_stage_ckpt"].startswith("..")  # relative paths in the constants too
    assert not any(c.startswith("evaluation.config") for c in constants.index)


def test_old_results_format_reads_like_the_new(tmp_path):
    """Old stage-2 runs: unprefixed rfvd/psnr copied in, autoencoder.normalize_latents (Table 3e)."""
    for name, key in (("old", "autoencoder.normalize_latents"), ("new", "diffusion.normalize_latents")):
        for seed in (0, 1):
            cfg = copy.deepcopy(DEMO_CONFIG)
            del cfg["diffusion"]["normalize_latents"]
            set_key(cfg, key, False)
            cfg["seed"] = seed
            run = write_run(tmp_path / f"{name}{seed}", cfg, {"fvd_synth": 2.0 + seed})
            if name == "old":
                results = json.loads((run / "results.json").read_text())
                results["metrics"] = {"fvd_synth": 2.0 + seed, "rfvd_synth": 3.0, "psnr": 24.0}
                (run / "results.json").write_text(json.dumps(results))
    runs = collect_runs(tmp_path)
    assert "autoencoder.normalize_latents" not in runs.columns
    assert runs["diffusion.normalize_latents"].tolist() == [False] * 4
    old = runs[runs["run_dir"].str.endswith("old0")].iloc[0]
    assert old["first_stage/rfvd_synth"] == 3.0 and "rfvd_synth" not in runs.columns
    t = table3(runs, "3e")
    # both formats land in one row; old and new copies of one config and seed count once
    assert t.frame.set_index("setting").at["w/o latent norm", "n"] == 2
    assert any(n.startswith("2 run(s) repeat another run's config and seed") for n in t.notes)


def test_rfvd_counts_autoencoders_not_seeds(tmp_path):
    for c in (4, 8):
        for seed in (0, 1, 2):
            cfg = copy.deepcopy(DEMO_CONFIG)
            set_key(cfg, "autoencoder.latent_channels", c)
            cfg["seed"] = seed
            ckpt = f"/abs/outputs/autoencoders/c{c}/checkpoints/last.ckpt"
            cfg["first_stage_ckpt"] = ckpt
            write_run(tmp_path / f"c{c}s{seed}", cfg, {"fvd_synth": 1.0 + c / 10 + NOISE[seed]},
                      first_stage={"ckpt": ckpt, "metrics": {"rfvd_synth": 40.0 / c}})
            results = json.loads((tmp_path / f"c{c}s{seed}" / "results.json").read_text())
            results["metrics"]["first_stage/rfvd_synth"] = 40.0 / c
            (tmp_path / f"c{c}s{seed}" / "results.json").write_text(json.dumps(results))
    t = table3(collect_runs(tmp_path), "3f")
    f = t.frame.set_index("latent channels c")
    assert f.loc[["4", "8"], "n"].tolist() == [3, 3] and f.loc[["4", "8"], "n (rFVD)"].tolist() == [1, 1]
    assert f.loc[["4", "8"], "rFVD_synth (ours)"].tolist() == [10.0, 5.0]
    assert t.columns["rfvd"] == ("rFVD (paper)", "rFVD_synth (ours)")


def test_rows_whose_autoencoder_was_never_evaluated_name_the_commands(tmp_path):
    """An autoencoder trained by `walt-data encode` has no rFVD: the row's rFVD is empty and the note says
    exactly how to measure it, instead of the legend's "no run"."""
    ckpt = "/abs/outputs/autoencoders/enc8/checkpoints/last.ckpt"
    for seed in (0, 1):
        cfg = copy.deepcopy(DEMO_CONFIG)
        cfg["seed"], cfg["first_stage_ckpt"] = seed, ckpt
        run = write_run(tmp_path / f"s{seed}", cfg, {"fvd_synth": 1.0 + NOISE[seed]}, first_stage={"ckpt": ckpt, "metrics": {}})
        results = json.loads((run / "results.json").read_text())
        results["metrics"] = {k: v for k, v in results["metrics"].items() if not k.startswith("first_stage/")}
        (run / "results.json").write_text(json.dumps(results))
    t = table3(collect_runs(tmp_path), "3f")
    assert t.frame.set_index("latent channels c").at["8", "n (rFVD)"] == 0
    assert any("`walt-eval /abs/outputs/autoencoders/enc8`" in n and "walt-tables <runs dir> /abs/outputs/autoencoders/enc8" in n
               for n in t.notes), t.notes


def test_plots_one_axis_per_panel_with_error_bars_and_direction(demo_sweep):
    t = table3(collect_runs(demo_sweep), "3a")
    fig = quantities_figure(t)
    quantities = len(t.columns)
    assert len(fig.axes) == 2 * quantities  # paper row + ours row; no twin axes
    ours = [ax for ax in fig.axes if "(ours)" in ax.get_title()]
    assert len(ours) == quantities and all(any(isinstance(c, ErrorbarContainer) for c in ax.containers) for ax in ours)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("FVD (paper) ↓" in x for x in titles) and any("IS_synth (ours) ↑" in x for x in titles)
    assert any(ax.get_ylabel() == "lower is better" for ax in fig.axes)
    assert not any(getattr(ax, "_twinned_axes", None) and len(ax._twinned_axes.get_siblings(ax)) > 1 for ax in fig.axes)


# ---- checkpoints ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_runs(tmp_path_factory):
    """Two settings (p = 1, 2) x two seeds, each evaluated at steps 100, 200, 300; one run without
    per-checkpoint entries (one point at its global_step)."""
    root = tmp_path_factory.mktemp("ckpt")
    for p in (1, 2):
        for seed in (0, 1):
            cfg = copy.deepcopy(DEMO_CONFIG)
            set_key(cfg, "model.patch_size", p)
            cfg["seed"] = seed
            cfg["trainer"]["max_steps"] = 300
            ckpts = {str(step): {"metrics": {"fvd_synth": 3.0 - step / 100 + p / 2 + seed / 10,
                                             "is_synth": 1.0 + step / 1000},
                                 "protocol": {"fvd_synth": {"num_fake": 96}}}
                     for step in (100, 200, 300)}
            write_run(root / f"p{p}s{seed}", cfg, ckpts["300"]["metrics"], checkpoints=ckpts)
    cfg = copy.deepcopy(DEMO_CONFIG)
    set_key(cfg, "model.patch_size", 4)
    cfg["trainer"]["max_steps"] = 300
    write_run(root / "p4", cfg, {"fvd_synth": 5.0, "is_synth": 1.0})
    return root


def test_checkpoint_tables(checkpoint_runs, tmp_path, capsys):
    data = read_checkpoints([checkpoint_runs])
    assert set(data.series) == {"model.patch_size=1", "model.patch_size=2", "model.patch_size=4"}
    assert len(data.series["model.patch_size=1"]) == 2  # seeds are one series
    assert set(read_checkpoints([checkpoint_runs / "p1s0"]).series) == {"p1s0"}  # one run: its name, not "."
    out = tmp_path / "ck"
    runs = [str(checkpoint_runs / n) for n in ("p1s0", "p1s1", "p2s0", "p2s1", "p4")]
    assert main(["--checkpoints", *runs, "--out", str(out)]) == 0
    table = pd.read_csv(out / "checkpoints_fvd_synth.csv")
    assert table["step"].tolist() == [100, 200, 300]
    assert table["model.patch_size=1"].tolist() == pytest.approx([2.55, 1.55, 0.55])
    assert table["model.patch_size=1 SE"].tolist() == pytest.approx([0.05] * 3)
    assert table["n (model.patch_size=1)"].tolist() == [2, 2, 2]
    assert table["n (model.patch_size=4)"].tolist() == [0, 0, 2 - 1]  # one point, at its global_step
    md = (out / "checkpoints_fvd_synth.md").read_text()
    assert "fvd_synth ↓ against checkpoint step" in md and "2.550 ± 0.050" in md
    long = pd.read_csv(out / "checkpoints_long.csv")
    assert set(long["metric"]) == {"fvd_synth", "is_synth"} and not long["run_dir"].str.startswith("/").any()
    assert (out / "checkpoints.png").stat().st_size > 1000
    assert main(["--checkpoints", *runs, "--out", str(out / "only"), "--metrics", "is_synth"]) == 0
    assert not (out / "only" / "checkpoints_fvd_synth.md").exists() and (out / "only" / "checkpoints_is_synth.md").exists()
    empty = tmp_path / "empty"
    (empty / "run").mkdir(parents=True)
    capsys.readouterr()
    assert main(["--checkpoints", str(empty), "--out", str(tmp_path / "x")]) == 1
    assert "walt-eval <run> ckpt=all" in capsys.readouterr().err


# ---- cross-paper layouts -------------------------------------------------------------------------

LAYOUTS = {("walt", "absolute"): (1.0, 9.0), ("s_t", "absolute"): (1.3, 10.0), ("s_then_t", "absolute"): (1.6, 10.5),
           ("s_plus_t", "absolute"): (1.25, 8.0), ("split", "absolute"): (1.02, 9.5), ("s_plus_t", "rope"): (1.2, 8.0),
           ("s_t", "rope"): (1.28, 10.0)}


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    for (layout, pos), (fvd, sps) in LAYOUTS.items():
        for seed in range(3):
            cfg = copy.deepcopy(DEMO_CONFIG)
            set_key(cfg, "model.layout", layout)
            set_key(cfg, "model.temporal_pos", pos)
            cfg["seed"] = seed
            write_run(root / f"{layout}-{pos}-{seed}", cfg, {"fvd_synth": fvd + NOISE[seed] / 5},
                      steps_per_sec=sps + NOISE[seed], peak_memory_bytes=2 ** 30 * (1 + 0.1 * len(layout)),
                      params=300_000)
    # a run at another patch size: held out by the control rule (paper default p = 1 present)
    cfg = copy.deepcopy(DEMO_CONFIG)
    set_key(cfg, "model.patch_size", 2)
    write_run(root / "walt-p2", cfg, {"fvd_synth": 9.0})
    return root


def test_layout_table(layout_runs, tmp_path):
    t = layout_table(collect_runs(layout_runs))
    f = t.frame.set_index("layout")
    assert list(f.index) == ["W.A.L.T (S / ST windows)", "Latte V1 (S / T blocks alternate)",
                             "Latte V2 (late fusion: S blocks, then T)", "Latte V3 (S then T attention per block)",
                             "Latte V4 (heads split S / T)", "LaVie (S then T per block, temporal RoPE)",
                             "layout s_t + temporal RoPE"]
    assert f["n"].tolist() == [3] * 7
    assert f.at["W.A.L.T (S / ST windows)", "FVD_synth (ours)"] == pytest.approx(1.0 + sum(NOISE) / 15)
    assert f.at["Latte V2 (late fusion: S blocks, then T)", "peak memory [GiB] (ours)"] == pytest.approx(1.8)
    assert f.at["Latte V1 (S / T blocks alternate)", "params [M] (ours)"] == pytest.approx(0.3)
    marks = t.resolved("fvd")
    assert marks["Latte V2 (late fusion: S blocks, then T)"].direction == "worse"
    # 1.02 vs 1.0 within the seeds' spread, but every seed's noise is shared by both rows: the paired
    # differences are 0.02 on all three seeds, so the paired test resolves it
    v4 = marks["Latte V4 (heads split S / T)"]
    assert v4.resolved and v4.unit == "seeds (one autoencoder)" and v4.agree == "3/3"
    assert "FVD_synth vs W.A.L.T" in t.frame.columns
    assert any("model.patch_size = 1 (paper default; 1 run(s) at 2 left out)" in n for n in t.notes)
    assert "steps/s (ours)" in t.frame.columns and "FVD (paper)" not in t.frame.columns
    out = tmp_path / "tables"
    assert main([str(layout_runs), "--out", str(out)]) == 0
    assert (out / "tablelayouts.md").exists() and (out / "tablelayouts.png").exists()
    assert "Cross-paper layouts" in (out / "tablelayouts.md").read_text()


def test_baseline_flags_metrics_that_do_not_separate_from_untrained(demo_sweep, tmp_path, capsys):
    """walt-demo's untrained baseline: fvd_synth separates, is_synth (1.04 everywhere, below 1.05) does not."""
    baseline = tmp_path / "demo_baseline"
    cfg = copy.deepcopy(DEMO_CONFIG)
    write_run(baseline, cfg, {"fvd_synth": 3.0, "is_synth": 1.05, "synth_acc": 0.25}, completed=False,
              baseline="untrained", global_step=0)
    out = tmp_path / "tables"
    assert main([str(demo_sweep), "--out", str(out), "--baseline", str(baseline)]) == 0
    md = (out / "table3a.md").read_text()
    assert "IS_synth (ours) does not separate trained runs from the untrained baseline (1.05)" in md
    assert "uninformative (≈ untrained)" in md and "FVD_synth (ours) does not separate" not in md
    row2 = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert "worse (Holm p<0.001, 3 seeds (one autoencoder); paper: worse)" in row2  # fvd_synth marks are kept
    # every row better than the baseline, but by less than its seed noise can show (t ~ 2, p ~ 0.2 at n = 3):
    # not called uninformative, not called evidence either
    baseline = tmp_path / "demo_baseline_2"
    write_run(baseline, cfg, {"fvd_synth": 3.0, "is_synth": 1.035, "synth_acc": 0.25}, completed=False,
              baseline="untrained", global_step=0)
    assert main([str(demo_sweep), "--out", str(out), "--baseline", str(baseline)]) == 0
    md = (out / "table3a.md").read_text()
    assert "not shown better than untrained" in md and "uninformative" not in md
    assert "IS_synth (ours): every row is better than the untrained baseline (1.035), but not beyond noise" in md
    # only the rows the baseline cannot show better lose their verdict: against fvd_synth 1.55, p=1 (1.00) is
    # clearly better and keeps its mark, p=2 (1.50, t ~ 1.8 at n = 3) is not shown better
    baseline = tmp_path / "demo_baseline_3"
    write_run(baseline, cfg, {"fvd_synth": 1.55, "is_synth": 1.0, "synth_acc": 0.0}, completed=False,
              baseline="untrained", global_step=0)
    assert main([str(demo_sweep), "--out", str(out), "--baseline", str(baseline)]) == 0
    md = (out / "table3a.md").read_text()
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    row2 = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert "not shown better" not in row1 and row2.count("not shown better than untrained") == 1
    assert "worse (Holm p<0.001, 3 seeds (one autoencoder); paper: worse)" not in row2 and "not beyond noise in row(s) 2 (n=3" in md

    summary = table3(collect_runs(demo_sweep), "3a").summary("fvd")
    assert summary["metric"] == "fvd_synth" and summary["reference"] == "1" and list(summary["rows"]) == ["2"]
    row = summary["rows"]["2"]
    assert row["verdict"] == "worse" and row["paper"] == "worse" and row["agrees_with_paper"] is True
    assert row["n"] == 3 and row["p"] < 0.001
    json.dumps(summary)  # JSON-able for the demo's printed summary
    assert main([str(demo_sweep), "--out", str(out), "--baseline", str(tmp_path / "nope")]) == 2


def test_layout_rows_are_recipes(tmp_path):
    """Presets differ in more than the layout (Latte: p = 2, separate AdaLN): kept, listed as part of the row."""
    for seed in (0, 1):
        walt = copy.deepcopy(DEMO_CONFIG)
        walt["seed"] = seed
        write_run(tmp_path / f"walt{seed}", walt, {"fvd_synth": 1.0 + seed / 10})
        latte = copy.deepcopy(DEMO_CONFIG)
        latte["seed"] = seed
        latte["model"].update(layout="s_t", patch_size=2, adaln_lora_rank=0, pos_embed="sincos")
        write_run(tmp_path / f"latte{seed}", latte, {"fvd_synth": 1.5 + seed / 10})
    t = layout_table(collect_runs(tmp_path))
    assert t.frame["n"].tolist() == [2, 2]
    follows = next(n for n in t.notes if n.startswith("Also different between rows"))
    assert "model.patch_size (W.A.L.T (S / ST windows): 1; Latte V1 (S / T blocks alternate): 2)" in follows
    assert "model.adaln_lora_rank" in follows
    assert "held fixed: nothing" in next(n for n in t.notes if n.startswith("Control (auto)"))


def test_where_tags_and_notes_are_not_axes(tmp_path):
    for seed, tags in ((0, ["ablation", "v2"]), (1, ["ablation"]), (2, ["other"])):
        cfg = copy.deepcopy(DEMO_CONFIG)
        cfg.update(seed=seed, tags=tags, notes=f"try {seed}")
        write_run(tmp_path / f"r{seed}", cfg, {"fvd_synth": 1.0 + seed})
    runs = collect_runs(tmp_path)
    assert table3(runs, "3a", where={"tags": "ablation"}).frame["n"].tolist() == [2, 0, 0]
    t = table3(runs, "3a")  # differing tags / notes are not held: all three are replicates of p = 1
    assert t.frame["n"].tolist() == [3, 0, 0] and "held fixed: nothing" in " ".join(t.notes)


def test_paired_design_resolves_what_an_unpaired_test_cannot():
    """Seed noise shared by both rows (same (autoencoder, seed)) is large against the effect: Welch on the
    rows' means does not resolve it; the per-pair differences (all +0.5) do."""
    noise = {0: 0.0, 1: 8.0, 2: -6.0}
    ref = {(0, s): [50.0 + n] for s, n in noise.items()}
    row = {(0, s): [50.5 + n + 0.01 * s] for s, n in noise.items()}
    welch = stats.welch_p(stats.summarize([v[0] for v in row.values()]), stats.summarize([v[0] for v in ref.values()]))
    assert welch > 0.9
    v = {x.label: x for x in stats.compare_rows({"ref": ref, "row": row}, "ref", stats.LOWER)}["row"]
    assert v.resolved and v.direction == "worse" and v.unit == "seeds (one autoencoder)" and v.units == 3
    assert v.agree == "3/3" and v.ci[0] > 0 and v.p < 0.01


def test_too_few_units_give_a_direction_only():
    """Two autoencoders x three seeds: the unit is the autoencoder (its per-AE mean difference), n = 2 < 3, so
    however clear the pairs, the mark is the sign and the share of pairs that agree."""
    ref = {(ae, s): [10.0] for ae in (0, 1) for s in range(3)}
    row = {(ae, s): [8.0 if (ae, s) != (1, 2) else 10.5] for ae in (0, 1) for s in range(3)}
    v = {x.label: x for x in stats.compare_rows({"ref": ref, "row": row}, "ref", stats.LOWER)}["row"]
    assert not v.resolved and v.unit == "autoencoders" and v.units == 2
    assert v.text == "direction only (n too small): better in 5/6 pairs"


def test_shared_autoencoder_table_says_its_marks_are_conditional(tmp_path):
    for p in (1, 2):
        for seed in range(3):
            cfg = copy.deepcopy(DEMO_CONFIG)
            set_key(cfg, "model.patch_size", p)
            cfg["seed"], cfg["first_stage_seed"] = seed, 0
            write_run(tmp_path / f"p{p}_s{seed}", cfg, {"fvd_synth": 10.0 * p + NOISE[seed]})
    t = table3(collect_runs(tmp_path), "3a")
    assert t.frame["AE x seeds"].tolist()[:2] == ["1 x 3", "1 x 3"]
    assert any(n.startswith("Every run shares one autoencoder (first_stage_seed 0)") for n in t.notes)
    assert any(n.startswith("Budget: autoencoder") and "samples per evaluation" in n for n in t.notes)
    assert t.resolved("fvd")["2"].unit == "seeds (one autoencoder)"


def test_holm_corrects_across_rows():
    assert stats.holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)
    # three rows each at raw p ~ 0.03: alone each would resolve, corrected none does
    ref = {(0, s): [10.0] for s in range(3)}
    rows = {"ref": ref}
    for i in range(3):
        rows[f"r{i}"] = {(0, s): [10.0 + d] for s, d in enumerate((1.0, 1.4, 0.8))}
    raw = stats._t_test([1.0, 1.4, 0.8])[0]
    assert 0.02 < raw < 0.05
    verdicts = stats.compare_rows(rows, "ref", stats.LOWER)
    assert all(not v.resolved and v.p == pytest.approx(min(1.0, 3 * raw)) for v in verdicts[1:])


def _sweep(root, effects, noise=NOISE):
    """A 3a sweep of 3 seeds on one autoencoder: fvd_synth = 10 + effect[p] + the seed's noise."""
    for p, effect in effects.items():
        for seed in range(3):
            cfg = copy.deepcopy(DEMO_CONFIG)
            set_key(cfg, "model.patch_size", p)
            cfg["seed"] = seed
            write_run(root / f"p{p}_s{seed}", cfg, {"fvd_synth": 10.0 + effect + noise[seed] * (1 + p)})
    return root


def test_replication_report_agree_disagree_and_missing_row(tmp_path, capsys):
    a = _sweep(tmp_path / "a", {1: 0.0, 2: 3.0, 4: 5.0})
    b = _sweep(tmp_path / "b", {1: 0.0, 2: 3.2, 4: -5.0})  # p = 2 replicates, p = 4 reverses
    c = _sweep(tmp_path / "c", {1: 0.0, 2: 2.9})  # p = 4 not run
    assert main(["--replicate", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    text = capsys.readouterr().out
    row = {line.split("|")[3].strip(): line for line in text.splitlines() if line.startswith("| 3a | fvd |")}
    assert row["2"].endswith("| yes | yes | replicates |")
    assert row["4"].endswith("| no | no | does not replicate |")
    assert "1 of 2 conclusions replicate" in text and (tmp_path / "ab" / "replication.md").exists()
    assert main(["--replicate", str(a), str(c), "--out", str(tmp_path / "ac")]) == 0
    text = capsys.readouterr().out
    row = {line.split("|")[3].strip(): line for line in text.splitlines() if line.startswith("| 3a | fvd |")}
    assert row["4"].endswith("missing in B |") and "1 of 2 conclusions replicate" in text
    assert main(["--replicate", str(a), "--out", str(tmp_path / "x")]) == 2


def test_one_folder_of_every_sweep_builds_each_table_its_runs_vary(tmp_path):
    """outputs/multirun holding Table 3a's sweep (p = 1, 2, 4 at the demo's 5x4x4 window) and Table 3b's (windows
    5x4x4, 5x8x8 at p = 1): 3b's runs at the paper's window must not hold 3a at 5x8x8, where only p = 1 ran."""
    for sweep, key, values in (("table3a", "model.patch_size", (1, 2, 4)), ("table3b", "model.st_window", ([5, 4, 4], [5, 8, 8]))):
        for v in values:
            for seed in range(3):
                cfg = copy.deepcopy(DEMO_CONFIG)
                set_key(cfg, key, v)
                cfg["seed"] = seed
                p = cfg["model"]["patch_size"]
                w = "x".join(map(str, cfg["model"]["st_window"]))
                write_run(tmp_path / sweep / f"{key}={v},seed={seed}", cfg,
                          {"fvd_synth": 1.0 + 0.5 * (p - 1) + 0.3 * (w == "5x8x8") + NOISE[seed], "is_synth": 1.0})
    runs = collect_runs(tmp_path)
    t3a = table3(runs, "3a")
    assert t3a.frame["n"].tolist() == [3, 3, 3]  # p = 1 at 5x4x4 ran in both sweeps: the same runs, counted once
    held = next(n for n in t3a.notes if n.startswith("Control (auto)"))
    assert "model.st_window = 5x4x4 (fills the most rows; paper default 5x8x8 fills 1 row(s); 3 run(s) at 5x8x8 left out)" in held
    t3b = table3(runs, "3b")  # 3a's p = 2, 4 runs are held out at the paper default p = 1 (it fills every row)
    assert t3b.frame["n"].tolist() == [3, 3, 0, 0]


def test_windows_clamped_to_one_grid_are_marked_as_one_model(tmp_path):
    """Table 3b at a 16 px grid (latents 5x2x2): 5x4x4, 5x8x8 and 5x16x16 all cover the whole grid, so the three
    rows are one model (results.json token_windows say so); a window that still differs is not marked."""
    def sweep(root, widest_tokens):
        for w, tokens in (([5, 4, 4], "5x2x2"), ([5, 8, 8], "5x2x2"), ([5, 16, 16], widest_tokens)):
            for seed in range(2):
                cfg = copy.deepcopy(DEMO_CONFIG)
                set_key(cfg, "model.st_window", w)
                cfg["seed"] = seed
                write_run(root / f"w={w[1]},seed={seed}", cfg, {"fvd_synth": 1.0 + NOISE[seed], "is_synth": 1.0},
                          token_windows={"S": "1x2x2", "ST": tokens})
        return [n for n in table3(collect_runs(root), "3b").notes if "train one model" in n]

    note, = sweep(tmp_path / "clamped", "5x2x2")
    assert note.startswith("Rows 5x4x4, 5x8x8, 5x16x16 train one model") and "ST 5x2x2" in note
    note, = sweep(tmp_path / "wider", "5x4x4")
    assert note.startswith("Rows 5x4x4, 5x8x8 train one model") and "under 2 labels" in note


@pytest.mark.parametrize("table,key,values,fixed", [
    ("latte_conditioning", "model.conditioning", ("adaln", "tokens"), {"model.layout": "s_t", "model.adaln_lora_rank": 0}),
    ("latte_patch_embedding", "model.temporal_patch_size", (1, 5), {"model.layout": "s_t"}),
    ("adaln", "model.adaln_lora_rank", (2, 0), {}),
])
def test_latte_and_separate_adaln_tables_build_from_their_sweeps(tmp_path, table, key, values, fixed):
    """Each is one sweep preset with an axis block; a W.A.L.T-layout run at the same value is not one of its rows."""
    for v in values:
        for seed in range(3):
            cfg = copy.deepcopy(DEMO_CONFIG)
            for k, f in {**fixed, key: v}.items():
                set_key(cfg, k, f)
            cfg["seed"] = seed
            write_run(tmp_path / f"{key}={v},seed={seed}", cfg, {"fvd_synth": 1.0 + (v != values[0]) + NOISE[seed]})
    if fixed:  # another sweep's run at the default value but another layout: held out by the control rule
        write_run(tmp_path / "walt_layout", copy.deepcopy(DEMO_CONFIG), {"fvd_synth": 9.0})
    t = table3(collect_runs(tmp_path), table)
    assert t.frame["n"].tolist() == [3, 3], t.frame
    assert t.summary("fvd")["rows"][t.frame.iloc[1, 0]]["verdict"] == "worse"  # 3 seeds, paired: resolved
