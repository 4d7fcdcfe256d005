"""Non-square clips: data.resolution = [H, W] resizes to cover H x W and crops, the latent grid follows from it,
the text-to-video presets have the paper's sizes, and a tiny 16x32 run trains end to end through walt-train."""
import os
import subprocess
import sys

import pytest
import torch

from walt.config.run import RunConfig
from walt.data.video import Sampling, resize_crop, scaled_size

from conftest import SMALL_SPEC

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resize_crop_covers_a_non_square_frame_and_keeps_square_behaviour():
    g = torch.Generator().manual_seed(0)
    square = torch.rand(3, 2, 32, 32, generator=g) * 2 - 1
    assert scaled_size(32, 32, (16, 32)) == (32, 32) and scaled_size(24, 64, (16, 32)) == (16, 43)
    assert scaled_size(48, 64, 32) == scaled_size(48, 64, (32, 32)) == (32, 43)  # one int = the square case
    out = resize_crop(square, (16, 32), Sampling.center)
    assert out.shape == (3, 2, 16, 32)
    torch.testing.assert_close(out, square[:, :, 8:24])  # already covers 16x32: only cropped, centred
    wide = torch.rand(3, 2, 24, 64, generator=g) * 2 - 1
    assert resize_crop(wide, (16, 32), Sampling.random).shape == (3, 2, 16, 32)
    for video in (square, wide):  # an int resolution and [n, n] give the same crop as before
        torch.testing.assert_close(resize_crop(video, 16, Sampling.center), resize_crop(video, (16, 16), Sampling.center))


@pytest.mark.parametrize("experiment, resolution, latent", [
    ("t2v_walt_l", (128, 224), (5, 16, 28)),
    ("t2v_sr_256", (256, 448), (5, 32, 56)),
    ("t2v_sr_512", (512, 896), (5, 64, 112)),
])
def test_text_to_video_presets_have_the_paper_sizes(experiment, resolution, latent):
    run = RunConfig.load([f"experiment={experiment}", "data.root=/nowhere", "first_stage_ckpt=null"])
    assert run.data.frame_size == resolution and run.model.input_size == latent
    assert run.latent_shape == (8, *latent)
    if experiment != "t2v_walt_l":
        assert run.model.cond_upsample == 2  # the low-res latents come in at half the grid


@pytest.mark.parametrize("value, message", [
    ("'16x32'", r"data.resolution must be one int \(square frames\) or \[height, width\]"),
    ("[16,32,8]", r"\[height, width\]"),
    ("[16,36]", r"clips of 5x16x36 do not fit"),
])
def test_bad_resolutions_fail_naming_the_valid_forms(value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.load(["experiment=t2v_tiny", "data.num_frames=5", f"data.resolution={value}"])


def walt_train(args, cwd, timeout=900):
    code = "import sys; from walt.cli import train; sys.argv[0] = 'walt-train'; train()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_tiny_non_square_run_trains_through_walt_train(synthetic_root, tmp_path):
    """16x32 clips of the (square, 32x32) synthetic videos: autoencoder found by first_stage_ckpt=auto, then a
    few stage-2 steps on 2x2x4 latents; the stored run re-composes to the same non-square config."""
    common = ["data=ucf101", f"data.root={synthetic_root}", f"data.num_classes={SMALL_SPEC.num_classes}",
              "data.num_frames=5", "data.resolution=[16,32]", "data.num_workers=0", "data.batch_size=2",
              "autoencoder=micro", "model=walt_tiny", "logger=csv", "trainer=cpu", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "trainer.limit_val_batches=0", "~callbacks.rich_progress_bar",
              "eval.after_train=false", "optim.warmup_steps=0", "first_stage_steps=2", "autoencoder.latent_stats_batches=1",
              f"paths.output_dir={tmp_path / 'out'}", f"paths.data_dir={tmp_path / 'data'}"]
    run_dir = tmp_path / "run"
    out = walt_train(common + ["trainer.max_steps=3", f"paths.run_dir={run_dir}"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = RunConfig.stored(run_dir)
    assert run.data.frame_size == (16, 32) and run.model.input_size == (2, 2, 4)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 3
    assert ckpt["state_dict"]["model.pos_embed.spatial"].shape[2:4] == (2, 4)  # learned positions of the 2x4 grid
