"""walt-eval / walt-sample on tiny real runs: a stage-1 autoencoder and a stage-2 model trained for two
steps by walt-train on a small synthetic set, measured with a small synthetic-data classifier."""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hp_metadata

import walt.evaluate as E
import walt.train as train_mod
from walt import runs
from walt.cli import compose_config
from walt.data.video import ClipSpec, Sampling, count_frames, read_clip
from walt.metrics import FeatureStats, frame_psnr, frame_ssim
from walt.modules.autoencoder import AutoencoderModule, load_autoencoder
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.sample import main as sample_main
from walt.sample import make_grid, sample_to_files
from walt.weights import WeightsError

FRAMES = 9  # 1 + 4k frames for the causal autoencoder; the metrics take the first 8
DATA = ["data.synthetic.num_classes=4", "data.synthetic.num_groups=5", f"data.synthetic.num_frames={FRAMES}",
        "data.synthetic.resolution=32", f"data.num_frames={FRAMES}", "data.batch_size=4", "data.num_workers=0"]
TRAIN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "~callbacks.rich_progress_bar",
         "callbacks.model_checkpoint.every_n_train_steps=2", "autoencoder.latent_stats_batches=1"]
MODEL = ["model.depth=2", "model.hidden_size=32", "model.num_heads=2", "model.st_window=full",
         "diffusion.sampling_steps=2", "optim.sample_every_n_steps=0"]
EVAL = ["eval.batch_size=2", "eval.num_real=8", "eval.num_frames_metric=8",
        "eval.extractor_options={width: 4, epochs: 4, resolution: 16}"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run directories of walt-train: 'ae' (stage 1) and 'dm' (stage 2 on top of it)."""
    tmp = tmp_path_factory.mktemp("runs")

    def cfg_for(stage, run, extra=()):
        cfg = compose_config([f"stage={stage}", f"data.root={tmp / 'shapes'}", *DATA, *TRAIN, *extra])
        with open_dict(cfg):
            cfg.paths.run_dir = str(tmp / run)
        return cfg

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train_mod.run(cfg_for("autoencoder", "ae"))
    train_mod.run(cfg_for("diffusion", "dm", [f"first_stage_ckpt={tmp / 'ae' / runs.LAST_CKPT}", *MODEL]))
    torch.set_num_threads(threads)
    return {"root": tmp, "ae": tmp / "ae", "dm": tmp / "dm"}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(E.EVAL_DIR))
    return dst


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


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag.startswith(E.TAG_PREFIX):
                    out.setdefault(v.tag, []).append((event.step, float(v.tensor.float_val[0] if v.HasField("tensor") else v.simple_value)))
    return out


def experiment_metric_tags(tb_dir: Path) -> list[str]:
    """Metric columns declared by the HPARAMS experiment summaries in tb_dir."""
    tags = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag == hp_metadata.EXPERIMENT_TAG:
                    exp = hp_metadata.parse_experiment_plugin_data(v.metadata.plugin_data.content)
                    tags += [m.name.tag for m in exp.metric_infos]
    return tags


def fake_stats(run_dir: Path) -> FeatureStats:
    (pointer,) = (run_dir / E.EVAL_DIR).glob("fake_*.json")
    meta = json.loads(pointer.read_text())
    return FeatureStats.load(run_dir / E.EVAL_DIR / meta["stats"]["fake"])


# ------------------------------------------------------------------------------------ config
def test_eval_config_mirrors_yaml_and_rejects_bad_values(trained, monkeypatch):
    default = E.load_eval_preset("default")
    assert set(default) == {f.name for f in dataclasses.fields(E.EvalConfig)}
    assert E.EvalConfig.from_dict(default) == E.EvalConfig()
    i3d = E.EvalConfig.from_dict(E.load_eval_preset("i3d"))
    assert i3d.extractor == "i3d" and i3d.num_samples == 2048 and i3d.num_frames_metric == 16
    assert i3d.stage_metrics("diffusion") == ["fvd"] and i3d.stage_metrics("autoencoder") == ["psnr", "ssim", "rfvd"]
    assert E.EvalConfig().stage_metrics("diffusion") == ["fvd_synth", "is_synth"]
    with pytest.raises(ValueError, match="valid keys: .*num_samples"):
        E.EvalConfig.from_dict({"num_sample": 4})
    with pytest.raises(ValueError, match="needs eval.extractor in"):
        E.EvalConfig.from_dict({"metrics": ["fvd"]})  # I3D FVD with the synthetic extractor
    with pytest.raises(ValueError, match="valid metrics"):
        E.EvalConfig.from_dict({"metrics": ["fid"]})
    with pytest.raises(ValueError, match="valid for it"):
        E.EvalConfig(metrics=["psnr"]).stage_metrics("diffusion")
    with pytest.raises(ValueError, match="one of"):
        E.EvalConfig(reference_split="test")

    cfg = E.run_config(trained["dm"], ["eval=i3d", "eval.num_samples=3"])
    assert cfg.eval.extractor == "i3d" and cfg.eval.num_samples == 3 and cfg.paths.run_dir == str(trained["dm"])
    assert E.hp_metric_tags(E.run_config(trained["dm"])) == ["eval/fvd_synth", "eval/is_synth"]
    assert E.hp_metric_tags(E.run_config(trained["ae"])) == ["eval/psnr", "eval/ssim", "eval/rfvd_synth"]
    with pytest.raises(ValueError, match="only eval=<preset>"):
        E.run_config(trained["dm"], ["model=walt_l"])
    with pytest.raises(ValueError, match="num_frames_metric=16 but the run's clips have 9"):
        E.metric_frames(cfg, E.eval_config(cfg))
    assert E.evaluate_after_train(cfg, module=None) == {}  # after_train is off by default

    # walt.config.validate's hook: what evaluating after training needs is checked before training
    monkeypatch.delenv("WALT_I3D_WEIGHTS", raising=False)
    E.check_config(cfg)  # no evaluation after training: the weights are not needed yet
    with pytest.raises(WeightsError, match="WALT_I3D_WEIGHTS"):
        E.check_config(E.run_config(trained["dm"], ["eval=i3d", "eval.after_train=true", "eval.num_frames_metric=8"]))
    with pytest.raises(ValueError, match="num_frames_metric"):
        E.check_config(E.run_config(trained["dm"], ["eval=i3d", "eval.after_train=true"]))
    with pytest.raises(ValueError, match="valid for it"):
        E.check_config(E.run_config(trained["ae"], ["eval.metrics=[fvd_synth]"]))


# ------------------------------------------------------------------------------------ stage 2
def test_diffusion_eval_writes_results_tensorboard_and_resumes(trained, tmp_path, sample_calls):
    a = copy_run(trained["dm"], tmp_path / "a")
    out = E.evaluate_run(E.run_config(a, [*EVAL, "eval.num_samples=4"]))
    assert sample_calls["calls"] == 2  # 4 samples in batches of 2
    results = runs.read_results(a)
    assert results["metrics"]["fvd_synth"] > 0 and results["protocol"]["fvd_synth"]["n_fake"] == 4
    assert 1 <= results["metrics"]["is_synth"] <= 4 and results["metrics"]["train/loss"]  # training's metrics kept
    p = results["protocol"]["fvd_synth"]
    assert (p["n_fake"], p["n_real"], p["frames"], p["resolution"]) == (4, 8, 8, 16)
    assert p["weights_checksum"].startswith("sha256:") and "train split 1" in p["reference_split"]
    assert "first 8 of 9 frames" in p["notes"] and "ddim 2 steps" in p["notes"]
    assert results["protocol"]["is_synth"]["n_fake"] == 4 and results["evaluation"]["global_step"] == 2
    tb = scalars(a / E.TB_DIR)
    # the last value is ours (walt-train may log a NaN placeholder at step 0 when it declares the column)
    assert tb["eval/fvd_synth"][-1] == (2, pytest.approx(out["metrics"]["fvd_synth"], rel=1e-6))
    assert experiment_metric_tags(a / E.TB_DIR).count("val/loss") == 1  # training's HPARAMS session only, no second one
    (real_pointer,) = (a / E.EVAL_DIR).glob("real_*.json")
    real_mtime = real_pointer.stat().st_mtime_ns

    # more samples later: only the missing batches are generated, the cached real statistics reused
    more = E.evaluate_run(E.run_config(a, [*EVAL, "eval.num_samples=8"]))
    assert sample_calls["calls"] == 4 and real_pointer.stat().st_mtime_ns == real_mtime
    assert runs.read_results(a)["protocol"]["fvd_synth"]["n_fake"] == 8

    # a job killed after two batches resumes at the third
    b = copy_run(trained["dm"], tmp_path / "b")
    sample_calls.update(calls=0, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate_run(E.run_config(b, [*EVAL, "eval.num_samples=8"]))
    sample_calls.update(calls=0, fail_after=None)
    resumed = E.evaluate_run(E.run_config(b, [*EVAL, "eval.num_samples=8"]))
    assert sample_calls["calls"] == 2

    # both equal one uninterrupted evaluation
    c = copy_run(trained["dm"], tmp_path / "c")
    sample_calls.update(calls=0)
    whole = E.evaluate_run(E.run_config(c, [*EVAL, "eval.num_samples=8"]))
    assert sample_calls["calls"] == 4
    for got in (more, resumed):
        for name, value in whole["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    ref = fake_stats(c)
    for run in (a, b):
        stats = fake_stats(run)
        assert stats.n == ref.n == 8
        np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(stats.cov, ref.cov, rtol=1e-6, atol=1e-9)

    # walt-train's hook with the trained module in memory measures the same as the checkpoint
    e = copy_run(trained["dm"], tmp_path / "e")
    cfg = E.run_config(e, [*EVAL, "eval.num_samples=8", "eval.after_train=true"])
    module, _ = E.load_module(cfg, e)
    hooked = E.evaluate_after_train(cfg, module)
    for name, value in whole["metrics"].items():
        assert hooked["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)

    # samples are seeded per sample: one batch of 8 gives the same set (up to batched float round-off)
    d = copy_run(trained["dm"], tmp_path / "d")
    one_batch = E.evaluate_run(E.run_config(d, [*EVAL, "eval.num_samples=8", "eval.batch_size=8"]))
    np.testing.assert_allclose(fake_stats(d).mean, ref.mean, rtol=1e-4, atol=1e-6)
    assert one_batch["metrics"]["fvd_synth"] == pytest.approx(whole["metrics"]["fvd_synth"], rel=1e-3)


def test_untrained_baseline_is_a_run_like_directory_with_hparams(trained, tmp_path):
    E.main([str(trained["dm"]), "--untrained", str(tmp_path / "untrained"), *EVAL, "eval.num_samples=4"])
    results = runs.read_results(tmp_path / "untrained")
    assert results["baseline"] == "untrained" and results["global_step"] == 0 and results["params"] > 0
    assert results["metrics"]["fvd_synth"] > 0 and results["protocol"]["fvd_synth"]["n_fake"] == 4
    assert (tmp_path / "untrained" / runs.CONFIG).exists() and not runs.is_complete(tmp_path / "untrained")
    trained_stats = E.evaluate_run(E.run_config(copy_run(trained["dm"], tmp_path / "t"), [*EVAL, "eval.num_samples=4"]))
    assert trained_stats["metrics"]["fvd_synth"] != results["metrics"]["fvd_synth"]  # other weights, other samples
    # no training logger wrote an HPARAMS session here, so evaluation declares its metric columns
    assert experiment_metric_tags(tmp_path / "untrained" / E.TB_DIR) == ["eval/fvd_synth", "eval/is_synth"]


def test_missing_i3d_weights_fail_before_sampling(trained, tmp_path, monkeypatch, sample_calls):
    monkeypatch.delenv("WALT_I3D_WEIGHTS", raising=False)
    monkeypatch.setattr(E, "load_module", lambda *a: pytest.fail("loaded the model before checking the weights"))
    run = copy_run(trained["dm"], tmp_path / "run")
    with pytest.raises(WeightsError, match=r"checksum.*WALT_I3D_WEIGHTS"):
        E.evaluate_run(E.run_config(run, ["eval=i3d", "eval.num_frames_metric=8"]))
    assert sample_calls["calls"] == 0 and not (run / E.EVAL_DIR).exists() and "protocol" not in runs.read_results(run)


# ------------------------------------------------------------------------------------ stage 1
def test_autoencoder_eval_reconstruction_metrics_and_resume(trained, tmp_path, monkeypatch):
    run = copy_run(trained["ae"], tmp_path / "ae")
    cfg = E.run_config(run, [*EVAL, "eval.num_real=4"])
    out = E.evaluate_run(cfg)
    assert set(out["metrics"]) == {"psnr", "ssim", "rfvd_synth"}
    # the same numbers by hand: the reference clips through the EMA autoencoder
    subset, desc = E.reference_clips(cfg, E.eval_config(cfg), E.reference_datamodule(cfg))
    real = torch.stack([subset[i]["video"] for i in range(len(subset))])
    recon = load_autoencoder(str(run / runs.LAST_CKPT)).reconstruct(real)
    assert len(real) == 4 and out["metrics"]["psnr"] == pytest.approx(frame_psnr(real, recon).mean().item(), rel=1e-5)
    assert out["metrics"]["ssim"] == pytest.approx(frame_ssim(real, recon).mean().item(), rel=1e-4)
    assert out["metrics"]["rfvd_synth"] >= 0
    protocol = runs.read_results(run)["protocol"]
    assert protocol["rfvd_synth"]["frames"] == 8 and protocol["psnr"]["frames"] == FRAMES
    assert protocol["rfvd_synth"]["n_real"] == 4 and protocol["psnr"]["reference_split"] == desc
    assert "eval/rfvd_synth" in scalars(run / E.TB_DIR)
    # finished: evaluating again reconstructs nothing and reports the same numbers
    monkeypatch.setattr(AutoencoderModule, "reconstruct", lambda *a: pytest.fail("reconstructed again"))
    assert E.evaluate_run(cfg)["metrics"] == out["metrics"]


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

    cfg = E.run_config(trained["dm"], ["eval.batch_size=4"])
    paths = sample_to_files(cfg, trained["dm"], tmp_path / "s", num_samples=6, fps=8, per_sample=True)
    names = sorted(p.name for p in paths)
    assert names == sorted(["grid.mp4", "grid.gif", "samples.json"] + [f"sample_{j:03d}.{f}" for j in range(6) for f in ("mp4", "gif")])
    manifest = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert manifest["labels"] == [0, 1, 2, 3, 0, 1] and manifest["global_step"] == 2
    mp4 = str(tmp_path / "s" / "grid.mp4")
    assert count_frames(mp4) == FRAMES
    frames = read_clip(mp4, ClipSpec(FRAMES, 1, Sampling.center))
    assert frames.shape == (FRAMES, 2 * 32, 4 * 32, 3)  # one column per class, 2 rows
    # the grid shows the evaluation's samples (same seeds) up to video compression
    module, _ = E.load_module(cfg, trained["dm"])
    videos = E.generate(module, E.eval_config(cfg), 0, 6, labels=manifest["labels"])
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

    # walt-sample <run_dir> [options] [overrides]
    sample_main([str(trained["dm"]), "-n", "2", "--out", str(tmp_path / "cli"), "--formats", "gif",
                 "--no-grid", "--per-sample", "--labels", "3,1", "eval.seed=5"])
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["sample_000.gif", "sample_001.gif", "samples.json"]
    manifest = json.loads((tmp_path / "cli" / "samples.json").read_text())
    assert manifest["seed"] == 5 and manifest["labels"] == [3, 1]
