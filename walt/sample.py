"""walt-sample: videos from a stage-2 run's checkpoints, as an mp4 / GIF grid and optionally one file per sample.

Samples are the evaluation's samples (walt.eval.sampling): sample j's noise comes from its own
generator seeded by (eval.seed, j), so walt-sample with the same seed shows clips that walt-eval
measured. Labels default to j % num_classes, which with one column per class puts a class in each
column of the grid. ckpt=all or ckpt=<step>,<step> writes one sub-directory per checkpoint
(step0002000/ ...), the same samples from each, for comparing checkpoints side by side. GIFs are
written with Pillow; it merges identical consecutive frames into one longer frame, so a still clip has
fewer GIF frames but the same duration.

Frame-prediction runs (model.context_frames > 0, e.g. experiment=k600_frame_prediction) continue a user's
video: --context clip.mp4 reads its first 1 + (k - 1) * 4 frames (5 for k = 2 latent frames) at the run's
frame stride, resizes the short side to the run's resolution and centre-crops, encodes them and predicts
the rest of the clip; every sample continues the same frames with its own noise.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from einops import rearrange

from walt.config.run import RunConfig
from walt.eval.checkpoints import select_checkpoints, split_ckpt_override
from walt.data.video import (Sampling, VideoDecodeError, channels_first, read_first_frames, resize_crop,
                             to_model_range)
from walt.eval.sampling import class_cycle, eval_device, generate, sampling_settings
from walt.utils import to_uint8
from walt.modules.build import load_module

log = logging.getLogger(__name__)
FORMATS = ("mp4", "gif")


def make_grid(videos: torch.Tensor, cols: Optional[int] = None) -> np.ndarray:
    """(N, C, T, H, W) in [-1, 1] -> uint8 (T, rows*H, cols*W, C), row-major; empty cells are black.
    cols: None = ceil(sqrt(N))."""
    n = videos.shape[0]
    cols = min(n, cols or math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    pad = rows * cols - n
    if pad:
        videos = torch.cat([videos, videos.new_full((pad, *videos.shape[1:]), -1.0)])
    return rearrange(to_uint8(videos), "(r c) ch t h w -> t (r h) (c w) ch", r=rows, c=cols).cpu().numpy()


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> None:
    """uint8 (T, H, W, 3) -> looping GIF (frame time rounded to GIF's 10 ms units)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def _write(path_stem: Path, frames: np.ndarray, fps: int, formats: Sequence[str]) -> list[Path]:
    from walt.data.video import write_video

    written = []
    for fmt in formats:
        path = path_stem.with_suffix(f".{fmt}")
        if fmt == "mp4":
            write_video(str(path), frames, fps=fps)
        else:
            write_gif(path, frames, fps)
        written.append(path)
    return written


def read_context(run: RunConfig, path: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """(clip (C, T, R, R) in [-1, 1], description) of the context frames a frame-prediction run continues:
    the first 1 + (k - 1) * temporal_factor frames of the video file at data.frame_stride, resized to cover
    data.resolution (aspect kept), centre-cropped. Raises ValueError for a run that is not frame prediction or a file
    that cannot give those frames."""
    k = run.model.context_frames
    if run.stage != "diffusion" or k <= 0:
        raise ValueError(f"--context needs a frame-prediction run (stage diffusion with model.context_frames > 0, e.g. "
                         f"experiment=k600_frame_prediction); {run.run_dir} is stage {run.stage} with "
                         f"model.context_frames={k}")
    frames = 1 + (k - 1) * run.autoencoder.temporal_factor
    res, stride = run.data.frame_size, run.data.frame_stride
    try:
        video = read_first_frames(str(path), frames, stride, short_side=res)
    except VideoDecodeError as err:
        raise ValueError(f"--context {path}: cannot read the first {frames} frames (stride {stride}) the run's "
                         f"{k} latent context frames need: {err.reason.value}: {err.detail}") from err
    clip = to_model_range(resize_crop(channels_first(video), res, Sampling.center))
    return clip, {"file": str(path), "latent_frames": k, "video_frames": frames, "frame_stride": stride,
                  "predicted_video_frames": run.clip_frames - frames}


def sample_to_files(run: RunConfig, out_dir: str | os.PathLike, num_samples: int,
                    labels: Optional[Sequence[int]] = None, grid: bool = True, fps: int = 8,
                    formats: Sequence[str] = FORMATS, per_sample: bool = False, cols: Optional[int] = None,
                    module=None, ckpt: str = "last", context: Optional[str | os.PathLike] = None) -> list[Path]:
    """Generate `num_samples` clips from `module`, or from each checkpoint `ckpt` names, and write them.

    Sampling settings come from the eval group (sampling_steps, guidance_scale, use_ema, seed,
    batch_size, device). context: a video file whose first frames a frame-prediction run continues (every
    sample continues the same frames; read_context). labels: class per sample (default j % num_classes). grid: one grid video,
    `cols` columns (default: one per class when conditional, else square). per_sample: also
    sample_NNN.<fmt>. Writes samples.json (labels, settings) too. With several checkpoints each goes to
    out_dir/step<global step>/. Returns the paths written.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats {bad or '[]'} not supported; valid: {FORMATS}")
    if run.stage != "diffusion":
        raise ValueError(f"walt-sample needs a stage-2 (diffusion) run; {run.run_dir} is stage {run.stage}")
    clip, source = read_context(run, context) if context is not None else (None, None)
    if clip is None and run.model.context_frames > 0 and run.model.context_prob >= 1:
        raise ValueError(f"{run.run_dir} is a frame-prediction run (model.context_frames={run.model.context_frames}, "
                         "trained always with context): pass the video to continue, --context path/to/video.mp4")
    out_dir = Path(out_dir)
    parts = (num_samples, labels, grid, fps, formats, per_sample, cols, clip, source)
    if module is not None:
        return _sample_module(run, module, None, out_dir, *parts)
    chosen = select_checkpoints(run.run_dir, ckpt)
    written = []
    for c in chosen:
        module, step = load_module(run, c.path)
        target = out_dir if len(chosen) == 1 else out_dir / f"step{step:07d}"
        written += _sample_module(run, module, step, target, *parts)
    return written


def _sample_module(run: RunConfig, module, step: Optional[int], out_dir: Path, num_samples: int,
                   labels: Optional[Sequence[int]], grid: bool, fps: int, formats: Sequence[str],
                   per_sample: bool, cols: Optional[int], clip: Optional[torch.Tensor] = None,
                   source: Optional[dict] = None) -> list[Path]:
    ev = run.eval
    module = module.float().eval().to(eval_device(ev))
    nc = module.model_cfg.num_classes
    labels = class_cycle(nc, num_samples) if labels is None else [int(y) for y in labels]
    if labels is not None and (len(labels) != num_samples or any(not 0 <= y < max(nc, 1) for y in labels)):
        raise ValueError(f"labels must be {num_samples} class ids in [0, {nc}), got {labels}")

    def context(s: int, e: int) -> Optional[torch.Tensor]:
        return None if clip is None else clip[None].expand(e - s, *clip.shape)

    videos = torch.cat([generate(module, ev, s, min(s + ev.batch_size, num_samples), labels,
                                 context(s, min(s + ev.batch_size, num_samples)))[1].cpu()
                        for s in range(0, num_samples, ev.batch_size)])
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if grid:
        cols = cols or (nc if nc and num_samples >= nc else None)
        written += _write(out_dir / "grid", make_grid(videos, cols), fps, formats)
    if per_sample:
        for j, frames in enumerate(rearrange(to_uint8(videos), "n c t h w -> n t h w c").numpy()):
            written += _write(out_dir / f"sample_{j:03d}", frames, fps, formats)
    manifest = out_dir / "samples.json"
    manifest.write_text(json.dumps({
        "run_dir": str(run.run_dir), "global_step": step, "num_samples": num_samples, "labels": labels,
        "task": "generation" if source is None else "frame_prediction", **({"context": source} if source else {}),
        **sampling_settings(module, ev), "fps": fps, "shape_ncthw": list(videos.shape),
        "files": [p.name for p in written],
    }, indent=2))
    log.info("wrote %d samples to %s", num_samples, out_dir)
    return written + [manifest]


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    """walt-sample <run_dir> [options] [ckpt=last|all|<step>,<step>] [overrides]: sample videos from a stage-2 run.

    Overrides (eval.seed=1, eval.sampling_steps=100, eval.guidance_scale=2, ...) re-compose the run's
    stored config. Files go to --out (default <run_dir>/samples; one step<N>/ sub-directory per checkpoint
    when ckpt= names several). Prints the written paths as JSON.

    walt-sample cascade <base run> <sr run> [...] --caption TEXT --out DIR: text -> video through a trained
    cascade (walt.pipeline.cascade; walt-sample cascade --help lists its options).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cascade"]:
        from walt.pipeline.cascade import main as cascade_main

        return cascade_main(argv[1:]).files
    parser = argparse.ArgumentParser(prog="walt-sample", description=main.__doc__.split("\n\n")[0],
                                     epilog="text -> video through a trained cascade: walt-sample cascade --help")
    parser.add_argument("run_dir")
    parser.add_argument("-n", "--num-samples", type=int, default=16)
    parser.add_argument("--out", default=None, help="output directory (default <run_dir>/samples)")
    parser.add_argument("--labels", default=None, help="comma-separated class ids, one per sample")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--formats", default="mp4,gif", help=f"comma-separated, from {FORMATS}")
    parser.add_argument("--cols", type=int, default=None, help="grid columns")
    parser.add_argument("--per-sample", action="store_true", help="also one file per sample")
    parser.add_argument("--no-grid", action="store_true", help="no grid video")
    parser.add_argument("--context", metavar="VIDEO", default=None,
                        help="frame-prediction runs: continue the first frames of this video file")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    ckpt, overrides = split_ckpt_override(rest)
    run = RunConfig.stored(args.run_dir, overrides)
    labels = [int(y) for y in args.labels.split(",")] if args.labels else None
    paths = sample_to_files(run, args.out or Path(args.run_dir) / "samples", args.num_samples, labels=labels,
                            grid=not args.no_grid, fps=args.fps, formats=args.formats.split(","),
                            per_sample=args.per_sample, cols=args.cols, ckpt=ckpt, context=args.context)
    print(json.dumps([str(p) for p in paths]))
    return paths
