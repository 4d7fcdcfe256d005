"""Sweeps through the launchers: the Slurm launcher up to job submission (a stand-in sbatch
captures the array job), and interrupted local sweeps that resume."""
import os
import stat
import subprocess

import pytest
import sys
import textwrap


def walt_train(args, cwd, env=None, timeout=600):
    code = "import sys; from walt.cli import train; sys.argv[0] = 'walt-train'; train()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_slurm_launcher_submits_one_array_job_per_sweep(tmp_path):
    bin_dir, captured = tmp_path / "bin", tmp_path / "captured"
    bin_dir.mkdir(), captured.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        cp "$1" {captured}/job.sh
        echo "sbatch stand-in: no cluster here" >&2
        exit 1
    """))
    srun = bin_dir / "srun"  # submitit only checks that it exists
    srun.write_text("#!/bin/sh\nexit 1\n")
    for tool in (sbatch, srun):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    out = walt_train(["-m", "+sweep=table3a", "hydra/launcher=slurm", "hydra.launcher.partition=debugq",
                      "hydra.launcher.account=proj", "hydra.launcher.timeout_min=90"],
                     cwd=tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "WALT_OUTPUTS": str(tmp_path / "out")})
    assert out.returncode != 0 and "sbatch stand-in" in out.stdout + out.stderr
    script = (captured / "job.sh").read_text()
    for flag in ("--partition=debugq", "--account=proj", "--gpus-per-node=1", "--ntasks-per-node=1",
                 "--time=90", "--signal=USR2@300", "--array=0-2%3", "--cpus-per-task=10"):
        assert flag in script, f"{flag} missing from the sbatch script:\n{script}"
    # the array's jobs land in the sweep directory named by the preset's fixed run_name
    assert str(tmp_path / "out" / "multirun" / "table3a") in script


@pytest.mark.slow
def test_interrupted_sweep_resumes_skips_finished_and_fills_the_table(tmp_path):
    """Kill a local multirun (SIGKILL, at step 60 of its second job: tests/helpers/kill_at.py), run the same
    command again: the finished job is skipped, the killed one resumes from its last.ckpt (step 50), and
    Table 3a gets both rows."""
    import json
    from pathlib import Path

    import torch

    from analysis.cli import main as tables_main

    args = ["-m", "experiment=demo", "+sweep=table3a", "model.patch_size=1,2", "seeds=1", f"paths.output_dir={tmp_path}/out",
            f"paths.data_dir={tmp_path}/data", "data.synthetic.num_classes=2", "data.synthetic.num_groups=3",
            "data.synthetic.resolution=16", "data.num_workers=0", "data.batch_size=4", "first_stage_steps=2", "trainer.max_steps=100",
            "trainer.val_check_interval=50", "callbacks.model_checkpoint.every_n_train_steps=25",
            "eval.num_samples=8", "eval.num_real=8", "eval.batch_size=8", "eval.sampling_steps=2",
            "eval.extractor_options={epochs: 1, width: 4}", "trainer.enable_progress_bar=false",
            "~callbacks.rich_progress_bar", "+callbacks.kill._target_=kill_at.KillAt", "+callbacks.kill.step=60",
            "+callbacks.kill.job=1", f"+callbacks.kill.marker={tmp_path}/killed"]
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "helpers"), os.environ.get("PYTHONPATH", "")])}
    sweep = tmp_path / "out" / "multirun" / "table3a"
    killed = walt_train(args, cwd=tmp_path, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    jobs = [p for p in sweep.iterdir() if (p / "checkpoints").is_dir()]
    first, second = sorted(jobs, key=lambda p: not (p / "COMPLETED").exists())
    assert len(jobs) == 2 and (first / "COMPLETED").exists() and not (second / "COMPLETED").exists()
    killed_at = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert killed_at == 50
    first_mtime = (first / "results.json").stat().st_mtime

    out = walt_train(args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "is complete" in log and "skipping" in log                      # finished job skipped
    assert f"resuming from {second / 'checkpoints' / 'last.ckpt'} (step {killed_at})" in log
    assert (first / "results.json").stat().st_mtime == first_mtime        # and untouched
    results = json.loads((second / "results.json").read_text())
    assert results["global_step"] == 100 and (second / "COMPLETED").exists()

    tables_main([str(sweep), "--out", str(tmp_path / "tables"), "--tables", "3a", "--no-control"])
    table = (tmp_path / "tables" / "table3a.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "FVD_synth" in table
    for p in ("1", "2"):
        cells = [c.strip() for c in rows[p].split("|")]
        assert "—" not in cells[3], f"row p={p} has no value of ours: {rows[p]}"
    assert "—" in [c.strip() for c in rows["4"].split("|")][3]            # no run: missing, not 0


@pytest.mark.slow
def test_layouts_sweep_runs_and_fills_the_cross_paper_table(tmp_path):
    """The cross-paper sweep (W.A.L.T, full, Latte V1-V4, LaVie) trains and evaluates every variant on the
    synthetic data at a tiny budget, and walt-tables fills every row of tablelayouts (~40 s on 2 cores)."""
    import pandas as pd

    from analysis.cli import main as tables_main
    from analysis.layouts import LAYOUT_ROWS

    args = ["-m", "experiment=demo", "+sweep=layouts", "seeds=1", f"paths.output_dir={tmp_path}/out",
            f"paths.data_dir={tmp_path}/data", "data.synthetic.num_classes=2", "data.synthetic.num_groups=3",
            "data.synthetic.resolution=16", "data.num_workers=0", "data.batch_size=4", "first_stage_steps=2",
            "trainer.max_steps=4", "trainer.val_check_interval=4", "eval.num_samples=8", "eval.num_real=8",
            "eval.batch_size=8", "eval.sampling_steps=2", "eval.extractor_options={epochs: 1, width: 4}",
            "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
    out = walt_train(args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "out" / "multirun" / "layouts"
    assert len(list(sweep.glob("*/COMPLETED"))) == 7
    assert tables_main([str(sweep), "--out", str(tmp_path / "tables")]) == 0
    frame = pd.read_csv(tmp_path / "tables" / "tablelayouts.csv").set_index("layout")
    named = [label for label in LAYOUT_ROWS if not label.startswith("spatial")]
    assert list(frame.index) == named
    for column in ("FVD_synth (ours)", "steps/s (ours)", "params [M] (ours)"):
        assert frame[column].notna().all() and (frame[column].astype(str) != "—").all(), frame[column]
    assert frame["n"].tolist() == [1] * 7


def test_first_stage_seeds_cross_autoencoders_with_seeds(tmp_path):
    """first_stage_seeds=K x seeds=M: every grid point runs K x M jobs in distinct directories; K = 1 keeps
    the directory names of sweeps without autoencoder replicates."""
    import json

    out = walt_train(["-m", "experiment=demo", "+sweep=table3a", "model.patch_size=1,2", "seeds=2",
                      "first_stage_seeds=2", "dry_run=true", f"paths.output_dir={tmp_path}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"run_dir"')]
    dirs = {os.path.basename(j["run_dir"]) for j in jobs}
    assert len(jobs) == len(dirs) == 8
    assert "experiment=demo,model.patch_size=1,seed=0" in dirs
    assert "experiment=demo,model.patch_size=1,seed=0,first_stage_seed=1" in dirs
    assert sum("first_stage_seed=1" in j["overrides"] for j in jobs) == 4
