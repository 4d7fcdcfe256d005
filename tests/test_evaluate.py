"""walt-eval / walt-sample on tiny real runs: a stage-1 autoencoder and a stage-2 model trained by walt-train
(walt.pipeline.train) on a small synthetic set with a step checkpoint every 2 steps, measured with a small
synthetic-data classifier."""
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hp_metadata

from conftest import single_thread
from walt import runs
from walt.config import RunConfig
from walt.data.video import ClipSpec, Sampling, count_frames, read_clip, to_model_range
from walt.eval import evaluate as E
from walt.eval.cli import main as eval_main
from walt.eval.context import EVAL_DIR, EvalContext
from walt.eval.reference import reference_clips
from walt.eval.sampling import generate, sample_inputs
from walt.eval.tensorboard import SAMPLES_TAG, TAG_PREFIX, TB_DIR
from walt.metrics import FeatureStats, frame_psnr, frame_ssim
from walt.modules.autoencoder import AutoencoderModule, load_autoencoder
from walt.modules.build import load_module
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.pipeline.train import train
from walt.sample import main as sample_main
from walt.sample import make_grid, sample_to_files
from walt.weights import WeightsError

FRAMES = 9  # 1 + 4k frames for the causal autoencoder; the metrics take the first 8
STEPS = (2, 4, 6)  # stage 2 keeps a checkpoint at each
DATA = ["data.synthetic.num_classes=4", "data.synthetic.num_groups=5", f"data.synthetic.num_frames={FRAMES}",
        "data.synthetic.resolution=32", "data.resolution=32", f"data.num_frames={FRAMES}", "data.batch_size=4",
        "data.num_workers=0"]
TRAIN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "~callbacks.rich_progress_bar",
         "callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.model_checkpoint.save_top_k=-1",
         "autoencoder.latent_stats_batches=1"]
MODEL = ["model.depth=2", "model.hidden_size=32", "model.num_heads=2", "model.st_window=full",
         "diffusion.sampling_steps=2", "optim.sample_every_n_steps=0", f"trainer.max_steps={STEPS[-1]}"]
EVAL = ["eval.batch_size=2", "eval.num_real=8", "eval.num_frames_metric=8", "eval.device=cpu",
        "eval.extractor_options={width: 4, epochs: 4, resolution: 16}"]
PREVIEW_CALLS = 1  # every measured model also samples its TensorBoard preview clips in one batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run directories of walt-train: 'ae' (stage 1, 2 steps) and 'dm' (stage 2 on top of it, 6 steps)."""
    tmp = tmp_path_factory.mktemp("runs")
    common = [f"data.root={tmp / 'shapes'}", *DATA, *TRAIN]
    with single_thread():  # module-scoped: set up before the one_thread fixture applies
        train(RunConfig.load(["stage=autoencoder", *common, f"paths.run_dir={tmp / 'ae'}"]))
        train(RunConfig.load(["stage=diffusion", *common, *MODEL, f"first_stage_ckpt={tmp / 'ae' / runs.LAST_CKPT}",
                              f"paths.run_dir={tmp / 'dm'}"]))
    return {"root": tmp, "ae": tmp / "ae", "dm": tmp / "dm"}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(EVAL_DIR))
    return dst


def stored(run_dir: Path, *overrides: str) -> RunConfig:
    return RunConfig.stored(run_dir, [*EVAL, *overrides])


@pytest.fixture
def sample_calls(monkeypatch):
    """Counts LatentDiffusionModule.sample calls; `fail_after` makes call n+1 raise (a killed job)."""
    state = {"calls": 0, "fail_after": None}
    original = LatentDiffusionModule.sample

    def counting(self, *args, **kwargs):
        if state["fail_after"] is not None and state["calls"] >= state["fail_after"]:
            raise KeyboardInterrupt("killed")
        state["calls"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LatentDiffusionModule, "sample", counting)
    return state


def events(tb_dir: Path, tag: str) -> list[tuple[int, object]]:
    return [(e.step, v) for path in sorted(tb_dir.glob("events.out.tfevents.*"))
            for e in EventFileLoader(str(path)).Load() for v in e.summary.value if v.tag == tag]


def scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar tag, NaN placeholders (walt-train declares eval/* columns with NaN) left out."""
    points = [(s, float(v.tensor.float_val[0] if v.HasField("tensor") else v.simple_value)) for s, v in events(tb_dir, tag)]
    return [(s, x) for s, x in points if not math.isnan(x)]


def experiment_metric_tags(tb_dir: Path) -> list[str]:
    """Metric columns declared by the HPARAMS experiment summaries in tb_dir."""
    tags = []
    for _, v in events(tb_dir, hp_metadata.EXPERIMENT_TAG):
        tags += [m.name.tag for m in hp_metadata.parse_experiment_plugin_data(v.metadata.plugin_data.content).metric_infos]
    return tags


def fake_features(run_dir: Path) -> np.ndarray:
    """The generated samples' classifier features walt-eval committed."""
    (pointer,) = (run_dir / EVAL_DIR).glob("fake_video_*.json")
    chunks = json.loads(pointer.read_text())["chunks"]
    return np.concatenate([np.load(run_dir / EVAL_DIR / c["files"]["features"]) for c in chunks])


# ------------------------------------------------------------------------------------ config and hooks
def test_tags_hooks_and_weights_checked_before_any_model(trained, tmp_path, monkeypatch, sample_calls):
    assert E.hp_metric_tags(stored(trained["dm"])) == [
        "eval/fvd_synth", "eval/is_synth", "eval/synth_acc", "eval/synth_acc_real"]
    assert E.hp_metric_tags(stored(trained["ae"])) == ["eval/psnr", "eval/ssim", "eval/rfvd_synth"]
    assert E.evaluate_after_train(stored(trained["dm"]), module=None) == {}  # after_train is off by default
    with pytest.raises(ValueError, match="num_frames_metric=16 but the run's clips have 9"):
        RunConfig.stored(trained["dm"], ["eval=i3d", "eval.after_train=true"])
    # a missing I3D file fails before a model is loaded or a sample drawn, and leaves no trace
    monkeypatch.delenv("WALT_I3D_WEIGHTS", raising=False)
    monkeypatch.setattr(E, "load_module", lambda *a: pytest.fail("loaded the model before checking the weights"))
    run = copy_run(trained["dm"], tmp_path / "run")
    with pytest.raises(WeightsError, match=r"checksum.*WALT_I3D_WEIGHTS"):
        eval_main([str(run), "eval=i3d", "eval.num_frames_metric=8"])
    assert sample_calls["calls"] == 0 and not (run / EVAL_DIR).exists() and "protocol" not in runs.read_results(run)


# ------------------------------------------------------------------------------------ stage 2
def test_diffusion_eval_writes_results_tensorboard_and_resumes(trained, tmp_path, sample_calls):
    a = copy_run(trained["dm"], tmp_path / "a")
    out = E.evaluate_run(stored(a, "eval.num_samples=4"))
    assert sample_calls["calls"] == 2 + PREVIEW_CALLS  # 4 samples in batches of 2
    results = runs.read_results(a)
    assert results["metrics"]["fvd_synth"] > 0 and results["protocol"]["fvd_synth"]["n_fake"] == 4
    assert 1 <= results["metrics"]["is_synth"] <= 4 and results["metrics"]["train/loss"]  # training's metrics kept
    p = results["protocol"]["fvd_synth"]
    assert (p["n_fake"], p["n_real"], p["frames"], p["resolution"]) == (4, 8, 8, 16)
    assert p["weights_checksum"].startswith("sha256:") and "train split 1" in p["reference_split"]
    assert "first 8 of 9 frames" in p["notes"] and "ddim 2 steps" in p["notes"]
    assert re.search(r"guidance [\d.]+ \(constant\)", p["notes"])  # the guidance schedule is part of the protocol
    assert results["evaluation"]["global_step"] == STEPS[-1] and results["evaluation"]["ckpt"] == str(runs.LAST_CKPT)
    assert results["checkpoints"][str(STEPS[-1])]["metrics"] == out["metrics"]
    assert scalars(a / TB_DIR, "eval/fvd_synth") == [(STEPS[-1], pytest.approx(out["metrics"]["fvd_synth"], rel=1e-6))]
    assert experiment_metric_tags(a / TB_DIR).count("val/loss") == 1  # training's HPARAMS session only
    real_passes = lambda: {p.name: p.stat().st_mtime_ns for p in (a / EVAL_DIR).glob("real_*.json")}  # noqa: E731
    real = real_passes()
    assert len(real) == 2  # reference clips (train) and held-out clips (val, synth_acc_real)

    # the same settings again: nothing sampled, nothing logged twice
    E.evaluate_run(stored(a, "eval.num_samples=4"))
    assert sample_calls["calls"] == 2 + PREVIEW_CALLS and len(scalars(a / TB_DIR, "eval/fvd_synth")) == 1

    # more samples later: only the missing batches are generated, the cached real statistics reused
    sample_calls.update(calls=0)
    more = E.evaluate_run(stored(a, "eval.num_samples=8"))
    assert sample_calls["calls"] == 2 + PREVIEW_CALLS and real_passes() == real
    assert runs.read_results(a)["protocol"]["fvd_synth"]["n_fake"] == 8

    # a job killed after two batches resumes at the third
    b = copy_run(trained["dm"], tmp_path / "b")
    sample_calls.update(calls=0, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate_run(stored(b, "eval.num_samples=8"))
    sample_calls.update(calls=0, fail_after=None)
    resumed = E.evaluate_run(stored(b, "eval.num_samples=8"))
    assert sample_calls["calls"] == 2 + PREVIEW_CALLS

    # both equal one uninterrupted evaluation
    c = copy_run(trained["dm"], tmp_path / "c")
    whole = E.evaluate_run(stored(c, "eval.num_samples=8"))
    for got in (more, resumed):
        for name, value in whole["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    for run in (a, b):
        np.testing.assert_allclose(fake_features(run), fake_features(c), rtol=1e-6, atol=1e-9)

    # walt-train's hook with the trained module in memory measures the same as its last checkpoint
    e = copy_run(trained["dm"], tmp_path / "e")
    run = stored(e, "eval.num_samples=8", "eval.after_train=true")
    module, step = load_module(run, e / runs.LAST_CKPT)
    trainer = type("Trainer", (), {"is_global_zero": True, "global_step": step})()
    hooked = E.evaluate_after_train(run, module, trainer)
    assert hooked["evaluation"]["global_step"] == STEPS[-1] and hooked["evaluation"]["ckpt"] == "checkpoints/last.ckpt"
    for name, value in whole["metrics"].items():
        assert hooked["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    # recorded under last.ckpt's key: a later walt-eval of the last step measures and logs nothing again
    E.evaluate_run(run)
    assert [s for s, _ in scalars(e / TB_DIR, "eval/fvd_synth") if s == STEPS[-1]] == [STEPS[-1]]

    # samples are seeded per sample: one batch of 8 gives the same set (up to batched float round-off)
    d = copy_run(trained["dm"], tmp_path / "d")
    one_batch = E.evaluate_run(stored(d, "eval.num_samples=8", "eval.batch_size=8"))
    np.testing.assert_allclose(fake_features(d), fake_features(c), rtol=1e-4, atol=1e-5)
    assert one_batch["metrics"]["fvd_synth"] == pytest.approx(whole["metrics"]["fvd_synth"], rel=1e-3)


def test_synth_acc_is_the_class_asked_for_against_the_class_recognised(trained, tmp_path):
    run_dir = copy_run(trained["dm"], tmp_path / "run")
    run = stored(run_dir, "eval.num_samples=6")
    out = E.evaluate_run(run)
    # by hand: the classifier's argmax on each sample against the label the sample was drawn with
    module, _ = load_module(run, run_dir / runs.LAST_CKPT)
    ctx = EvalContext.build(run)
    labels, _ = sample_inputs(module, run.eval.seed, 0, 6)
    videos = torch.cat([generate(module, run.eval, s, s + 2)[1] for s in (0, 2, 4)])
    recognised = ctx.nets.video.probs(videos).argmax(-1)
    assert out["metrics"]["synth_acc"] == pytest.approx((recognised == labels).float().mean().item())
    subset, desc = reference_clips(run, ctx.datamodule, "val")
    real = to_model_range(torch.stack([subset[i]["video"] for i in range(len(subset))]))
    truth = torch.tensor([subset[i]["label"] for i in range(len(subset))])
    acc_real = (ctx.nets.video.probs(real).argmax(-1) == truth).float().mean().item()
    assert out["metrics"]["synth_acc_real"] == pytest.approx(acc_real) and 0 <= acc_real <= 1
    p = runs.read_results(run_dir)["protocol"]
    assert p["synth_acc"]["reference_split"] == desc and desc.startswith("synthetic val split 1")
    assert p["synth_acc"]["n_fake"] == 6 and p["synth_acc"]["n_real"] == len(subset) == p["synth_acc_real"]["n_real"]
    assert "synth_acc_real" in p["synth_acc"]["notes"] and "chance 1/4" in p["synth_acc"]["notes"]


# ------------------------------------------------------------------------------------ checkpoints
def test_ckpt_all_logs_each_checkpoint_at_its_step(trained, tmp_path, sample_calls):
    run = copy_run(trained["dm"], tmp_path / "run")
    out = eval_main([str(run), "ckpt=all", *EVAL, "eval.num_samples=4"])
    assert sorted(out["checkpoints"]) == list(STEPS)
    points = scalars(run / TB_DIR, "eval/fvd_synth")
    assert [s for s, _ in points] == list(STEPS)  # three points, at the checkpoints' global steps
    results = runs.read_results(run)
    assert sorted(results["checkpoints"], key=int) == [str(s) for s in STEPS]
    for step, value in points:
        entry = results["checkpoints"][str(step)]
        assert entry["metrics"]["fvd_synth"] == pytest.approx(value, rel=1e-6) and entry["evaluation"]["global_step"] == step
    assert results["checkpoints"]["2"]["evaluation"]["ckpt"] == "checkpoints/step0000002.ckpt"
    assert results["metrics"]["fvd_synth"] == results["checkpoints"][str(STEPS[-1])]["metrics"]["fvd_synth"]  # last.ckpt's
    assert len({e["metrics"]["fvd_synth"] for e in results["checkpoints"].values()}) == 3  # other weights, other numbers
    assert sorted(s for s, _ in events(run / TB_DIR, SAMPLES_TAG)) == list(STEPS)  # sample clips per checkpoint
    assert sample_calls["calls"] == 3 * (2 + PREVIEW_CALLS)

    # cached per checkpoint: again, or one of them alone, measures and logs nothing new
    eval_main([str(run), "ckpt=all", *EVAL, "eval.num_samples=4"])
    eval_main([str(run), "ckpt=4", *EVAL, "eval.num_samples=4"])
    assert sample_calls["calls"] == 3 * (2 + PREVIEW_CALLS) and len(scalars(run / TB_DIR, "eval/fvd_synth")) == 3
    # an earlier checkpoint alone does not replace the run's top-level (last.ckpt) numbers
    eval_main([str(run), "ckpt=2", *EVAL, "eval.num_samples=6"])
    after = runs.read_results(run)
    assert after["metrics"]["fvd_synth"] == results["metrics"]["fvd_synth"]
    assert after["checkpoints"]["2"]["protocol"]["fvd_synth"]["n_fake"] == 6
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[3\]"):
        eval_main([str(run), "ckpt=3", *EVAL])


def test_untrained_baseline_is_a_run_like_directory_with_hparams(trained, tmp_path):
    out_dir = tmp_path / "untrained"
    eval_main([str(trained["dm"]), "--untrained", str(out_dir), *EVAL, "eval.num_samples=4"])
    results = runs.read_results(out_dir)
    assert results["baseline"] == "untrained" and results["global_step"] == 0 and results["params"] > 0
    assert results["metrics"]["fvd_synth"] > 0 and results["protocol"]["fvd_synth"]["n_fake"] == 4
    assert (out_dir / runs.CONFIG).exists() and not runs.is_complete(out_dir)
    assert RunConfig.stored(out_dir).run_dir == out_dir  # re-composes like a run
    trained_out = E.evaluate_run(stored(copy_run(trained["dm"], tmp_path / "t"), "eval.num_samples=4"))
    assert trained_out["metrics"]["fvd_synth"] != results["metrics"]["fvd_synth"]  # other weights, other samples
    # no training logger wrote an HPARAMS session here, so evaluation declares its metric columns
    assert experiment_metric_tags(out_dir / TB_DIR) == [TAG_PREFIX + m for m in
                                                        ("fvd_synth", "is_synth", "synth_acc", "synth_acc_real")]


# ------------------------------------------------------------------------------------ stage 1
def test_autoencoder_eval_reconstruction_metrics_and_resume(trained, tmp_path, monkeypatch):
    run_dir = copy_run(trained["ae"], tmp_path / "ae")
    run = stored(run_dir, "eval.num_real=4")
    out = E.evaluate_run(run)
    assert set(out["metrics"]) == {"psnr", "ssim", "rfvd_synth"}
    # the same numbers by hand: the reference clips through the EMA autoencoder
    ctx = EvalContext.build(run)
    subset, desc = reference_clips(run, ctx.datamodule)
    real = to_model_range(torch.stack([subset[i]["video"] for i in range(len(subset))]))
    recon = load_autoencoder(str(run_dir / runs.LAST_CKPT)).reconstruct(real)
    assert len(real) == 4 and out["metrics"]["psnr"] == pytest.approx(frame_psnr(real, recon).mean().item(), rel=1e-5)
    assert out["metrics"]["ssim"] == pytest.approx(frame_ssim(real, recon).mean().item(), rel=1e-4)
    rfvd = FeatureStats().update(ctx.nets.video.features(real)).frechet_distance(
        FeatureStats().update(ctx.nets.video.features(recon)))
    assert out["metrics"]["rfvd_synth"] == pytest.approx(rfvd, rel=1e-4, abs=1e-6)
    protocol = runs.read_results(run_dir)["protocol"]
    assert protocol["rfvd_synth"]["frames"] == 8 and protocol["psnr"]["frames"] == FRAMES
    assert protocol["rfvd_synth"]["n_real"] == 4 and protocol["psnr"]["reference_split"] == desc
    assert [s for s, _ in scalars(run_dir / TB_DIR, "eval/rfvd_synth")] == [2]
    assert [s for s, _ in events(run_dir / TB_DIR, SAMPLES_TAG)] == [2]  # real | reconstruction clips
    # measured already: evaluating again reconstructs nothing and reports the same numbers
    monkeypatch.setattr(AutoencoderModule, "reconstruct", lambda *a: pytest.fail("reconstructed again"))
    assert E.evaluate_run(run)["metrics"] == out["metrics"]


# ------------------------------------------------------------------------------------ walt-sample
def test_grid_layout():
    videos = torch.linspace(-1, 1, 5).view(5, 1, 1, 1, 1).expand(5, 3, 2, 4, 6)  # clip i has one grey level
    grid = make_grid(videos, cols=3)
    assert grid.shape == (2, 2 * 4, 3 * 6, 3) and grid.dtype == np.uint8
    levels = ((torch.linspace(-1, 1, 5) + 1) * 127.5).round().to(torch.uint8).tolist()
    for i, level in enumerate(levels + [0]):  # the sixth cell is empty: black
        r, c = divmod(i, 3)
        assert (grid[:, r * 4:(r + 1) * 4, c * 6:(c + 1) * 6] == level).all()


def test_sample_writes_mp4_and_gif_grids(trained, tmp_path):
    from PIL import Image

    run = RunConfig.stored(trained["dm"], ["eval.batch_size=4", "eval.device=cpu"])
    paths = sample_to_files(run, tmp_path / "s", num_samples=6, fps=8, per_sample=True)
    names = sorted(p.name for p in paths)
    assert names == sorted(["grid.mp4", "grid.gif", "samples.json"] + [f"sample_{j:03d}.{f}" for j in range(6) for f in ("mp4", "gif")])
    manifest = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert manifest["labels"] == [0, 1, 2, 3, 0, 1] and manifest["global_step"] == STEPS[-1]
    mp4 = str(tmp_path / "s" / "grid.mp4")
    assert count_frames(mp4) == FRAMES
    frames = read_clip(mp4, ClipSpec(FRAMES, 1, Sampling.center))
    assert frames.shape == (FRAMES, 2 * 32, 4 * 32, 3)  # one column per class, 2 rows
    # the grid shows the evaluation's samples (same seeds) up to video compression
    module, _ = load_module(run, trained["dm"] / runs.LAST_CKPT)
    _, videos = generate(module, run.eval, 0, 6, labels=manifest["labels"])
    expected = make_grid(videos, cols=4)
    assert np.abs(frames.astype(float) - expected.astype(float)).mean() < 6
    with Image.open(tmp_path / "s" / "grid.gif") as gif:
        assert gif.size == (4 * 32, 2 * 32)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == FRAMES * 120  # 8 fps -> 125 ms, stored in GIF's 10 ms units; still frames merge
    assert read_clip(str(tmp_path / "s" / "sample_000.mp4"), ClipSpec(FRAMES, 1, Sampling.center)).shape == (FRAMES, 32, 32, 3)

    # walt-sample <run_dir> [options] [ckpt=...] [overrides]
    sample_main([str(trained["dm"]), "-n", "2", "--out", str(tmp_path / "cli"), "--formats", "gif",
                 "--no-grid", "--per-sample", "--labels", "3,1", "ckpt=2", "eval.seed=5", "eval.device=cpu"])
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["sample_000.gif", "sample_001.gif", "samples.json"]
    manifest = json.loads((tmp_path / "cli" / "samples.json").read_text())
    assert manifest["seed"] == 5 and manifest["labels"] == [3, 1] and manifest["global_step"] == 2
