"""The text-to-video cascade: base -> super-resolution (-> super-resolution) [-> interpolation], and long
videos by autoregressive extension.

Every stage is a trained run (stage=diffusion for the text-conditioned base, stage=super_resolution /
interpolation after it); each later stage takes the previous stage's normalised latents as its low-res
input, all stages sharing one autoencoder's latent space, and only the last stage's latents are decoded.
`walt-sample cascade BASE SR [SR] --interpolation RUN` runs LaVie's temporal interpolation last, after the
super-resolution stages (2x the latent frame rate at the final resolution).

Long videos (chunks > 1): the base model must do frame prediction (model.context_frames = m > 0). Chunk k
is sampled with the last m latent frames of chunk k-1 as clean context (copied into the result), so the
overlap is identical by construction, and the video is chunk 0 + chunk k's frames after the first m.
Super-resolution stages upscale chunk by chunk (conditioning on a later chunk's previous SR chunk when
they too take m context frames); interpolation stages take single chunks only.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from einops import rearrange

from walt import runs
from walt.config.run import RunConfig, merge_overrides
from walt.modules.build import load_module
from walt.modules.interpolation import InterpolationModule
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.modules.super_resolution import CascadeStageModule
from walt.utils import mix_seed, to_uint8

log = logging.getLogger(__name__)


@dataclass
class CascadeResult:
    """latents: per stage, the stitched normalised latents (B, c, T, H, W); chunks: per stage, the chunk
    latents before stitching; videos: the last stage decoded, (B, C, T, H, W) in [-1, 1] (None without a
    first stage); files: what was written."""

    latents: list
    chunks: list
    videos: Optional[torch.Tensor] = None
    files: list = field(default_factory=list)


def _as_list(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name}: one value per stage ({n}), got {values}")
    return values


@torch.no_grad()
def sample_cascade(stages: Sequence[LatentDiffusionModule], captions: Sequence[str], *, seed: int = 0,
                   steps: Sequence[Optional[int]] | Optional[int] = None,
                   guidance: Sequence[Optional[float]] | Optional[float] = None, chunks: int = 1,
                   aug_level: Optional[float] = None, out_dir: str | os.PathLike | None = None, fps: int = 8,
                   decode: bool = True) -> CascadeResult:
    """Videos for `captions` through `stages` (base first); deterministic in `seed`.

    steps, guidance: per stage (or one value for all; None = the stage's diffusion config). chunks: base
    chunks of a long video. aug_level: the cascade stages' noise-augmentation level (None = lowres.aug_sample).
    out_dir: writes sample_<j>.mp4, grid.mp4 and cascade.json there.
    """
    stages = list(stages)
    if not stages or isinstance(stages[0], CascadeStageModule):
        raise ValueError("the first stage must be a base model (stage=diffusion), then cascade stages")
    if any(not isinstance(s, CascadeStageModule) for s in stages[1:]):
        raise ValueError("every stage after the base must be a super_resolution or interpolation stage")
    n = len(stages)
    steps, guidance = _as_list(steps, n, "steps"), _as_list(guidance, n, "guidance")
    base, B = stages[0], len(captions)
    m = base.model_cfg.context_frames
    if chunks > 1 and m == 0:
        raise ValueError("long videos (chunks > 1) need a base model with frame prediction: model.context_frames > 0")
    if chunks > 1 and any(isinstance(s, InterpolationModule) for s in stages):
        raise ValueError("interpolation stages take single chunks (chunks=1)")

    def text_of(module):
        return list(captions) if module.model_cfg.cross_attention_dim else None

    all_chunks: list[list[torch.Tensor]] = []
    for i, module in enumerate(stages):
        mc, out = module.model_cfg, []
        for k in range(chunks):
            shape = (B, mc.in_channels, *mc.input_size)
            # (seed, stage, chunk): the initial noise (CPU, the same on any device) and the sampler's step noise
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(mix_seed(seed, i, k, 0)))
            kw = dict(noise=noise.to(module.device), text=text_of(module),
                      generator=torch.Generator(module.device).manual_seed(mix_seed(seed, i, k, 1)))
            if k > 0 and mc.context_frames == m and m > 0:  # autoregressive extension: the last m latent frames
                context = torch.zeros(shape, device=module.device)
                context[:, :, :m] = out[-1][:, :, -m:]
                mask = torch.zeros(B, mc.input_size[0], dtype=torch.bool, device=module.device)
                mask[:, :m] = True
                kw.update(context=context, context_mask=mask)
            if i == 0:
                z = module.sample(None, steps[i], guidance[i], **kw)
            else:
                z = module.sample(all_chunks[i - 1][k], steps[i], guidance[i], aug_level=aug_level, **kw)
            out.append(z)
        all_chunks.append(out)
    stitched = [torch.cat([c[0]] + [x[:, :, m:] for x in c[1:]], dim=2) for c in all_chunks]
    result = CascadeResult(latents=stitched, chunks=all_chunks)
    last = stages[-1]
    if decode and last.first_stage is not None:
        result.videos = last.decode(stitched[-1]).float().cpu()
    if out_dir is not None and result.videos is not None:
        result.files = write_outputs(result.videos, captions, Path(out_dir), fps, {
            "seed": seed, "steps": steps, "guidance": guidance, "chunks": chunks, "aug_level": aug_level,
            "latent_shapes": [list(z.shape) for z in stitched]})
    return result


def write_outputs(videos: torch.Tensor, captions: Sequence[str], out_dir: Path, fps: int, settings: dict) -> list[Path]:
    """sample_<j>.mp4 per caption, grid.mp4 (ceil(sqrt(B)) columns) and cascade.json."""
    from walt.data.video import write_video

    out_dir.mkdir(parents=True, exist_ok=True)
    frames = rearrange(to_uint8(videos), "n c t h w -> n t h w c")
    written = []
    for j, clip in enumerate(frames.numpy()):
        write_video(str(out_dir / f"sample_{j:03d}.mp4"), clip, fps=fps)
        written.append(out_dir / f"sample_{j:03d}.mp4")
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    pad = torch.zeros((rows * cols - len(frames), *frames.shape[1:]), dtype=torch.uint8)
    grid = rearrange(torch.cat([frames, pad]), "(r c) t h w ch -> t (r h) (c w) ch", r=rows, c=cols)
    write_video(str(out_dir / "grid.mp4"), grid.numpy(), fps=fps)
    written.append(out_dir / "grid.mp4")
    manifest = out_dir / "cascade.json"
    runs.write_json_atomic(manifest, {"captions": list(captions), **settings, "shape_ncthw": list(videos.shape),
                                      "files": [p.name for p in written]})
    return written + [manifest]


def load_cascade(run_dirs: Sequence[str | os.PathLike], device: str | torch.device = "cpu",
                 overrides: Sequence[str] = ()) -> list[LatentDiffusionModule]:
    """The trained stages of `run_dirs` (base first), from their checkpoints/last.ckpt, in eval mode."""
    modules = []
    for run_dir in run_dirs:
        run = RunConfig.stored(run_dir, overrides)
        module, _ = load_module(run, Path(run_dir) / runs.LAST_CKPT)
        modules.append(module.to(device).eval())
    return modules


def parser() -> argparse.ArgumentParser:
    """walt-sample cascade's options."""
    parser = argparse.ArgumentParser(prog="walt-sample cascade", description=main.__doc__)
    parser.add_argument("stages", nargs="+", help="run directories, base first (stage=diffusion), then "
                                                  "stage=super_resolution / interpolation runs")
    parser.add_argument("--interpolation", default=None, metavar="RUN_DIR",
                        help="a stage=interpolation run to run last, after the super-resolution stages (LaVie's "
                             "temporal interpolation: more latent frames); counts as one more stage for --steps / --guidance")
    parser.add_argument("--caption", action="append", required=True, help="one per video (repeat the flag)")
    parser.add_argument("--steps", default=None, help="sampler steps per stage, comma-separated (or one value)")
    parser.add_argument("--guidance", default=None, help="CFG scale per stage, comma-separated (or one value)")
    parser.add_argument("--chunks", type=int, default=1, help="base chunks of a long video (autoregressive)")
    parser.add_argument("--aug-level", type=float, default=None, help="noise augmentation of the low-res inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output directory")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> CascadeResult:
    """walt-sample cascade: text -> video through trained stage runs (base, then SR / interpolation)."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)

    def per_stage(text, cast):
        if text is None:
            return None
        values = [cast(v) for v in text.split(",")]
        return values[0] if len(values) == 1 else values

    stages = load_cascade(args.stages + ([args.interpolation] if args.interpolation else []), args.device)
    if args.interpolation and not isinstance(stages[-1], InterpolationModule):
        raise ValueError(f"--interpolation {args.interpolation}: not a stage=interpolation run "
                         f"({type(stages[-1]).__name__}); super-resolution runs go among the positional stages")
    result = sample_cascade(stages, args.caption, seed=args.seed, steps=per_stage(args.steps, int),
                            guidance=per_stage(args.guidance, float), chunks=args.chunks, aug_level=args.aug_level,
                            out_dir=args.out, fps=args.fps)
    print(json.dumps([str(p) for p in result.files]))
    return result


def tiny_cascade_overrides(data_root: str | os.PathLike, out_dir: str | os.PathLike, steps: int,
                           text_encoder: Optional[str] = None, text_dim: Optional[int] = None,
                           interpolation: bool = False) -> dict[str, list[str]]:
    """Overrides of the embedded cascade's runs (autoencoder, base, sr[, interp]) on a synthetic dataset root:
    5-frame clips, base 16x16, SR 2x to 32x32; text_encoder / text_dim swap in another (e.g. tiny) encoder.
    interpolation: also a 2x temporal interpolation stage (9-frame 32x32 clips from every 2nd frame), and the base
    and SR stages then take every 2nd frame (data.frame_stride=2), so the last stage doubles their frame rate."""
    out = Path(out_dir)
    common = ["data=ucf101", f"data.root={data_root}", "data.num_classes=4", "data.num_frames=5", "data.num_workers=0",
              "data.batch_size=2", "autoencoder=micro", "autoencoder.latent_stats_batches=1", "logger=csv", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "trainer.limit_val_batches=0", "~callbacks.rich_progress_bar",
              f"trainer.max_steps={steps}", "eval.after_train=false", "optim.warmup_steps=0"]
    text = ([f"text.encoder={text_encoder}"] if text_encoder else []) + (
        [f"model.cross_attention_dim={text_dim}"] if text_dim else [])
    ae = f"first_stage_ckpt={out / 'autoencoder' / runs.LAST_CKPT}"
    low_rate = ["data.frame_stride=2"] if interpolation else []
    stages = {
        "autoencoder": common + ["stage=autoencoder", "data.resolution=32", f"paths.run_dir={out / 'autoencoder'}"],
        "base": common + text + low_rate + ["model=walt_tiny_t2v", "data.resolution=16", ae, f"paths.run_dir={out / 'base'}"],
        "sr": common + text + low_rate + ["stage=super_resolution", "model=walt_tiny_sr", "data.resolution=32", ae,
                                          f"paths.run_dir={out / 'sr'}"],
    }
    if interpolation:
        stages["interp"] = merge_overrides(common, text, [
            "stage=interpolation", "model=walt_tiny_interp", "data.resolution=32", "data.num_frames=9", "lowres.factor=2",
            ae, f"paths.run_dir={out / 'interp'}"])
    return stages


def train_tiny_cascade(data_root: str | os.PathLike, out_dir: str | os.PathLike, steps: int = 200,
                       text_encoder: Optional[str] = None, text_dim: Optional[int] = None,
                       interpolation: bool = False) -> dict[str, Path]:
    """Train the embedded cascade's autoencoder, text-conditioned base and 2x SR stage (CPU-sized), and with
    `interpolation` a 2x temporal interpolation stage (tiny_cascade_overrides); returns their run directories.
    Each goes through walt-train's path (walt.pipeline.train), so finished runs are skipped."""
    from walt.pipeline.train import train

    dirs = {}
    for name, overrides in tiny_cascade_overrides(data_root, out_dir, steps, text_encoder, text_dim,
                                                  interpolation).items():
        run = RunConfig.load(overrides)
        train(run)
        dirs[name] = run.run_dir
    return dirs
