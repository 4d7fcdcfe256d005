"""walt-demo's closing check: every trained run must beat the untrained baseline's fvd_synth and their median
close enough of the gap to the autoencoder's reconstructions (the check's logic on written results, no training)."""
import json
from types import SimpleNamespace

import pytest

from walt import runs
from walt.demo import MIN_GAP_CLOSED, check


def write(out, baseline, trained):
    runs.update_results(out / "demo_baseline", metrics={"fvd_synth": baseline})
    for name, (fvd, rfvd) in trained.items():
        run_dir = out / "multirun" / "demo" / name
        runs.update_results(run_dir, metrics={"fvd_synth": fvd, "first_stage/rfvd_synth": rfvd})
        (run_dir / runs.COMPLETED).touch()
    (out / "tables").mkdir(exist_ok=True)
    (out / "tables" / "summary.json").write_text(json.dumps({}))
    return SimpleNamespace(paths=SimpleNamespace(output_dir=str(out)), first_stage_steps=200)


def test_runs_at_the_autoencoder_ceiling_pass(tmp_path):
    # measured demo runs whose fvd_synth beat the autoencoder's own reconstructions: baseline 198.7, runs 138.5 / 148.8, autoencoder 140.9
    summary = check(write(tmp_path, 198.7, {"a": (138.5, 140.9), "b": (148.8, 140.9)}))
    assert summary["passed"] and summary["gap_closed"] == {"a": 1.04, "b": 0.86}


def test_the_measured_demo_passes(tmp_path):
    # the 8 runs of a measured demo with the 400-step c = 16 autoencoder
    fvd = [60.36, 58.86, 58.61, 63.05, 63.96, 70.84, 75.88, 67.9]
    summary = check(write(tmp_path, 87.56, {str(i): (f, 50.65) for i, f in enumerate(fvd)}))
    assert summary["passed"] and min(summary["gap_closed"].values()) == 0.32 and summary["median_gap_closed"] == 0.65


def test_a_run_no_better_than_untrained_fails_the_demo(tmp_path):
    with pytest.raises(SystemExit, match="beat the untrained baseline"):
        check(write(tmp_path, 198.7, {"a": (138.5, 140.9), "b": (138.5, 140.9), "c": (199.0, 140.9)}))


def test_runs_that_barely_improve_fail_the_demo(tmp_path):
    bad = 198.7 - (MIN_GAP_CLOSED - 0.1) * (198.7 - 140.9)
    with pytest.raises(SystemExit, match="gap"):
        check(write(tmp_path, 198.7, {"a": (138.5, 140.9), "b": (bad, 140.9), "c": (bad, 140.9)}))


def test_a_run_without_metrics_fails_the_demo(tmp_path):
    with pytest.raises(SystemExit, match="gap"):
        check(write(tmp_path, 198.7, {"a": (138.5, 140.9), "b": (None, None)}))


def test_an_autoencoder_no_better_than_untrained_is_named_as_the_failure(tmp_path):
    # a measured demo whose 200-step autoencoder reached 14.6 dB, rfvd_synth 222
    with pytest.raises(SystemExit, match=r"autoencoder's reconstructions \(rfvd_synth 222.0\) are no better"):
        check(write(tmp_path, 220.37, {"a": (214.61, 222.0), "b": (207.92, 222.0)}))
