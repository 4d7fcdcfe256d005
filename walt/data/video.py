"""Video decoding (PyAV), clip sampling and the spatial transform shared by every dataset.

Every dataset yields clips as float tensors in [-1, 1] with layout (C, T, H, W); an image is a
1-frame clip. Decoding stops as soon as the last needed frame is read, so short clips from long
videos cost little.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import torch
import torch.nn.functional as F


class Sampling(str, enum.Enum):
    """Where a clip (temporal) or crop (spatial) is taken: uniformly at random or centred."""

    random = "random"
    center = "center"


class VideoDecodeError(RuntimeError):
    """A file that cannot give the requested clip (corrupt, empty or too short)."""


@dataclass(frozen=True)
class ClipSpec:
    """Which frames to take from a video.

    num_frames: frames per clip (17 for the W.A.L.T autoencoder: 1 + 4k).
    frame_stride: step between taken frames (1 = consecutive).
    sampling: temporal offset of the clip inside the video.
    """

    num_frames: int = 17
    frame_stride: int = 1
    sampling: Sampling = Sampling.random

    @property
    def span(self) -> int:
        """Number of source frames a clip covers."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def start(self, total: int, rng: random.Random | None = None) -> int:
        if total < self.span:
            raise VideoDecodeError(f"video has {total} frames, clip needs {self.span}")
        slack = total - self.span
        if self.sampling == Sampling.center:
            return slack // 2
        return (rng or random).randint(0, slack)


def count_frames(path: str) -> int:
    """Frame count from the container header; decodes the stream only when the header lacks it."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        raise VideoDecodeError(f"cannot read {path}: {err}") from err


def read_clip(path: str, clip: ClipSpec, rng: random.Random | None = None) -> np.ndarray:
    """Decode one clip as uint8 (T, H, W, 3).

    The header's frame count picks the offset; decoding stops after the clip's last frame.
    Files whose header lacks the count fall back to a full decode. One reformatter per clip keeps
    libswscale's context alive across frames (3x faster than `frame.to_ndarray(format=...)`).
    """
    rgb = VideoReformatter()
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            total = int(stream.frames)
            if total <= 0:  # header has no count: decode everything once
                frames = [rgb.reformat(f, format="rgb24").to_ndarray() for f in container.decode(stream)]
                start = clip.start(len(frames), rng)
                return np.stack(frames[start : start + clip.span : clip.frame_stride])
            start = clip.start(total, rng)
            wanted = range(start, start + clip.span, clip.frame_stride)
            last, out = wanted[-1], []
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    out.append(rgb.reformat(frame, format="rgb24").to_ndarray())
                if i >= last:
                    break
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        raise VideoDecodeError(f"cannot decode {path}: {err}") from err
    if len(out) < clip.num_frames:
        raise VideoDecodeError(f"{path}: decoded {len(out)} of {clip.num_frames} frames")
    return np.stack(out)


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (C, T, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames)
    return x.permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


def resize_crop(video: torch.Tensor, resolution: int, crop: Sampling, rng: random.Random | None = None) -> torch.Tensor:
    """Resize the short side to `resolution` (antialiased bilinear), then crop a square.

    video: (C, T, H, W) float. Returns (C, T, resolution, resolution).
    """
    _, _, h, w = video.shape
    if min(h, w) != resolution:
        scale = resolution / min(h, w)
        size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
        # interpolate treats T as the batch: (C, T, H, W) -> (T, C, H, W)
        video = F.interpolate(video.transpose(0, 1), size=size, mode="bilinear", antialias=True, align_corners=False)
        video = video.transpose(0, 1).clamp_(-1.0, 1.0)
        h, w = size
    if crop == Sampling.center:
        top, left = (h - resolution) // 2, (w - resolution) // 2
    else:
        r = rng or random
        top, left = r.randint(0, h - resolution), r.randint(0, w - resolution)
    return video[:, :, top : top + resolution, left : left + resolution]


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "libx264", crf: int = 18) -> None:
    """Write uint8 (T, H, W, 3) frames to a video file (used for the synthetic set and samples)."""
    t, h, w, _ = frames.shape
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
