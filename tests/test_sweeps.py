"""Sweeps through the launchers: the Slurm launcher up to job submission (a stand-in sbatch
captures the array job), and interrupted local sweeps that resume."""
import os
import stat
import subprocess
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
