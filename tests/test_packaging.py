"""A non-editable install (configs shipped as package data) runs walt-info and a 2-step training from
another directory, so nothing depends on the checkout's layout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_runs_info_and_a_tiny_training(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    assert list((target / "walt" / "experiments" / "model").glob("walt_l.yaml"))
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def cli(entry, *args):
        code = f"import sys, walt; assert walt.__file__.startswith({str(target)!r}), walt.__file__; " \
               f"from walt.cli import {entry}; sys.argv[0] = 'walt-{entry}'; {entry}()"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)

    out = cli("info", "model=walt_l", "autoencoder=magvit2", "data=ucf101")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["latent_shape"] == [5, 16, 16, 8]

    out = cli("train", "stage=autoencoder", "trainer.max_steps=2", "run_name=tiny", "data.num_workers=0",
              "data.synthetic.num_groups=2", "data.synthetic.num_classes=2", "data.synthetic.resolution=16",
              "data.batch_size=2", "trainer.limit_val_batches=1", "trainer.val_check_interval=2",
              "~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false")
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((work / "outputs" / "runs" / "tiny" / "results.json").read_text())
    assert results["global_step"] == 2 and (work / "outputs" / "runs" / "tiny" / "COMPLETED").exists()


@pytest.mark.parametrize("folder", ["benchmarks", "analysis"])
def test_scripts_outside_the_package_compile_on_this_python(folder):
    """benchmarks/ and analysis/ are not imported by the other tests: a syntax error there (a 3.12-only
    f-string once broke `make bench` on 3.11) would otherwise only show when a user runs them."""
    for path in sorted((ROOT / folder).glob("*.py")):
        compile(path.read_text(), str(path), "exec")


def test_data_benchmark_measures_its_configurations(monkeypatch):
    """`make bench`'s data section runs (it once called bench_data with a stale signature and fell back to flags
    the script did not take): tiny videos, one round, both item contracts; ratios only of what it measured."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_data import measure

    configs = [(0, "seek+resized", "uint8"), (0, "full", "uint8"), (1, "seek+resized", "uint8"),
               (1, "seek+resized", "float32")]
    out = measure(videos=4, seconds=1, repeat=2, rounds=1, batch_size=2, clips=4, configs=configs, log=lambda _: None)
    assert set(out["clips_per_s"]) == set(out["cpu_ms_per_clip"]) == {
        "workers=0 seek+resized uint8", "workers=0 full uint8", "workers=1 seek+resized uint8",
        "workers=1 seek+resized float32"}
    assert all(v > 0 for v in out["clips_per_s"].values()) and out["probe_ms_per_file"] > 0
    assert set(out["ratios"]) == {"new loader vs old, seek+resized / full (0 workers)", "1 worker vs 0 workers",
                                  "uint8 vs float32 items (1 worker)"}
