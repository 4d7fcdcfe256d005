"""Every experiment preset (experiments/experiment/*.yaml) runs from nothing: its autoencoder trained by
first_stage_ckpt=auto, its own stage, then walt-eval and walt-sample on the result, with the default
logger, on a tiny dataset in the preset's real layout. Only sizes are shrunk (steps, widths, frames,
resolution); the preset's keys, groups and trainer settings stay, so a setting one stage cannot take fails
here. A new preset is covered without editing this file."""
import json
import logging
from pathlib import Path

import pytest
import torch

from walt.config import CONFIG_DIR, RunConfig

from conftest import SMALL_SPEC
from test_data_layouts import imagenet_tree, kinetics_tree
from test_eval_metrics import inception_file  # noqa: F401 (fixture)
from test_text import tiny_encoder_dir

EXPERIMENTS = sorted(f.stem for f in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
SIZES = ["trainer=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.val_check_interval=2",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "~callbacks.rich_progress_bar",
         "first_stage_steps=2", "optim.warmup_steps=0", "data.batch_size=2", "data.num_workers=0",
         "data.persistent_workers=false", "data.pin_memory=false", "eval.after_train=false",
         "autoencoder.base_channels=8", "autoencoder.norm_groups=4", "autoencoder.latent_stats_batches=1", "autoencoder.log_videos=false"]
EVAL = ["eval.num_samples=4", "eval.num_real=4", "eval.batch_size=4", "eval.sampling_steps=2",
        "eval.extractor_options={width: 4, epochs: 1}"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, synthetic_root, inception_file):
    """One tiny tree per dataset layout: UCF-101 (the synthetic set), Kinetics-600 (CSV annotations), ImageNet
    (flat val with ground truth); a tiny T5 encoder for the presets that name a T5 checkpoint; random I3D and
    InceptionV3 files for the metrics of real videos and images."""
    from walt.metrics.i3d import InceptionI3d

    root = tmp_path_factory.mktemp("layouts")
    kinetics_tree(root / "k600", class_folders=False, trimmed=True)
    imagenet_tree(root / "imagenet", "kaggle", mapping=True)
    torch.manual_seed(0)
    torch.save(InceptionI3d().state_dict(), root / "i3d_random.pt")
    return {"ucf101": (synthetic_root, SMALL_SPEC.num_classes), "kinetics600": (root / "k600", 3),
            "imagenet": (root / "imagenet", 2), "t5": tiny_encoder_dir(root / "t5", kind="t5"),
            "i3d": root / "i3d_random.pt", "inception": inception_file}


def evaluation(run: RunConfig, layouts: dict) -> list[str]:
    """walt-eval's overrides: the synthetic metrics on the synthetic set, FVD (random I3D) on real videos,
    FID (random InceptionV3) on images."""
    if (Path(run.data.root) / "spec.json").is_file():
        return EVAL
    if run.clip_frames == 1:
        return ["eval=imagenet_fid", *EVAL, f"eval.inception_weights={layouts['inception']}"]
    return ["eval=i3d", *EVAL, f"eval.weights={layouts['i3d']}", "eval.num_frames_metric=null",
            "eval.extractor_options={verify: false, resolution: 32}"]


def tiny(name: str, layouts: dict, out: Path) -> list[str]:
    """The preset shrunk to seconds: sizes only, and the paths of the tiny trees."""
    args = [f"experiment={name}", *SIZES, f"paths.output_dir={out}", f"paths.data_dir={out / 'data'}"]
    if name == "joint_walt_l":
        args.append(f"data.image_root={layouts['imagenet'][0]}")
    run = RunConfig.load(args)
    data = run.data.dataset.value
    if data in layouts:
        args += [f"data.root={layouts[data][0]}", f"data.num_classes={layouts[data][1]}"]
    else:  # the embedded synthetic set, generated in paths.data_dir
        args += ["data.synthetic.num_groups=2", "data.synthetic.clips_per_group=1", "data.synthetic.num_frames=9"]
    if run.clip_frames > 1 and run.stage != "interpolation":  # enough latent frames for the preset's context frames (frame prediction)
        args.append(f"data.num_frames={1 + run.autoencoder.temporal_factor * max(1, run.model.context_frames)}")
    scale = run.lowres.factor if run.stage in ("super_resolution",) else 1
    args.append(f"data.resolution={16 * scale}")
    if run.stage != "autoencoder":
        args += ["model.depth=2", "model.hidden_size=32", "model.num_heads=2"]
    if run.model.cross_attention_dim and run.text.encoder != "minilm":
        args += [f"text.encoder={layouts['t5']}", "model.cross_attention_dim=16"]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_trains_from_nothing_then_evaluates_and_samples(name, layouts, tmp_path, one_thread, caplog):
    from walt.eval.cli import main as eval_main
    from walt.pipeline.train import train
    from walt.sample import main as sample_main

    run = RunConfig.load(tiny(name, layouts, tmp_path))
    train(run)
    assert (run.run_dir / "checkpoints" / "last.ckpt").is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(run)  # the identical re-run is a skip: its `auto` paths compare resolved, so no "another config" warning
    assert "is complete (marker COMPLETED); skipping" in caplog.text and "another config" not in caplog.text
    assert list((run.run_dir / "tensorboard").rglob("events.out.tfevents.*")), "the default logger wrote nothing"
    if run.stage != "autoencoder":  # stage 1 came from nothing too: first_stage_ckpt=auto trained it
        assert [p.parent.name for p in (tmp_path / "autoencoders").glob("*/COMPLETED")]
        assert json.loads((run.run_dir / "results.json").read_text())["token_windows"] == run.model.token_windows()
    if run.stage in ("super_resolution", "interpolation"):
        return  # cascade stages are measured and sampled end to end (tests/test_cascade.py)
    metrics = eval_main([str(run.run_dir), *evaluation(run, layouts)])["metrics"]
    assert metrics and all(v == v for v in metrics.values()), metrics  # no NaN
    if run.stage == "diffusion":
        context = []  # a frame-prediction run trained always with context continues a video of its dataset
        if run.model.context_frames and run.model.context_prob >= 1:
            context = ["--context", str(next(Path(run.data.root).rglob("*.mp4")))]
        files = sample_main([str(run.run_dir), "-n", "2", "--formats", "mp4", *context, "eval.sampling_steps=2"])
        assert files and all(Path(f).stat().st_size > 0 for f in files)
