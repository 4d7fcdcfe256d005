"""Run integrity on tiny real runs (the stage-1 autoencoder on 16 px synthetic clips): exact resume after a
kill, SIGTERM, force, config changes on resume, crash-safe checkpoints, one process per run directory."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from walt import runs
from walt.config import RunConfig
from walt.modules.autoencoder import AutoencoderModule
from walt.modules.checkpointing import AtomicCheckpointIO, resume_checkpoint
from walt.pipeline.fit import train_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny 3D convs: one thread avoids OpenMP stalls on a busy box


class Crash(Exception):
    """Stands in for a node failure right after the step-`at` checkpoint."""


def make_run(tmp_path, synthetic_root, steps, *extra, name="run"):
    return RunConfig.load([
        "stage=autoencoder", "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=16",
        "data.num_frames=5", "data.num_workers=0", "data.batch_size=2", f"trainer.max_steps={steps}",
        "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "callbacks.model_checkpoint.every_n_train_steps=1",
        "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar", "autoencoder.base_channels=8",
        "autoencoder.norm_groups=4", "autoencoder.log_videos=0", f"paths.run_dir={tmp_path / name}", *extra,
    ])


def crashing_at(step):
    def build(run):
        module = AutoencoderModule(run.autoencoder)

        def on_train_batch_end(outputs, batch, batch_idx):
            if module.global_step == step:
                raise Crash(step)

        module.on_train_batch_end = on_train_batch_end
        return module
    return build


def weights(run_dir):
    return torch.load(run_dir / runs.LAST_CKPT, weights_only=True)["state_dict"]


@pytest.mark.parametrize("batch", [[], ["data.batch_size=12"]], ids=["6-batch epochs", "1-batch epochs"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, synthetic_root, batch):
    """Bitwise on CPU: model, EMA (with its update count), optimizers, schedulers, RNG and data position.
    Two kills: one before and one after a validation (step 4, 8) and an epoch end (step 6); with one-batch
    epochs every save is at an epoch's end, where Lightning's epoch counter lags after a resume (the second
    resume replayed the previous epoch's batches before walt.data.sampling took the epoch from the steps)."""
    train_stage(make_run(tmp_path, synthetic_root, 9, *batch, name="straight"))
    for step in (3, 7):
        with pytest.raises(Crash):
            train_stage(make_run(tmp_path, synthetic_root, 9, *batch, name="killed"), build=crashing_at(step))
    train_stage(make_run(tmp_path, synthetic_root, 9, *batch, name="killed"))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and int(b["ema.n_averaged"]) == 9
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_at_that_step_and_exits_nonzero(tmp_path, synthetic_root, signum):
    """SIGTERM (a scheduler, `kill`) and Ctrl-C alike: last.ckpt at the next batch boundary, exit 128 + signal;
    the handlers are put back as they were."""
    before = signal.getsignal(signum)
    if signum == signal.SIGINT:  # as in a terminal (a background job, e.g. under nohup, starts with SIGINT ignored)
        signal.signal(signum, signal.default_int_handler)

    def build(run):
        module = AutoencoderModule(run.autoencoder)
        step = module.training_step

        def training_step(batch, batch_idx):
            if module.global_step == 2:
                os.kill(os.getpid(), signum)  # lands mid-step; the save waits for the batch end
            return step(batch, batch_idx)

        module.training_step = training_step
        return module

    with pytest.raises(SystemExit) as exit_:
        train_stage(make_run(tmp_path, synthetic_root, 50, "callbacks.model_checkpoint.every_n_train_steps=100"),
                    build=build)
    assert exit_.value.code == 128 + signum
    assert torch.load(tmp_path / "run" / runs.LAST_CKPT, weights_only=True)["global_step"] == 3
    assert not runs.is_complete(tmp_path / "run")
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler, None)
    signal.signal(signum, before)


def test_force_starts_over_and_keeps_the_old_run(tmp_path, synthetic_root):
    first = train_stage(make_run(tmp_path, synthetic_root, 4))
    forced = train_stage(make_run(tmp_path, synthetic_root, 2, "force=true"))
    assert forced["global_step"] == 2 and forced["steps_per_sec"] > 0
    kept = list((tmp_path / "run" / ".replaced").iterdir())
    assert len(kept) == 1 and json.loads((kept[0] / runs.RESULTS).read_text())["global_step"] == first["global_step"]
    assert not (kept[0] / runs.COMPLETED).exists() and (kept[0] / f"{runs.COMPLETED}.replaced").exists()


def test_resume_applies_a_changed_lr_and_refuses_a_changed_model(tmp_path, synthetic_root, caplog):
    train_stage(make_run(tmp_path, synthetic_root, 4))
    (tmp_path / "run" / runs.COMPLETED).unlink()
    with pytest.raises(ValueError, match=r"autoencoder.base_channels: 8 -> 16.*force=true.*run_name"):
        train_stage(make_run(tmp_path, synthetic_root, 6, "autoencoder.base_channels=16"))
    with caplog.at_level("INFO"):
        train_stage(make_run(tmp_path, synthetic_root, 6, "autoencoder.optim.lr=0.0005"))
    assert "autoencoder.optim.lr: 0.001 -> 0.0005" in caplog.text
    ckpt = torch.load(tmp_path / "run" / runs.LAST_CKPT, weights_only=True)
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == 0.0005 and group["lr"] == pytest.approx(0.0005 * 7 / 20)  # warm-up (s+1)/20 at s=6
    # a finished run asked again with another config says so instead of skipping silently
    with caplog.at_level("WARNING"):
        train_stage(make_run(tmp_path, synthetic_root, 6, "autoencoder.optim.lr=0.0001"))
    assert "complete but was trained with another config" in caplog.text


def test_interrupted_save_keeps_the_old_checkpoint_and_resume_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))  # the temp file must not live here
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the kill arrives mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial temp file left

    AtomicCheckpointIO().save_checkpoint({"global_step": 5}, path.parent / "step0000005.ckpt")
    assert resume_checkpoint(tmp_path) == path.parent / "step0000005.ckpt"  # intact but newer than last.ckpt (step 1)
    AtomicCheckpointIO().save_checkpoint({"global_step": 6}, path)
    assert resume_checkpoint(tmp_path) == path  # last.ckpt at the highest step
    path.write_bytes(path.read_bytes()[:40])  # a last.ckpt torn by a non-atomic writer
    assert resume_checkpoint(tmp_path) == path.parent / "step0000005.ckpt"


def test_final_step_is_saved_and_top_k_is_honoured(tmp_path, synthetic_root):
    train_stage(make_run(tmp_path, synthetic_root, 5, "callbacks.model_checkpoint.every_n_train_steps=2",
                         "callbacks.model_checkpoint.save_top_k=2"))
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step0000004.ckpt", "step0000005.ckpt"]
    assert torch.load(tmp_path / "run" / runs.LAST_CKPT, weights_only=True)["global_step"] == 5


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path, synthetic_root):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from walt.runs import run_lock
        with run_lock(Path({str(tmp_path / 'run')!r})):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"in use by .*\"pid\": {holder.pid}"):
            train_stage(make_run(tmp_path, synthetic_root, 2))
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock is taken over
    assert train_stage(make_run(tmp_path, synthetic_root, 2))["global_step"] == 2


def test_csv_metrics_of_every_session_survive_a_resume(tmp_path, synthetic_root):
    """logger=csv: Lightning's writer deleted metrics.csv when a resumed session opened it, losing the rows of the
    sessions before; walt.modules.loggers appends."""
    import csv

    extra = ["logger=csv", "trainer.log_every_n_steps=1"]
    with pytest.raises(Crash):
        train_stage(make_run(tmp_path, synthetic_root, 6, *extra), build=crashing_at(3))
    train_stage(make_run(tmp_path, synthetic_root, 6, *extra))
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    steps = {int(r["step"]) for r in rows if r.get("train/loss")}
    # before the crash and after the resume (step 2's row: the crash came after its checkpoint, before its log)
    assert {0, 1, 3, 4, 5} <= steps, sorted(steps)
