"""Command-line entry points, run as a user would (subprocess where the process boundary matters)."""
import json
import re
from pathlib import Path
import subprocess
import sys

import pytest

from walt.cli import compose_run, describe


def run_cli(*args, cwd=None):
    code = "import sys; from walt.cli import {0}; sys.argv[0] = '{0}'; {0}()".format(args[0])
    return subprocess.run([sys.executable, "-c", code, *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=300)


def refused_in_process(prog, args, cwd, monkeypatch, capsys) -> tuple[int, list[str]]:
    """The entry point called as the console script would, in this process, for a refusal that exits before
    Hydra's app starts (a subprocess would spend ~3.5 s importing Lightning): (exit status, stderr lines)."""
    import walt.cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"walt-{prog}", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        walt.cli.train() if prog == "train" else getattr(walt.cli, prog)(args)
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("overrides,expected", [
    # the paper's shapes: 17x128x128 -> 5x16x16xc and 1x256x256 -> 1x32x32xc; W.A.L.T-L r=2 = 313M
    (["autoencoder=magvit2", "model=walt_l", "data=ucf101"],
     {"input_shape": [17, 128, 128, 3], "latent_shape": [5, 16, 16, 8], "tokens": 1280}),
    (["autoencoder=magvit2", "model=walt_l", "data=imagenet", "autoencoder.latent_channels=16"],
     {"input_shape": [1, 256, 256, 3], "latent_shape": [1, 32, 32, 16], "tokens": 1024}),
    (["autoencoder=tiny", "model=walt_tiny", "model.patch_size=2"],
     {"input_shape": [17, 64, 64, 3], "latent_shape": [5, 8, 8, 8], "tokens": 80}),
])
def test_describe_shapes(overrides, expected):
    record = describe(compose_run(overrides))
    assert {k: record[k] for k in expected} == expected
    assert record["autoencoder_params"] > 0 and record["params"] > 0


def test_walt_l_params_in_info():
    record = describe(compose_run(["autoencoder=magvit2", "model=walt_l", "data=ucf101"]))
    assert abs(record["params"] / 313e6 - 1) < 0.02


def test_walt_info_prints_one_json_line():
    out = run_cli("info", "model.adaln_lora_rank=4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and {"autoencoder_params", "input_shape", "latent_shape", "params", "tokens"} <= set(json.loads(lines[0]))


def test_walt_data_synthetic_writes_the_dataset(tmp_path, capsys):
    from walt.cli import data

    data(["synthetic", f"paths.data_dir={tmp_path}", "data.synthetic.num_groups=2", "data.synthetic.num_classes=2",
          "data.synthetic.resolution=16"])  # in-process: a subprocess would spend ~10 s importing Lightning
    root = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["root"]
    assert root.startswith(str(tmp_path)) and len(list((tmp_path).glob("*/*/*.mp4"))) == 4


def test_help_texts_list_config_groups():
    out = run_cli("data", "--help")
    assert out.returncode == 0 and "data: imagenet, kinetics600, synthetic, ucf101" in out.stdout
    out = run_cli("train", "--help")
    model_line = next(line for line in out.stdout.splitlines() if line.startswith("model: "))
    assert out.returncode == 0 and "walt_l" in model_line and "== Configuration groups ==" in out.stdout
    assert "+sweep=NAME" in out.stdout and "hydra/launcher=slurm" in out.stdout and "dry_run=true" in out.stdout
    from walt.config import SWEEPS_DIR  # the footer lists the sweep folder's presets, read when help is printed
    listed = out.stdout.split("seeds=N replicates every grid point):")[1].split("Launchers:")[0].split()
    assert listed == sorted(p.stem for p in Path(SWEEPS_DIR, "sweep").glob("*.yaml")), listed


@pytest.mark.parametrize("override,message", [
    ("trainer.max_steps=-5", "trainer.max_steps=-5 must be >= 1 (or -1: no limit)"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be > 0"),
    ("optim.ema_decay=1.5", "optim.ema_decay=1.5 must be in [0, 1)"),
    ("data.num_workers=-1", "data.num_workers=-1 must be >= 0"),
    ("optim.warmup_steps=-10", "optim.warmup_steps=-10 must be >= 0"),
    ("first_stage_steps=0", "first_stage_steps=0 must be >= 1"),
])
def test_out_of_range_numbers_are_refused_when_composed(override, message):
    """The same check as the one-line exit-2 cases below (optim.lr, data.batch_size), in-process: before any
    data, autoencoder or run directory is touched."""
    from walt.config import RunConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        RunConfig.load([override])


@pytest.mark.parametrize("prog,args,message", [
    ("train", ["data.foo=1"], "walt-train: error: data.foo is not a config key; valid keys of data: append_images, batch_size,"),
    ("train", ["model.hiden_size=32"], "model.hiden_size is not a config key; valid keys of model: adaln_lora_rank,"),
    ("train", ["experiment=nope"], "Could not find 'experiment/nope'; options: autoencoder_ucf101, demo, "),
    ("train", ["run_name=../../x"], "run_name='../../x' must be a relative name inside outputs/runs"),
    ("train", ["model.patch_size=two"], "walt-train: error: model.patch_size='two' is not a valid int"),
    ("data", ["synthetic", "data.temporal_sampling=middle"], "expected one of [random, center]"),
    ("train", ["optim.lr=-1e-3"], "walt-train: error: optim.lr=-0.001 must be > 0"),
    ("train", ["data.batch_size=0"], "walt-train: error: data.batch_size=0 must be >= 1"),
])
def test_bad_overrides_print_one_line_and_exit_2(prog, args, message, tmp_path, monkeypatch, capsys):
    status, lines = refused_in_process(prog, args, tmp_path, monkeypatch, capsys)
    assert status == 2 and len(lines) == 1 and message in lines[0], lines


def stand_in_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Checkpoint files shaped like a stage-2 run's and like a 4-channel autoencoder's (hyper_parameters only)."""
    import torch

    paths = {"stage2": tmp_path / "stage2.ckpt", "ae4": tmp_path / "ae4.ckpt"}
    torch.save({"hyper_parameters": {"model": {"hidden_size": 32}, "diffusion": {}}, "state_dict": {}}, paths["stage2"])
    torch.save({"hyper_parameters": {"config": {"latent_channels": 4}}, "state_dict": {}}, paths["ae4"])
    return paths


@pytest.mark.parametrize("args,message", [
    (["data=ucf101", "data.root=/nonexistent"], "data.root=/nonexistent is not a directory"),
    (["data=ucf101", "data.synthetic.resolution=16"], "data.synthetic.resolution cannot be set: data.synthetic is null"),
    (["data=ucf101", "paths.data_dir=/nonexistent"], "data.root=/nonexistent/UCF-101 is not a directory"),
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt does not exist"),
    (["first_stage_ckpt=/nonexistent.ckpt"], "first_stage_ckpt=/nonexistent.ckpt does not exist"),
    (["first_stage_ckpt={stage2}"], "is a stage-2 or cascade checkpoint: give the autoencoder run's"),
    (["first_stage_ckpt={ae4}", "autoencoder.latent_channels=8"], "has 4 latent channels but the model takes 8"),
    (["trainer=gpu"], "trainer.accelerator=gpu needs a CUDA GPU and this machine has none"),
    (["trainer=ddp"], "trainer.accelerator=gpu needs a CUDA GPU"),
])
def test_refused_before_any_work_what_this_machine_or_the_named_files_cannot_give(args, message, tmp_path):
    import torch

    from walt.config import RunConfig
    from walt.pipeline import preflight

    if "trainer" in args[0] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=gpu is valid here")
    files = stand_in_checkpoints(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):  # composing or the checks
        preflight.check(RunConfig.load([a.format(**files) for a in args]))


def test_model_channels_must_match_the_autoencoder_when_given():
    from walt.config import RunConfig

    with pytest.raises(ValueError, match=re.escape("model.in_channels=4 but the autoencoder's latents have 8 channels")):
        RunConfig.load(["autoencoder=micro", "autoencoder.latent_channels=8", "model.in_channels=4"])
    assert RunConfig.load(["autoencoder=micro", "autoencoder.latent_channels=8", "model.in_channels=8"]).model.in_channels == 8


@pytest.mark.parametrize("args,message", [
    (["data=ucf101", "data.root=/nonexistent"], "walt-train: error: data.root=/nonexistent is not a directory"),
    (["first_stage_ckpt={stage2}"], "is a stage-2 or cascade checkpoint"),
])
def test_preflight_refusal_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, monkeypatch, capsys):
    files = stand_in_checkpoints(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    status, lines = refused_in_process("train", [a.format(**files) for a in args], work, monkeypatch, capsys)
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not list(work.iterdir())  # no outputs/, no Hydra run directory, no autoencoder


@pytest.mark.parametrize("args,message", [
    (["+sweep=table3a", "model.patch_size=1,two"], "sweep job model.patch_size=two: model.patch_size='two' is not a valid int"),
    (["+sweep=table3a", "model.hiden=3"], "model.hiden is not a config key"),
    (["+sweep=nope"], "Could not find 'sweep/nope'; options: adaln, demo,"),
    (["+sweep=table3a", "run_name=../../x"], "run_name='../../x' must be a relative name"),
    (["+sweep=table3a", "data=ucf101", "data.root=/nonexistent"], "data.root=/nonexistent is not a directory"),
])
def test_a_sweep_with_one_bad_job_launches_nothing(args, message, tmp_path, monkeypatch, capsys):
    """Every distinct job of a -m sweep is composed and checked before Hydra launches the first: one line, exit 2,
    no outputs/ (Hydra's sweep directory included)."""
    status, lines = refused_in_process("train", ["-m", *args], tmp_path, monkeypatch, capsys)
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not list(tmp_path.iterdir())


def test_sweep_points_cross_the_command_line_with_the_preset():
    from walt.config.sweep import sweep_points

    points = sweep_points(["-m", "+sweep=table3a", "seeds=2", "model.patch_size=1,2", "hydra/launcher=slurm"])
    assert sorted(tuple(p) for p in points) == sorted(
        ("+sweep=table3a", "seeds=2", f"seed={s}", "first_stage_seed=0", f"model.patch_size={p}") for s in (0, 1) for p in (1, 2))


def test_refusals_exit_3_with_one_line_before_any_work(tmp_path, synthetic_root):
    """A run directory in use, or an unfinished run resumed with a changed model: 'refused', exit 3, decided before
    the autoencoder stage or Hydra touch the directory (its .hydra/overrides.yaml keeps the first run's)."""
    import textwrap

    common = ["stage=autoencoder", "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=16",
              "data.num_frames=5", "data.num_workers=0", "data.batch_size=2", "autoencoder=micro", "trainer=cpu",
              "logger=csv", "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
              "~callbacks.rich_progress_bar", "eval.after_train=false", "run_name=r", f"paths.output_dir={tmp_path / 'out'}"]
    first = run_cli("train", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "out" / "runs" / "r"
    (run_dir / "COMPLETED").unlink()  # unfinished: a re-run resumes, and must keep the config
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    changed = run_cli("train", *common, "autoencoder.base_channels=16", cwd=tmp_path)
    assert changed.returncode == 3, changed.stderr[-2000:]
    line, = changed.stderr.strip().splitlines()
    assert line.startswith("walt-train: refused: ") and "autoencoder.base_channels: 8 -> 16" in line
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from walt.runs import run_lock
        with run_lock(Path({str(run_dir)!r})):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = run_cli("train", *common, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 3, busy.stderr[-2000:]
    line, = busy.stderr.strip().splitlines()
    assert line.startswith("walt-train: refused: ") and f'"pid": {holder.pid}' in line


def test_an_unsafe_checkpoint_is_refused_naming_the_file_and_runs_nothing(tmp_path):
    """A pickle whose loading would run code, given where a checkpoint goes (first_stage_ckpt): one line naming
    the file, exit 2, and its code never ran."""
    marker = tmp_path / "ran"
    code = f"import pickle, os\nclass Evil:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n" \
           f"import torch\ntorch.save({{'hyper_parameters': Evil()}}, '{tmp_path / 'evil.ckpt'}')\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = run_cli("train", f"first_stage_ckpt={tmp_path / 'evil.ckpt'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    line, = out.stderr.strip().splitlines()
    assert str(tmp_path / "evil.ckpt") in line and "refused by a weights-only load" in line
    assert not marker.exists()


@pytest.mark.slow
def test_walt_train_ddp_on_two_cpu_processes_completes(tmp_path, synthetic_root):
    """`walt-train trainer=ddp` as a user runs it: Lightning starts rank 1 by re-running the command, and rank 1's
    pre-flight must join the run rank 0 holds, not refuse it as "in use" (it did, and the run hung)."""
    import os

    script = Path(sys.executable).parent / "walt-train"
    args = ["stage=autoencoder", "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=16",
            "data.num_frames=5", "data.num_workers=0", "data.batch_size=2", "autoencoder=micro", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "logger=csv",
            "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
            "~callbacks.rich_progress_bar", "eval.after_train=false", "run_name=ddp", f"paths.output_dir={tmp_path / 'out'}"]
    out = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "out" / "runs" / "ddp" / "COMPLETED").is_file() and "refused" not in out.stderr


def test_sweep_error_is_one_line_for_a_job_without_result_and_re_raises_anything_else():
    """submitit's UncompletedJobError (a cancelled or killed Slurm job; the real one: tests/test_slurm.py) becomes one
    line naming the job, its state and log; any other exception, even one with the same class name, propagates."""
    from submitit.core.utils import UncompletedJobError

    from walt.cli import SweepJobFailed, sweep_error

    err = UncompletedJobError("Job 41_0 (task: 0) with path /o/.submitit/41/41_0_0_result.pkl\n"
                              "has not produced any output (state: CANCELLED by 0)\nError stream produced:\n...")
    line = sweep_error(err)
    assert "\n" not in line and line.startswith("walt-train: error: Slurm job 41_0 ended without a result (state "
                                                "CANCELLED by 0; its log: /o/.submitit/41/41_0_0_log.err)")
    assert sweep_error(SweepJobFailed("walt-train: error: sweep job seed=1: boom")).endswith("boom")
    lookalike = type("UncompletedJobError", (RuntimeError,), {})("Job 1 (state: X)")
    with pytest.raises(RuntimeError, match="Job 1"):
        sweep_error(lookalike)
