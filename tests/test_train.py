"""The training entry's contract, with a small LightningModule standing in for a stage:
results.json + COMPLETED marker, resume from last.ckpt, skip of finished runs, NaN guard."""
import json

import lightning as L
import pytest
import torch
from walt import runs
from walt.config import RunConfig
from walt.pipeline.fit import train_stage


class MeanRegressor(L.LightningModule):
    """Predicts each clip's class from its mean colour; loss can be forced to NaN."""

    hp_metrics = ("val/loss",)

    def __init__(self, num_classes: int, nan_after: int | None = None):
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)
        self.nan_after = nan_after

    def training_step(self, batch, _):
        loss = torch.nn.functional.cross_entropy(self.head(batch["video"].mean((2, 3, 4))), batch["label"])
        if self.nan_after is not None and self.global_step >= self.nan_after:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, _):
        self.log("val/loss", torch.nn.functional.cross_entropy(self.head(batch["video"].mean((2, 3, 4))), batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def make_run(tmp_path, synthetic_root, steps, *extra):
    return RunConfig.load([
        "data=ucf101", f"data.root={synthetic_root}", "data.num_classes=4", "data.resolution=16",
        "data.num_frames=5", "data.num_workers=0", "data.batch_size=4", f"trainer.max_steps={steps}",
        "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "callbacks.model_checkpoint.every_n_train_steps=2",
        "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar", f"paths.run_dir={tmp_path / 'run'}", *extra,
    ])


class StandIn:
    """A build function for train_stage that makes MeanRegressors and remembers them."""

    def __init__(self, nan_after=None, module=MeanRegressor):
        self.made, self.nan_after, self.module = [], nan_after, module

    def __call__(self, run):
        self.made.append(self.module(run.data.num_classes, nan_after=self.nan_after))
        return self.made[-1]


def test_run_writes_results_marker_and_resumes(tmp_path, synthetic_root):
    stand_in = StandIn()
    results = train_stage(make_run(tmp_path, synthetic_root, steps=4), build=stand_in)
    run_dir = tmp_path / "run"
    assert runs.is_complete(run_dir) and (run_dir / runs.LAST_CKPT).exists()
    on_disk = json.loads((run_dir / runs.RESULTS).read_text())
    assert on_disk == json.loads(json.dumps(results)) and on_disk["global_step"] == 4
    assert on_disk["params"] == 3 * 4 + 4 and on_disk["steps_per_sec"] > 0 and "val/loss" in on_disk["metrics"]
    assert (run_dir / runs.CONFIG).read_text().count(str(synthetic_root)) >= 1
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = torch.load(run_dir / runs.LAST_CKPT, weights_only=True)
    assert ckpt["global_step"] == 4

    # finished: a re-run is a skip that returns the stored results and builds nothing
    assert train_stage(make_run(tmp_path, synthetic_root, steps=4), build=stand_in) == on_disk
    assert len(stand_in.made) == 1

    # an unfinished run (no marker) resumes from last.ckpt and the step count continues
    (run_dir / runs.COMPLETED).unlink()
    resumed = train_stage(make_run(tmp_path, synthetic_root, steps=6), build=stand_in)
    assert resumed["global_step"] == 6 and runs.is_complete(run_dir)
    assert torch.load(run_dir / runs.LAST_CKPT, weights_only=True)["global_step"] == 6


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoints(tmp_path, synthetic_root):
    with pytest.raises(FloatingPointError, match=r"non-finite train/loss=nan at step \d"):
        train_stage(make_run(tmp_path, synthetic_root, steps=10), build=StandIn(nan_after=3))
    run_dir = tmp_path / "run"
    assert not runs.is_complete(run_dir)
    assert json.loads((run_dir / runs.FAILED).read_text())["error"].startswith("FloatingPointError")
    last = torch.load(run_dir / runs.LAST_CKPT, weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_a_run_with_skipped_bad_files_ends_with_a_line_naming_them(tmp_path, synthetic_root, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    bad = sorted(data.rglob("*.mp4"))[0]
    bad.write_bytes(b"\x00garbage" * 100)
    with caplog.at_level("WARNING"):
        train_stage(make_run(tmp_path, data, 2, f"data.root={data}", "data.max_bad_fraction=0.5"), build=StandIn())
    line = [r.getMessage() for r in caplog.records if "trained without" in r.getMessage()]
    assert line and "1 unreadable file(s)" in line[-1] and bad.name in line[-1]


def test_a_run_that_trains_zero_steps_is_an_error_not_complete(tmp_path, synthetic_root):
    """Lightning finishes "successfully" when no training batch is drawn (under DDP: each rank's share smaller than
    its batch, all dropped); here every batch is skipped by limit_train_batches=0."""
    with pytest.raises(RuntimeError, match="trained 0 steps"):
        train_stage(make_run(tmp_path, synthetic_root, 4, "+trainer.limit_train_batches=0"), build=StandIn())
    assert not runs.is_complete(tmp_path / "run")


def test_preemption_signal_saves_last_checkpoint_then_calls_submitit_handler(tmp_path, synthetic_root):
    """submitit's USR2 handler must run only after last.ckpt holds the current step."""
    import os
    import signal

    calls = []

    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint_and_try_requeue
        calls.append(torch.load(tmp_path / "run" / runs.LAST_CKPT, weights_only=True)["global_step"])
        raise SystemExit(-1)

    class SignalAt(MeanRegressor):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:  # the signal lands mid-step; the save waits for the batch end (step 3)
                os.kill(os.getpid(), signal.SIGUSR2)
            return super().training_step(batch, batch_idx)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit):
            train_stage(make_run(tmp_path, synthetic_root, steps=50), build=StandIn(module=SignalAt))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [3]  # checkpoint every 2 steps would otherwise have left step 2
    assert not runs.is_complete(tmp_path / "run")
