"""Evaluation in the run's own TensorBoard (<run_dir>/tensorboard), at each checkpoint's global step.

Scalars go under eval/<metric> and sample clips under eval/samples, so checkpoints of a run line up as
points of one curve and runs of a sweep side by side. The HPARAMS tab shows a metric column only when
the run's experiment summary declares it: walt-train declares `hp_metric_tags` when training starts
(NaN until evaluated); a directory without any HPARAMS session (an untrained baseline, a run trained
without a logger) gets one here, declaring the same tags.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Optional

import torch
from einops import rearrange

from walt.utils import to_uint8

log = logging.getLogger(__name__)
TB_DIR = "tensorboard"
TAG_PREFIX = "eval/"
SAMPLES_TAG = TAG_PREFIX + "samples"
_warned = []


def has_hparams_session(tb_dir: Path) -> bool:
    """Whether an events file in tb_dir holds an HPARAMS session (tags are stored verbatim in the records)."""
    from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG

    tag = SESSION_START_INFO_TAG.encode()
    return any(tag in f.read_bytes() for f in Path(tb_dir).glob("events.out.tfevents.*"))


def can_write_video() -> bool:
    """TensorBoard's add_video encodes GIFs with moviepy<2 (moviepy.editor)."""
    try:
        return importlib.util.find_spec("moviepy.editor") is not None
    except ModuleNotFoundError:
        return False


def log_evaluation(tb_dir: str | os.PathLike, values: dict, step: int, preview: Optional[torch.Tensor] = None,
                   hparams: Optional[dict] = None, declared: Iterable[str] = ()) -> None:
    """Scalars eval/<metric> and the preview clips (N, C, T, H, W) in [-1, 1] at `step`; plus an HPARAMS
    session declaring `declared` tags when `hparams` is given and the directory has none yet."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    tb_dir = Path(tb_dir)
    tb_dir.mkdir(parents=True, exist_ok=True)
    new_session = hparams is not None and not has_hparams_session(tb_dir)
    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        if new_session:
            tags = dict.fromkeys([*declared, *(TAG_PREFIX + k for k in values)])
            metric_dict = {t: float(values.get(t[len(TAG_PREFIX):], math.nan)) for t in tags}
            for summary in hparams_summary(hparams, metric_dict):
                writer._get_file_writer().add_summary(summary)  # same call as Lightning's TensorBoardLogger
        for name, value in values.items():
            writer.add_scalar(TAG_PREFIX + name, float(value), step)
        if preview is not None and len(preview):
            _add_clips(writer, preview, step)
    finally:
        writer.close()


def _add_clips(writer, clips: torch.Tensor, step: int, fps: int = 8) -> None:
    """A grid video (an image for 1-frame clips); without moviepy<2, an image strip of every frame."""
    frames = to_uint8(clips)  # (N, C, T, H, W)
    if frames.shape[2] > 1 and can_write_video():
        writer.add_video(SAMPLES_TAG, rearrange(frames, "n c t h w -> n t c h w"), step, fps=fps)
        return
    if frames.shape[2] > 1 and not _warned:
        log.warning("TensorBoard sample videos need moviepy<2 (pip install 'moviepy<2'); "
                    "logging %s as image strips (one row of frames per clip) instead", SAMPLES_TAG)
        _warned.append(True)
    writer.add_image(SAMPLES_TAG, rearrange(frames, "n c t h w -> c (n h) (t w)"), step, dataformats="CHW")
