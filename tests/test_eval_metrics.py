"""walt-eval's paper metrics with random-weight stand-ins for the user's files: FID / IS / KID (torch-fidelity
InceptionV3) on an ImageNet-layout image run, C3D IS on a UCF-101-like run, selected by eval presets; plus
the pieces under them (resumable passes, checkpoint selection, TensorBoard without moviepy) and walt-sample
over several checkpoints. Runs are written by hand (random weights, no training): these tests check the
wiring and the protocol records, not model quality."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from walt import runs
from walt.config import RunConfig
from walt.eval import state as S
from walt.eval import tensorboard as TB
from walt.eval.checkpoints import run_checkpoints, select_checkpoints, split_ckpt_override
from walt.eval.cli import main as eval_main
from walt.data.video import to_model_range
from walt.eval.reference import reference_clips, reference_datamodule
from walt.eval.sampling import generate
from walt.metrics import FeatureStats, c3d_inception_score, image_fidelity
from walt.utils import to_uint8
from walt.modules.build import build_module, load_module
from walt.sample import main as sample_main
from walt.weights import WeightsError

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL = ["model.depth=2", "model.hidden_size=32", "model.num_heads=2", "model.st_window=full",
         "diffusion.sampling_steps=2", "optim.sample_every_n_steps=0", "data.num_workers=0"]


@pytest.fixture(autouse=True)
def no_weights_from_env(monkeypatch):
    for var in ("WALT_I3D_WEIGHTS", "WALT_INCEPTION_WEIGHTS", "WALT_C3D_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)


def hand_built_run(tmp: Path, data: list[str], steps=(1,)) -> RunConfig:
    """A stage-2 run directory written by hand: config.yaml + overrides.yaml, a random first stage, and
    checkpoints/step{N}.ckpt of random weights per step (the last one also as last.ckpt). Every matrix is
    drawn anew: an initialised transformer's zero-initialised output layers would make all steps alike."""
    ae_run = RunConfig.load(["stage=autoencoder", *data, *MODEL, f"paths.run_dir={tmp / 'ae'}"])
    torch.manual_seed(0)
    ae = build_module(ae_run)
    ae_ckpt = tmp / "ae" / runs.LAST_CKPT
    ae_ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": ae.state_dict(), "hyper_parameters": dict(ae.hparams), "global_step": 0}, ae_ckpt)
    run = RunConfig.load(["stage=diffusion", *data, *MODEL, f"first_stage_ckpt={ae_ckpt}", f"paths.run_dir={tmp / 'dm'}"])
    runs.write_config(run.run_dir, run.to_dict(), list(run.overrides))
    (run.run_dir / "checkpoints").mkdir(parents=True)
    for step in steps:
        torch.manual_seed(step)
        module = build_module(run)
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.1)
        ckpt = {"state_dict": module.state_dict(), "global_step": step}
        torch.save(ckpt, run.run_dir / "checkpoints" / f"step{step:07d}.ckpt")
    torch.save(ckpt, run.run_dir / runs.LAST_CKPT)
    return run


# ------------------------------------------------------------------------------------ stand-in weights
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    """Random weights in torch-fidelity's inception-v3-compat layout (the real file is the user's)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    tmp = tmp_path_factory.mktemp("inception")
    empty = tmp / "empty.pth"
    torch.save({}, empty)
    load = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = load
    for mod in net.modules():  # variance-preserving init, so random features still differ between images
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    torch.nn.init.normal_(net.fc.weight, std=2.0)
    path = tmp / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


class RandomC3D(torch.nn.Module):
    """Stands in for c3d_ucf101.pt: uint8 (N, 3, 16, H, W), resized to 16x112x112 inside -> 101 probabilities."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, 3, stride=(2, 4, 4))
        self.fc = torch.nn.Linear(8, 101)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(16, 112, 112), mode="trilinear")
        return (4 * self.fc(self.conv(x).relu().mean(dim=(2, 3, 4)))).softmax(-1)


@pytest.fixture(scope="module")
def c3d_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("c3d") / "c3d_ucf101.pt"
    torch.jit.script(RandomC3D()).save(str(path))
    return path


def imagenet_tree(root: Path, classes=("n01", "n02"), per_class=3) -> Path:
    """A tiny ImageNet layout: <root>/{train,val}/<wnid>/*.JPEG of random colours."""
    g = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in classes:
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                pixels = g.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


# ------------------------------------------------------------------------------------ presets
def test_paper_presets():
    fid = RunConfig.load(["stage=diffusion", "eval=imagenet_fid"]).eval
    assert (fid.metrics, fid.num_samples, fid.is_splits, fid.reference_split) == (["fid", "is"], 50000, 10, "train")
    assert fid.num_real >= 1281167  # the whole train split, as ADM's reference statistics
    ucf = RunConfig.load(["stage=diffusion", "eval=ucf101_is"]).eval
    assert (ucf.metrics, ucf.num_samples, ucf.is_splits) == (["is_c3d"], 10000, 10)


# ------------------------------------------------------------------------------------ FID / IS / KID
def image_run(tmp_path: Path) -> RunConfig:
    return hand_built_run(tmp_path, ["data=imagenet", f"data.root={imagenet_tree(tmp_path / 'imagenet')}",
                                     "data.num_classes=2", "data.resolution=32", "data.batch_size=2"])


IMAGE_EVAL = ["eval.num_samples=6", "eval.batch_size=4", "eval.is_splits=2", "eval.device=cpu"]


def images_of_evaluation(run: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, H, W) of the samples walt-eval measured (same batches) and of its reference images."""
    module, _ = load_module(run, run.run_dir / runs.LAST_CKPT)
    fake = torch.cat([generate(module, run.eval, s, min(s + 4, 6))[1] for s in (0, 4)])
    subset, _ = reference_clips(run, reference_datamodule(run))
    real = to_model_range(torch.stack([subset[i]["video"] for i in range(len(subset))]))
    return to_uint8(fake)[:, :, 0], to_uint8(real)[:, :, 0]  # 1-frame clips -> images


def test_image_run_reports_is_and_kid_as_torch_fidelity_does(tmp_path, inception_file):
    run = image_run(tmp_path)
    ev = ["eval.metrics=[is,kid]", *IMAGE_EVAL]
    with pytest.raises(WeightsError, match="WALT_INCEPTION_WEIGHTS"):
        eval_main([str(run.run_dir), *ev])
    assert not (run.run_dir / "eval").exists()  # failed before any pass started
    out = eval_main([str(run.run_dir), *ev, f"eval.inception_weights={inception_file}"])
    metrics, protocol = out["metrics"], runs.read_results(run.run_dir)["protocol"]
    assert set(metrics) == {"is", "kid"} and metrics["is"] >= 1
    p = protocol["kid"]
    assert (p["n_fake"], p["n_real"], p["frames"], p["resolution"]) == (6, 6, 1, 299)
    assert p["weights_checksum"].startswith("sha256:") and "train" in p["reference_split"]
    assert "2 split(s)" in protocol["is"]["notes"] and "100 subsets of 6" in p["notes"]
    # the streamed, resumable numbers are torch-fidelity's own on the same uint8 images
    fake, real = images_of_evaluation(RunConfig.stored(run.run_dir, ev))
    ref = image_fidelity(fake, real, weights_path=inception_file, metrics=("isc", "kid"), batch_size=4, isc_splits=2)
    assert metrics["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-4)
    assert metrics["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)


@pytest.mark.slow  # two 2048-d matrix square roots: about a minute on a busy 2-core CPU
def test_image_run_reports_fid_as_torch_fidelity_does(tmp_path, inception_file):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    run = image_run(tmp_path)
    out = eval_main([str(run.run_dir), "eval=imagenet_fid", *IMAGE_EVAL, f"eval.inception_weights={inception_file}"])
    p = runs.read_results(run.run_dir)["protocol"]["fid"]
    assert set(out["metrics"]) == {"fid", "is"} and (p["n_fake"], p["n_real"], p["resolution"]) == (6, 6, 299)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_file))
    fake, real = (net(x)[0].double() for x in images_of_evaluation(RunConfig.stored(run.run_dir, IMAGE_EVAL)))
    ref = fid_statistics_to_metric(fid_features_to_statistics(fake), fid_features_to_statistics(real), verbose=False)
    assert out["metrics"]["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-3)


# ------------------------------------------------------------------------------------ C3D IS
def test_ucf_like_run_reports_c3d_is_with_a_local_c3d_file(tmp_path, c3d_file):
    data = [f"data.root={tmp_path / 'shapes'}", "data.synthetic.num_classes=4", "data.synthetic.num_groups=5",
            "data.synthetic.resolution=16", "data.resolution=16", "data.num_frames=17", "data.batch_size=2"]
    run = hand_built_run(tmp_path, data)
    ev = ["eval=ucf101_is", "eval.num_samples=6", "eval.batch_size=3", "eval.is_splits=3", "eval.device=cpu",
          f"eval.c3d_weights={c3d_file}"]
    out = eval_main([str(run.run_dir), *ev])
    p = runs.read_results(run.run_dir)["protocol"]["is_c3d"]
    assert set(out["metrics"]) == {"is_c3d"} and out["metrics"]["is_c3d"] >= 1
    assert (p["n_fake"], p["frames"], p["resolution"]) == (6, 16, 112) and "3 split(s)" in p["notes"]
    assert p["weights_checksum"].startswith("sha256:") and "first 16 of 17 frames" in p["notes"]
    # the same number as walt.metrics' C3D IS on the same samples
    rerun = RunConfig.stored(run.run_dir, ev)
    module, _ = load_module(rerun, run.run_dir / runs.LAST_CKPT)
    videos = [generate(module, rerun.eval, s, s + 3)[1] for s in (0, 3)]
    assert out["metrics"]["is_c3d"] == pytest.approx(c3d_inception_score(videos, c3d_file, splits=3).mean, rel=1e-6)

    short = hand_built_run(tmp_path / "short", [f"data.root={tmp_path / 'short_shapes'}", *data[1:5], "data.num_frames=9"])
    with pytest.raises(ValueError, match="C3D 16 frames"):
        eval_main([str(short.run_dir), *ev])


# ------------------------------------------------------------------------------------ resumable passes
def test_progress_appends_rows_merges_when_final_and_ignores_uncommitted_files(tmp_path):
    p = S.Progress(tmp_path, "fake", {"weights": "abc"})
    p.commit(2, {"x": np.arange(2.0)}, {"f": FeatureStats().update(np.eye(2))}, values={"a": 1})
    p.commit(5, {"x": np.arange(2.0, 5.0)})
    (tmp_path / f"{p.name}.5-7.x.npy").write_bytes(b"torn")  # a kill between a chunk and its pointer
    again = S.Progress(tmp_path, "fake", {"weights": "abc"}).load()
    assert again.done == 5 and again.rows["x"].tolist() == [0, 1, 2, 3, 4] and again.values == {"a": 1}
    assert again.stats["f"].n == 2
    with pytest.raises(ValueError, match="cannot be cut"):
        again.head(3)  # statistics over 5 items say nothing about the first 3
    assert S.Partial(5, {"x": again.rows["x"]}).head(3).rows["x"].tolist() == [0, 1, 2]
    q = S.Progress(tmp_path, "fake", {"weights": "abc"})
    q.commit(7, {"x": np.arange(5.0, 7.0)}, final=True)
    files = sorted(f.name for f in tmp_path.glob(f"{q.name}.*"))
    assert files == [f"{q.name}.0-7.x.npy", f"{q.name}.2.f.npz", f"{q.name}.json"]  # merged; the torn chunk gone
    assert S.Progress(tmp_path, "fake", {"weights": "abc"}).load().rows["x"].tolist() == list(range(7))
    assert S.Progress(tmp_path, "fake", {"weights": "other"}).load().done == 0  # other weights: another pass
    with pytest.raises(ValueError, match="must have 1 rows"):
        q.commit(8, {"x": np.zeros(3)})


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_selection(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for step in (2, 4, 6):
        torch.save({"global_step": step}, ckpts / f"step{step:07d}.ckpt")
    torch.save({"global_step": 6}, ckpts / "last.ckpt")
    assert [(c.path.name, c.step, c.last) for c in run_checkpoints(tmp_path)] == [
        ("step0000002.ckpt", 2, False), ("step0000004.ckpt", 4, False), ("last.ckpt", 6, True)]
    assert [c.step for c in select_checkpoints(tmp_path, "all")] == [2, 4, 6]
    assert [c.path.name for c in select_checkpoints(tmp_path, "last")] == ["last.ckpt"]
    assert [c.step for c in select_checkpoints(tmp_path, "4,2")] == [4, 2]
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[3\].*\[2, 4, 6\]"):
        select_checkpoints(tmp_path, "3")
    with pytest.raises(ValueError, match="comma-separated global steps"):
        select_checkpoints(tmp_path, "best")
    assert split_ckpt_override(["eval.seed=1", "ckpt=all"]) == ("all", ["eval.seed=1"])
    with pytest.raises(FileNotFoundError, match="train the run first"):
        select_checkpoints(tmp_path / "empty", "last")


# ------------------------------------------------------------------------------------ TensorBoard
def test_sample_clips_fall_back_to_image_strips_without_moviepy(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(TB, "can_write_video", lambda: False)
    monkeypatch.setattr(TB, "_warned", [])
    clips = torch.rand(2, 3, 4, 8, 8) * 2 - 1  # (N, C, T, H, W)
    for step in (1, 2):
        TB.log_evaluation(tmp_path, {"fvd_synth": 1.0}, step, clips)
    assert caplog.text.count("sample videos need moviepy") == 1  # said once
    images = {e.step: v.tensor.string_val for f in tmp_path.glob("events.*") for e in EventFileLoader(str(f)).Load()
              for v in e.summary.value if v.tag == TB.SAMPLES_TAG}  # [width, height, png]
    assert sorted(images) == [1, 2] and [int(x) for x in images[1][:2]] == [4 * 8, 2 * 8]  # frames across, clips down


# ------------------------------------------------------------------------------------ walt-sample
def test_walt_sample_writes_each_checkpoint_with_the_same_seeds(tmp_path):
    data = [f"data.root={tmp_path / 'shapes'}", "data.synthetic.num_classes=4", "data.synthetic.num_groups=5",
            "data.synthetic.num_frames=5", "data.synthetic.resolution=16", "data.resolution=16", "data.num_frames=5"]
    run = hand_built_run(tmp_path, data, steps=(1, 2))
    sample_main([str(run.run_dir), "-n", "4", "--out", str(tmp_path / "s"), "--formats", "gif", "ckpt=all",
                 "eval.device=cpu", "eval.batch_size=2"])
    manifests = {d.name: json.loads((d / "samples.json").read_text()) for d in sorted((tmp_path / "s").iterdir())}
    assert sorted(manifests) == ["step0000001", "step0000002"]
    assert [m["global_step"] for m in manifests.values()] == [1, 2]
    assert all(m["labels"] == [0, 1, 2, 3] and m["seed"] == 0 and m["files"] == ["grid.gif"] for m in manifests.values())
    grids = [np.asarray(Image.open(tmp_path / "s" / d / "grid.gif").convert("RGB")) for d in manifests]
    assert grids[0].shape == (16, 4 * 16, 3) and not np.array_equal(*grids)  # other weights, same layout
