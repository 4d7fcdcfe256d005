"""The Slurm path against a real cluster: tests/slurm/cluster.sh brings up two slurmd nodes (n1, n2) with
accounting on this host (the `slurm_cluster` fixture, shared by the session). walt-train goes through
hydra/launcher=slurm exactly as on a cluster; only the resources are the local ones (no GPUs, 1 CPU, 1 GB).

Every process runs one intra-op thread (OMP_NUM_THREADS=1), so runs on Slurm and local runs compute alike."""
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]  # one worker: they share the cluster

WALT_TRAIN = str(Path(sys.executable).parent / "walt-train")
README = Path(__file__).resolve().parents[1] / "README.md"
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
# Max |DDP - one process| over every weight; the tolerance of tests/test_distributed.py (observed 2.0e-07 for
# 2 ranks x batch 2 vs batch 4 on this stage-1 config).
WEIGHT_TOLERANCE = 1e-5


# The demo at the smallest size that trains, evaluates and fills a table (as tests/test_sweeps.py)
TINY_DEMO = ["experiment=demo", "seeds=1", "data.synthetic.num_classes=2", "data.synthetic.num_groups=3",
             "data.synthetic.resolution=16", "data.num_workers=0", "data.batch_size=4", "first_stage_steps=2",
             "trainer.max_steps=20", "trainer.val_check_interval=10", "eval.num_samples=8", "eval.num_real=8",
             "eval.batch_size=8", "eval.sampling_steps=2", "eval.extractor_options={epochs: 1, width: 4}",
             "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]


def tiny_stage2(out: Path) -> list[str]:
    return [*TINY_DEMO, f"paths.output_dir={out}", f"paths.data_dir={out.parent}/data"]


def readme_laptop_block() -> list[list[str]]:
    """The README's "try the launcher on a laptop" block: its command lines, continuations joined."""
    block, = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if "make slurm-up" in b]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def walt_train(args, cwd, env, timeout=300, background=False, log=None):
    cmd = [WALT_TRAIN, *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(slurm_cluster):
    return {**os.environ, **slurm_cluster, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}


AXES = ("model.self_cond_prob",)  # the axis the README block sweeps once shrunk


def run_dirs(root: Path) -> dict[str, Path]:
    """{swept override (model.self_cond_prob=..): run dir} of every finished run under root."""
    found = {}
    for results in root.rglob("results.json"):
        overrides = json.loads(results.read_text()).get("overrides", [])
        found[",".join(o for o in overrides if o.startswith(AXES))] = results.parent
    return found


def job_of(cwd: Path) -> str:
    """The id of the one job submitted from `cwd` that is still in the queue (a finished job of another test
    may still show as COMPLETING)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30, env={**os.environ})
    jobs = [job for job, workdir in (line.split() for line in out.stdout.splitlines()) if workdir == str(cwd)]
    assert len(jobs) == 1, out.stdout
    return jobs[0]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]  # written atomically


def weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def test_the_readme_block_sweeps_on_slurm_with_the_local_launchers_numbers_and_tables(tmp_path, env, slurm_cluster):
    """The README's laptop block as written, sizes shrunk (TINY_DEMO and one patch size appended): the sweep is
    one array job, and its numbers (bit for bit) and its walt-tables tables equal the local launcher's."""
    up, export, train, tables, down = readme_laptop_block()
    assert up == ["sudo", "make", "slurm-up"] and down == ["sudo", "make", "slurm-down"]  # what the fixture does
    assert export == ["export", f"SLURM_CONF={slurm_cluster['SLURM_CONF']}"] and tables[0] == "walt-tables"
    assert train[0] == "walt-train" and "hydra/launcher=slurm" in train
    shrink = [*TINY_DEMO, "model.patch_size=2"]  # 2 jobs: self-conditioning 0.0 and 0.9 (Table 3c)
    for side, args in (("local", [a for a in train[1:] if not a.startswith(("hydra/launcher", "hydra.launcher"))]),
                       ("slurm", train[1:])):
        (tmp_path / side).mkdir()
        out = walt_train([*args, *shrink], tmp_path / side, env)  # outputs/ and data/ in the working directory
        assert out.returncode == 0, out.stderr[-3000:]
        assert "srun" not in out.stdout + out.stderr  # Lightning's "srun is available but not used" hint
    sweep_dir = tmp_path / "slurm" / tables[1]
    scripts = list(sweep_dir.glob(".submitit/*/*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1" in scripts[0].read_text()  # one array job of 2 tasks
    job = scripts[0].parent.name
    states = lambda: subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True,
                                    env=env, timeout=30).stdout.split()
    wait_until(lambda: states() == ["COMPLETED", "COMPLETED"], 60, f"sacct to show both tasks COMPLETED ({states()})")
    ours, theirs = run_dirs(tmp_path / "local" / tables[1]), run_dirs(sweep_dir)
    assert sorted(ours) == sorted(theirs) == ["model.self_cond_prob=0.0", "model.self_cond_prob=0.9"]
    for point in ours:  # bit for bit: every metric, the autoencoder's included
        a, b = (json.loads((d[point] / "results.json").read_text())["metrics"] for d in (ours, theirs))
        assert a == b, point
    written = {}
    for side in ("local", "slurm"):
        got = subprocess.run([str(Path(sys.executable).parent / "walt-tables"), *tables[1:]], cwd=tmp_path / side,
                             env=env, capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr[-3000:]
        # the paper tables (all_runs.csv lists run directories, which differ)
        written[side] = {p.name: p.read_text() for p in (tmp_path / side / tables[1] / "tables").glob("table*.*[dv]")}
    assert {"table3c.csv", "table3c.md"} <= set(written["local"]) and written["local"] == written["slurm"]


def test_requeue_and_the_time_limit_signal_save_and_resume_into_the_same_run_bit_exact(tmp_path, env):
    """`scontrol requeue` (SIGTERM) mid-training, then the warning signal Slurm sends before a time limit
    (USR2, `--signal=USR2@signal_delay_s`; sent here with `scancel --signal` rather than waiting out a limit):
    each saves last.ckpt, the job is requeued and resumes in the same run directory; the finished weights equal
    an uninterrupted run's, and results.json counts the 2 restarts."""
    common = [*tiny_stage2(tmp_path / "slurm"), "trainer.max_steps=150", "trainer.val_check_interval=150",
              "callbacks.model_checkpoint.every_n_train_steps=10", "eval.after_train=false"]
    reference = walt_train(["-m", *common, "run_name=reference"], tmp_path, env)  # the local launcher
    assert reference.returncode == 0, reference.stderr[-3000:]

    proc = walt_train(["-m", *common, "run_name=preempted", *LAUNCHER], tmp_path, env, background=True,
                      log=tmp_path / "sweep.log")
    try:
        job_log = lambda: next((tmp_path / "slurm" / "multirun" / "preempted").glob("*/walt-train.log"), None)
        resumes = lambda: job_log().read_text().count("resuming from") if job_log() else 0
        wait_until(lambda: any((tmp_path / "slurm" / "multirun" / "preempted").glob("*/checkpoints/last.ckpt")),
                   120, "the job's first checkpoint")
        last, = (tmp_path / "slurm" / "multirun" / "preempted").glob("*/checkpoints/last.ckpt")
        job = job_of(tmp_path)
        subprocess.run(["scontrol", "requeue", job], check=True, env=env, timeout=30)
        wait_until(lambda: resumes() == 1, 120, "the requeued job to resume")
        requeued_at = step(last)
        # the signal while training (submitit's handler alone, before the trainer is up, requeues without a save)
        wait_until(lambda: step(last) > requeued_at, 120, "the resumed job's next checkpoint")
        subprocess.run(["scancel", "--signal=USR2", job], check=True, env=env, timeout=30)
        wait_until(lambda: resumes() == 2, 120, "the job to resume after the time-limit signal")
        assert proc.wait(timeout=180) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        proc.kill()
    run_dir = job_log().parent
    log = job_log().read_text()
    assert "Received SIGTERM" in log and "Caught signal SIGUSR2" in log, log[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 150 and results["restarts"] == 2 and (run_dir / "COMPLETED").exists()
    ref, = (tmp_path / "slurm" / "multirun" / "reference").glob("*/checkpoints/last.ckpt")
    ref, got = weights(ref), weights(run_dir / "checkpoints" / "last.ckpt")
    assert ref.keys() == got.keys()
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []  # bit for bit


def test_multi_node_ddp_on_slurm_equals_one_process_on_the_same_global_batch(tmp_path, env, synthetic_root):
    """DDP over Slurm tasks (gloo on CPU; Lightning reads the ranks from Slurm), on 2 nodes x 1 task and on
    1 node x 2 tasks: 2 ranks x batch 2 against one process with batch 4. Center clips: random temporal crops
    are drawn per rank, by design."""
    common = ["stage=autoencoder", "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4",
              "data.resolution=16", "data.num_frames=5", "data.num_workers=0", "data.temporal_sampling=center",
              "autoencoder=micro", "logger=csv", "trainer.max_steps=4", "trainer.limit_val_batches=1",
              "trainer.precision=32-true", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar",
              "eval.after_train=false", f"paths.output_dir={tmp_path / 'out'}"]
    one = walt_train([*common, "data.batch_size=4", "run_name=one"], tmp_path, env)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = weights(tmp_path / "out" / "runs" / "one" / "checkpoints" / "last.ckpt")
    for nodes, tasks in ((2, 1), (1, 2)):
        name = f"ddp{nodes}x{tasks}"
        ddp = walt_train(["-m", *common, "data.batch_size=2", f"run_name={name}", "trainer=ddp", "trainer.accelerator=cpu",
                          f"trainer.num_nodes={nodes}", f"trainer.devices={tasks}", *LAUNCHER,
                          f"hydra.launcher.nodes={nodes}", f"hydra.launcher.tasks_per_node={tasks}"], tmp_path, env)
        assert ddp.returncode == 0, ddp.stderr[-3000:]
        run_dir, = {p.parent for p in (tmp_path / "out" / "multirun" / name).glob("*/COMPLETED")}
        script, = (tmp_path / "out" / "multirun" / name).glob(".submitit/*/*_submission.sh")
        assert f"#SBATCH --nodes={nodes}" in script.read_text() and f"#SBATCH --ntasks-per-node={tasks}" in script.read_text()
        got = weights(run_dir / "checkpoints" / "last.ckpt")
        diff = max((ref[k].float() - got[k].float()).abs().max().item() for k in ref)
        print(f"\n{nodes} node(s) x {tasks} task(s) on Slurm vs one process: max |diff| {diff:.3g}")
        assert diff <= WEIGHT_TOLERANCE, (nodes, tasks)


def test_a_failed_or_cancelled_job_ends_the_sweep_with_its_line_and_a_rerun_finishes_it(tmp_path, env):
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = walt_train(["-m", "experiment=demo", "data=ucf101", f"data.root={empty}", f"paths.output_dir={tmp_path / 'out'}",
                         *LAUNCHER], tmp_path, env, timeout=180)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert "UCF-101 split lists (ucfTrainTestlist/) not found" in last and "Traceback" not in failed.stderr, failed.stderr[-3000:]

    common = [*tiny_stage2(tmp_path / "out"), "trainer.max_steps=200", "eval.after_train=false", "run_name=cancelled",
              "callbacks.model_checkpoint.every_n_train_steps=20", *LAUNCHER]
    proc = walt_train(["-m", *common], tmp_path, env, background=True, log=tmp_path / "sweep.log")
    try:
        wait_until(lambda: any((tmp_path / "out" / "multirun" / "cancelled").glob("*/checkpoints/last.ckpt")),
                   120, "the job's first checkpoint")
        job = job_of(tmp_path)
        subprocess.run(["scancel", job], check=True, env=env, timeout=30)
        assert proc.wait(timeout=120) == 1
    finally:
        proc.kill()
    last = (tmp_path / "sweep.log").read_text().strip().splitlines()[-1]
    assert f"Slurm job {job}" in last and "CANCELLED" in last and "re-run" in last, last
    again = walt_train(["-m", *common], tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    run_dir, = {p.parent for p in (tmp_path / "out" / "multirun" / "cancelled").glob("*/COMPLETED")}
    assert json.loads((run_dir / "results.json").read_text())["restarts"] == 1
