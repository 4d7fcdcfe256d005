"""Frame prediction from real context (Kinetics-600's protocol) on tiny real runs: a micro autoencoder (20
steps) and a stage-2 model with model.context_frames=2 (30 steps), both trained by walt-train on a small
synthetic set. 9-frame clips: 2 latent context frames = the first 5 video frames, 1 latent = 4 frames predicted.

The autoencoder error the context frames are held to is measured here, on the same clips: the MSE between
the real first 5 frames and their reconstruction (0.12-0.35 per clip in [-1, 1] units for this 20-step
autoencoder; the context frames of a prediction equal that reconstruction to float round-off).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import single_thread
from walt import runs
from walt.config import RunConfig
from walt.data.video import ClipSpec, Sampling, channels_first, read_clip, to_model_range, write_video
from walt.eval import evaluate as E
from walt.eval.context import EvalContext
from walt.eval.reference import ContextClips, reference_datamodule
from walt.eval.sampling import context_frames, context_latents, generate, sample_inputs
from walt.modules.build import load_module
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.pipeline.train import train
from walt.sample import main as sample_main
from walt.sample import read_context, sample_to_files

FRAMES = 9
CONTEXT_VIDEO = 5  # 2 latent frames at /4 in time
DATA = ["data.synthetic.num_classes=4", "data.synthetic.num_groups=5", f"data.synthetic.num_frames={FRAMES}",
        "data.synthetic.resolution=32", "data.resolution=32", f"data.num_frames={FRAMES}", "data.batch_size=4",
        "data.num_workers=0"]
TRAIN = ["trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "~callbacks.rich_progress_bar", "autoencoder=micro", "autoencoder.latent_stats_batches=1"]
AE = ["trainer.max_steps=20", "trainer.val_check_interval=20", "autoencoder.optim.warmup_steps=0",
      "autoencoder.optim.lr=3e-3"]
MODEL = ["model.depth=2", "model.hidden_size=32", "model.num_heads=2", "model.st_window=full", "model.context_frames=2",
         "diffusion.sampling_steps=2", "optim.sample_every_n_steps=0", "optim.warmup_steps=0", "optim.lr=2e-3",
         "trainer.max_steps=30", "trainer.val_check_interval=30"]
EVAL = ["eval.batch_size=2", "eval.num_real=3", "eval.num_frames_metric=8", "eval.device=cpu",
        "eval.extractor_options={width: 4, epochs: 4, resolution: 16}"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp")
    common = [f"data.root={tmp / 'shapes'}", *DATA, *TRAIN]
    with single_thread():  # module-scoped: set up before the one_thread fixture applies
        train(RunConfig.load(["stage=autoencoder", *common, *AE, f"paths.run_dir={tmp / 'ae'}"]))
        train(RunConfig.load(["stage=diffusion", *common, *MODEL, f"first_stage_ckpt={tmp / 'ae' / runs.LAST_CKPT}",
                              f"paths.run_dir={tmp / 'dm'}"]))
    run = RunConfig.stored(tmp / "dm", EVAL)
    module, _ = load_module(run, run.run_dir / runs.LAST_CKPT)
    return {"root": tmp, "dm": tmp / "dm", "run": run, "module": module.float().eval()}


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean(dim=(1, 2, 3, 4))


# ------------------------------------------------------------------------------------ the sampler path
def test_prediction_keeps_real_context_and_depends_on_it(trained):
    run, module = trained["run"], trained["module"]
    assert context_frames(module) == (2, CONTEXT_VIDEO)
    wide = RunConfig.stored(trained["dm"], [*EVAL, "eval.num_real=12"])
    clips, clip_labels = ContextClips(wide, reference_datamodule(wide)).clips(0, 12)
    first_of_class = {}
    for j in range(12):  # clips of one synthetic class can look alike: take 3 classes
        first_of_class.setdefault(clip_labels[j], j)
    pick = sorted(first_of_class.values())[:3]
    real, labels = clips[pick], {i: clip_labels[j] for i, j in enumerate(pick)}
    assert len(set(labels.values())) == 3
    _, pred = generate(module, run.eval, 0, 3, labels, context=real)
    assert pred.shape == real.shape == (3, 3, FRAMES, 32, 32)

    # context frames of the returned clip = the autoencoder's reconstruction of the real first 5 frames
    recon = module.decode(module.batch_latents({"video": real}))
    torch.testing.assert_close(pred[:, :, :CONTEXT_VIDEO], recon[:, :, :CONTEXT_VIDEO], atol=1e-5, rtol=0)
    # ... so their distance to the real frames is the autoencoder's own error, measured on the same frames
    # (MSE in [-1, 1] units; a blank or a foreign context would be far off: all-zero frames are > 0.5 away)
    ae_error = mse(recon[:, :, :CONTEXT_VIDEO], real[:, :, :CONTEXT_VIDEO])
    torch.testing.assert_close(mse(pred[:, :, :CONTEXT_VIDEO], real[:, :, :CONTEXT_VIDEO]), ae_error, atol=1e-6, rtol=1e-5)
    assert (ae_error < 0.4).all(), f"autoencoder error {ae_error} (this trained AE reconstructs these clips)"
    assert (mse(torch.zeros_like(real[:, :, :CONTEXT_VIDEO]), real[:, :, :CONTEXT_VIDEO]) > 0.5).all()

    # the predicted latent frames change with the context (same noise, same labels) ...
    y, noise = sample_inputs(module, 0, 0, 3, labels)

    def latents(clips):
        ctx, mask = context_latents(module, clips)
        return module.sample(y, noise=noise, context=ctx, context_mask=mask, generator=torch.Generator().manual_seed(1))

    own, swapped = latents(real), latents(real[[1, 2, 0]])
    encoded = module.batch_latents({"video": real[:, :, :CONTEXT_VIDEO]})
    torch.testing.assert_close(own[:, :, :2], encoded, atol=0, rtol=0)  # the context latents are copied in
    change = (own[:, :, 2:] - swapped[:, :, 2:]).abs().amax(dim=(1, 2, 3, 4))
    # same noise and labels, so a model that ignored its context would give exactly 0 here (bitwise). How much one
    # clip's prediction moves depends on what 30 steps taught: per clip we saw 0.0056-0.78 across suite orders
    assert (change > 1e-4).all() and change.max() > 0.05, change
    # ... but not with frames after the context (nothing of the future leaks into the context latents)
    future = real.clone()
    future[:, :, CONTEXT_VIDEO:] = real[[1, 2, 0], :, CONTEXT_VIDEO:]
    torch.testing.assert_close(latents(future), own, atol=0, rtol=0)
    _, pred_future = generate(module, run.eval, 0, 3, labels, context=future)
    torch.testing.assert_close(pred_future, pred, atol=0, rtol=0)


def test_context_errors(trained):
    run, module = trained["run"], trained["module"]
    real, labels = ContextClips(run, reference_datamodule(run)).clips(0, 2)
    with pytest.raises(ValueError, match="context_prob=1.*pass context clips"):
        generate(module, run.eval, 0, 2, labels)
    with pytest.raises(ValueError, match="at least 5 frames"):
        generate(module, run.eval, 0, 2, labels, context=real[:, :, :4])
    with pytest.raises(ValueError, match="2 samples need as many context clips"):
        generate(module, run.eval, 0, 2, labels, context=real[:1])


# ------------------------------------------------------------------------------------ walt-eval
def test_evaluation_predicts_from_reference_clips_and_records_it(trained, tmp_path, monkeypatch):
    import shutil

    run_dir = tmp_path / "dm"
    shutil.copytree(trained["dm"], run_dir)
    seen = []
    original = LatentDiffusionModule.sample

    def spy(self, *args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("context", "context_mask", "noise")})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LatentDiffusionModule, "sample", spy)
    run = RunConfig.stored(run_dir, [*EVAL, "eval.num_samples=4"])
    out = E.evaluate_run(run)
    # 2 batches of 2 + the preview (4 samples in one batch); sample j continues reference clip j mod 3
    assert len(seen) == 3
    source = ContextClips(run, reference_datamodule(run))
    module = trained["module"]
    for call, start in zip(seen[:2], (0, 2)):
        real, _ = source.clips(start, start + 2)
        expected = module.batch_latents({"video": real[:, :, :CONTEXT_VIDEO]})
        torch.testing.assert_close(call["context"][:, :, :2], expected, atol=1e-5, rtol=0)
        assert call["context_mask"].tolist() == [[True, True, False]] * 2
        assert not call["context"][:, :, 2:].any()  # nothing of the predicted frames is given
    torch.testing.assert_close(seen[1]["context"][1], seen[0]["context"][0], atol=1e-5, rtol=0)  # clip 3 mod 3 = 0

    results = runs.read_results(run_dir)
    assert results["metrics"]["fvd_synth"] == out["metrics"]["fvd_synth"] > 0
    assert results["protocol"]["synth_acc_real"]["task"] is None  # real clips only: no samples, no task
    for name in ("fvd_synth", "is_synth", "synth_acc"):
        p = results["protocol"][name]
        assert p["task"] == "frame_prediction", name
        c = p["context"]
        assert (c["latent_frames"], c["video_frames"], c["predicted_video_frames"], c["clip_frames"]) == (2, 5, 4, 9)
        assert (c["metric_frames"], c["predicted_frames_measured"]) == (run.metric_frames(), run.metric_frames() - 5)
        assert "first 5 frames of the real synthetic train" in c["source"] and "clip j mod 3" in c["source"]
        assert "frame prediction: the first 5 frames (2 latent frames)" in p["notes"]
    p = results["protocol"]["fvd_synth"]
    assert (p["n_fake"], p["n_real"]) == (4, 3)
    ev = results["evaluation"]
    assert ev["task"] == "frame_prediction" and ev["context"]["video_frames"] == 5


def test_generation_runs_record_their_task(trained):
    """A run without context frames keeps sampling from noise; its protocol says so (unit check on _task)."""
    from walt.eval.diffusion import _task

    run = trained["run"]
    plain = LatentDiffusionModule({**trained["module"].model_cfg.to_dict(), "context_frames": 0},
                                  first_stage=trained["module"].first_stage)
    ctx = EvalContext(run, trained["root"] / "unused", torch.device("cpu"), [], None, None)
    assert _task(ctx, plain) == {"task": "generation"}


# ------------------------------------------------------------------------------------ walt-sample --context
def moving_square(path: Path, frames: int = 12, height: int = 40, width: int = 48) -> Path:
    """A square crossing a ramp background, non-square frames."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    video[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None, :]
    for t in range(frames):
        x = (3 * t) % (width - 12)
        video[t, 10:22, x:x + 12] = (255, 255, 40)
    write_video(str(path), video, fps=8)
    return path


def write_clip(path: Path, clip: torch.Tensor, height: int = 40, width: int = 48) -> Path:
    """A clip (C, T, H, W) in [-1, 1] as a user's mp4 at another, non-square size (walt-sample resizes the
    short side to the run's 32 and centre-crops)."""
    frames = torch.nn.functional.interpolate(clip.transpose(0, 1), size=(height, width), mode="bilinear")
    frames = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    write_video(str(path), frames, fps=8)
    return path


def test_walt_sample_continues_a_video_file(trained, tmp_path):
    module, run = trained["module"], trained["run"]
    # two reference clips whose first frames differ most, written as user files
    wide = RunConfig.stored(trained["dm"], [*EVAL, "eval.num_real=12"])
    clips, _ = ContextClips(wide, reference_datamodule(wide)).clips(0, 12)
    heads = clips[:, :, :CONTEXT_VIDEO].flatten(1)
    a, b = divmod(int(torch.cdist(heads, heads).argmax()), 12)
    files = [write_clip(tmp_path / "a.mp4", clips[a]), write_clip(tmp_path / "b.mp4", clips[b])]
    context = [read_context(run, f) for f in files]
    assert context[0][0].shape == (3, CONTEXT_VIDEO, 32, 32)
    assert (context[0][1]["latent_frames"], context[0][1]["video_frames"]) == (2, 5)

    out = tmp_path / "out"
    paths = sample_main([str(trained["dm"]), "--context", str(files[0]), "-n", "2", "--formats", "mp4",
                         "--per-sample", "--out", str(out), *EVAL])
    assert {p.name for p in paths} == {"grid.mp4", "sample_000.mp4", "sample_001.mp4", "samples.json"}
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["task"] == "frame_prediction" and manifest["shape_ncthw"] == [2, 3, FRAMES, 32, 32]
    assert manifest["context"]["file"] == str(files[0]) and manifest["context"]["predicted_video_frames"] == 4
    # the written sample 0 is the prediction from a.mp4's first frames (to mp4 loss), not from b.mp4's
    frames = read_clip(str(out / "sample_000.mp4"), ClipSpec(FRAMES, 1, Sampling.center))
    written = to_model_range(channels_first(frames))
    expected = [generate(module, run.eval, 0, 1, [0], context=clip[None])[1][0] for clip, _ in context]
    own, foreign = ((written - e).pow(2).mean() for e in expected)
    assert own < 0.01 and foreign > 5 * own, (own, foreign)


def test_walt_sample_context_errors(trained, tmp_path):
    run = trained["run"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match=r"--context .*bad.mp4: cannot read the first 5 frames.*unreadable"):
        sample_main([str(trained["dm"]), "--context", str(bad), "-n", "1", *EVAL])
    short = moving_square(tmp_path / "short.mp4", frames=3)
    with pytest.raises(ValueError, match=r"short.mp4: cannot read the first 5 frames.*too_short"):
        sample_to_files(run, tmp_path / "o", 1, context=short)
    with pytest.raises(ValueError, match=r"--context .*missing.mp4: cannot read"):
        read_context(run, tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="frame-prediction run.*--context path/to/video.mp4"):
        sample_to_files(run, tmp_path / "o", 1)
    generation = RunConfig.load(["stage=diffusion", *DATA, f"data.root={trained['root'] / 'shapes'}",
                                 f"paths.run_dir={tmp_path / 'gen'}"])
    with pytest.raises(ValueError, match="--context needs a frame-prediction run.*model.context_frames=0"):
        sample_to_files(generation, tmp_path / "o", 1, context=moving_square(tmp_path / "ok.mp4"))
    assert not (tmp_path / "o").exists()


def test_readme_walt_sample_context_line_runs(trained, tmp_path):
    """The README's `walt-sample <run> --context <video> ...` line, with the tiny run and a generated file
    in place of its run directory and video."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [shlex.split(line, comments=True) for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    (words,) = [w for w in lines if w and w[0] == "walt-sample" and "--context" in w]
    args = words[1:]
    assert args[0] == "outputs/runs/k600" and args[args.index("--context") + 1] == "my_clip.mp4"
    args[0] = str(trained["dm"])
    args[args.index("--context") + 1] = str(moving_square(tmp_path / "my_clip.mp4"))
    paths = sample_main([*args, "--out", str(tmp_path / "out"), *EVAL])
    n = int(args[args.index("-n") + 1])
    assert sorted(p.name for p in paths) == ["grid.mp4", *(f"sample_{j:03d}.mp4" for j in range(n)), "samples.json"]
