"""Video decoding (PyAV), clip sampling and the spatial transform shared by every dataset.

Every dataset yields clips as uint8 tensors with layout (C, T, H, W) (to_model_range maps them to
float in [-1, 1] on the device); an image is a 1-frame clip. Two things keep decoding cheap: the
reader seeks to the keyframe before the clip and decodes forward from there (instead of from the
start of the file), and libswscale converts each frame straight to the size the model wants
(instead of full-size RGB then a torch resize).
"""
from __future__ import annotations

import enum
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.reformatter import Interpolation, VideoReformatter
import numpy as np
import torch
import torch.nn.functional as F


class Sampling(str, enum.Enum):
    """Where a clip (temporal) or crop (spatial) is taken: uniformly at random or centred."""

    random = "random"
    center = "center"


class Reason(str, enum.Enum):
    """Why a file cannot give a clip; the keys of the per-reason table in data_health()."""

    empty = "empty"  # 0 bytes
    unreadable = "unreadable"  # container or header cannot be parsed (corrupt, truncated, not a video)
    no_video = "no_video"  # opens, but has no video stream or no frames
    too_short = "too_short"  # fewer frames (in the annotated segment) than the clip spans
    decode_error = "decode_error"  # header fine, frames fail to decode


class VideoDecodeError(RuntimeError):
    """A file that cannot give the requested clip. The message names the file; `reason` is a Reason."""

    def __init__(self, path: str, reason: Reason, detail: str):
        super().__init__(f"{path}: {reason.value}: {detail}")
        self.path, self.reason, self.detail = path, reason, detail


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
            raise ValueError(f"video has {total} frames, clip needs {self.span}")
        slack = total - self.span
        if self.sampling == Sampling.center:
            return slack // 2
        return (rng or random).randint(0, slack)


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says: frame count (0 = unknown), frame rate, frame size."""

    frames: int
    fps: Fraction
    width: int
    height: int

    def segment_frames(self, segment: tuple[float, float] | None) -> tuple[int, int]:
        """[first, end) frame range of a (start_s, end_s) segment; the whole video when None."""
        if segment is None:
            return 0, self.frames
        first = max(0, round(segment[0] * self.fps))
        end = round(segment[1] * self.fps) if segment[1] > segment[0] else self.frames
        return first, min(end, self.frames) if self.frames else end


def _header(container: av.container.InputContainer, path: str) -> tuple[av.VideoStream, VideoInfo]:
    if not container.streams.video:
        raise VideoDecodeError(path, Reason.no_video, "no video stream")
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or Fraction(0)
    frames = int(stream.frames)
    if frames <= 0 and stream.duration and fps:  # e.g. webm/mkv: no count, but a duration
        frames = int(round(stream.duration * stream.time_base * fps))
    return stream, VideoInfo(frames, Fraction(fps), stream.codec_context.width, stream.codec_context.height)


def _open(path: str) -> av.container.InputContainer:
    try:
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(path, Reason.empty, "file is empty (0 bytes)")
        return av.open(path)
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise VideoDecodeError(path, Reason.unreadable, str(err)) from err


def probe(path: str) -> VideoInfo:
    """Header-only check (open + stream info, no frame decoded): about a millisecond per file."""
    with _open(path) as container:
        _, info = _header(container, path)
    if info.frames <= 0 and not info.fps:
        raise VideoDecodeError(path, Reason.no_video, "header reports no frames")
    return info


def count_frames(path: str) -> int:
    """Frame count from the container header; decodes the stream only when the header lacks it."""
    with _open(path) as container:
        stream, info = _header(container, path)
        if info.frames > 0:
            return info.frames
        try:
            return sum(1 for _ in container.decode(stream))
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoDecodeError(path, Reason.decode_error, str(err)) from err


def frame_size(resolution: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of a resolution setting: one int = a square frame, or [H, W] (non-square clips, e.g. 128x224)."""
    if isinstance(resolution, (int, np.integer)):
        return int(resolution), int(resolution)
    values = tuple(int(v) for v in resolution)
    if len(values) != 2:
        raise ValueError(f"resolution must be one int (square) or [height, width], got {list(values)}")
    return values


def scaled_size(height: int, width: int, short_side: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) with the aspect kept and the short side equal to `short_side` (what resize_crop makes); with
    short_side = (H, W) the smallest such size that covers an H x W crop (one int n is the same as (n, n))."""
    H, W = frame_size(short_side)
    scale = max(H / height, W / width)
    return max(H, round(height * scale)), max(W, round(width * scale))


class _Converter:
    """Frames -> RGB arrays, resized to the short side when one is given.

    Two libswscale contexts live for the whole clip (3x faster than `frame.to_ndarray(format=...)`
    per frame): YUV -> RGB at the source size, then RGB -> RGB bilinear (antialiased when shrinking).
    Scaling in RGB matches torch's antialiased bilinear resize to 0.002 (mean, in [-1, 1]) and costs
    a quarter of it; scaling inside the YUV -> RGB step is faster still but blurs chroma (error 1.5x
    that of the reference path against the source). Single-threaded: parallelism comes from
    DataLoader workers, and swscale's own threads would oversubscribe them.
    """

    def __init__(self, short_side: int | Sequence[int] | None):
        self.rgb, self.scale, self.short_side, self.size = VideoReformatter(), VideoReformatter(), short_side, None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            h, w = frame.height, frame.width
            self.size = (h, w) if self.short_side is None else scaled_size(h, w, self.short_side)
        rgb = self.rgb.reformat(frame, format="rgb24", threads=1)
        h, w = self.size
        if (h, w) != (frame.height, frame.width):
            rgb = self.scale.reformat(rgb, width=w, height=h, interpolation=Interpolation.BILINEAR, threads=1)
        return rgb.to_ndarray()


def _frame_index(frame: av.VideoFrame, origin: int, stream: av.VideoStream, fps: Fraction) -> int | None:
    if frame.pts is None:
        return None
    return int(round((frame.pts - origin) * stream.time_base * fps))


def read_clip(
    path: str,
    clip: ClipSpec,
    rng: random.Random | None = None,
    short_side: int | Sequence[int] | None = None,
    segment: tuple[float, float] | None = None,
    seek: bool = True,
) -> np.ndarray:
    """Decode one clip as uint8 (T, H, W, 3).

    short_side: convert frames so their short side has this size (aspect kept); (H, W): to the smallest
        size covering H x W (aspect kept, scaled_size); None = source size.
    segment: (start_s, end_s) annotated part of a longer file (Kinetics full videos); the clip is
        sampled inside it. None = the whole file.
    seek: jump to the keyframe before the clip and decode forward, placing frames by their
        timestamps; False decodes from the first frame and counts frames (the reference path; it is
        also taken for files without timestamps or frame counts).
    """
    convert = _Converter(short_side)
    with _open(path) as container:
        stream, info = _header(container, path)
        try:
            if info.frames <= 0 or not info.fps:  # no count in the header: decode everything once
                frames = [convert(f) for f in container.decode(stream)]
                first, end = VideoInfo(len(frames), info.fps, 0, 0).segment_frames(segment)
                start = first + _start(clip, end - first, path, rng)
                return np.stack(frames[start : start + clip.span : clip.frame_stride])
            first, end = info.segment_frames(segment)
            start = first + _start(clip, end - first, path, rng)
            wanted = range(start, start + clip.span, clip.frame_stride)
            out = None
            if seek and start > 0:
                out = _decode_seeking(container, stream, info.fps, wanted, convert)
            if out is None:  # no seek wanted, or timestamps unusable: count from the first frame
                if seek and start > 0:
                    container.seek(0, stream=stream)
                out = _decode_counting(container, stream, wanted, convert)
        except (av.error.FFmpegError, ValueError, IndexError) as err:
            raise VideoDecodeError(path, Reason.decode_error, str(err)) from err
    if len(out) < clip.num_frames:
        raise VideoDecodeError(path, Reason.too_short,
                               f"decoded {len(out)} of {clip.num_frames} frames (header says {info.frames})")
    return np.stack(out)


def read_first_frames(path: str, num_frames: int, frame_stride: int = 1, short_side: int | None = None) -> np.ndarray:
    """The first `num_frames` frames (every `frame_stride`-th from frame 0) as uint8 (T, H, W, 3): the
    context of a frame prediction from a user's file. Fails with VideoDecodeError (unreadable, no_video,
    too_short, decode_error) naming the file."""
    span = (num_frames - 1) * frame_stride + 1
    convert = _Converter(short_side)
    with _open(path) as container:
        stream, _ = _header(container, path)
        try:
            out = _decode_counting(container, stream, range(0, span, frame_stride), convert)
        except (av.error.FFmpegError, ValueError, IndexError) as err:
            raise VideoDecodeError(path, Reason.decode_error, str(err)) from err
    if not out:
        raise VideoDecodeError(path, Reason.no_video, "no frame decodes")
    if len(out) < num_frames:
        raise VideoDecodeError(path, Reason.too_short, f"decoded {len(out)} frames, {num_frames} needed "
                                                        f"(frame stride {frame_stride} from the first frame)")
    return np.stack(out)


def _start(clip: ClipSpec, available: int, path: str, rng: random.Random | None) -> int:
    try:
        return clip.start(available, rng)
    except ValueError as err:
        raise VideoDecodeError(path, Reason.too_short, str(err)) from err


def _decode_counting(container, stream, wanted: range, convert) -> list[np.ndarray]:
    out, last = [], wanted[-1]
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            out.append(convert(frame))
        if i >= last:
            break
    return out


def _decode_seeking(container, stream, fps: Fraction, wanted: range, convert) -> list[np.ndarray] | None:
    """Frames `wanted` after a keyframe seek, or None when timestamps cannot place them."""
    origin = stream.start_time or 0
    target = origin + int((wanted[0] - 0.5) / fps / stream.time_base)  # half a frame early: rounding-safe
    container.seek(max(origin, target), stream=stream, backward=True, any_frame=False)
    out, last = [], wanted[-1]
    for frame in container.decode(stream):
        i = _frame_index(frame, origin, stream, fps)
        if i is None or (not out and i > wanted[0]):  # no pts, or the seek landed past the clip
            return None
        if i in wanted:
            out.append(convert(frame))
        if i >= last:
            break
    return out


def channels_first(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) frames as decoded -> uint8 (C, T, H, W), the layout of a dataset item's `video`."""
    return torch.as_tensor(frames).permute(3, 0, 1, 2)


def to_model_range(video: torch.Tensor) -> torch.Tensor:
    """Pixels -> the models' input: uint8 (..., C, T, H, W) -> float32 in [-1, 1], on video's device.

    Clips travel as uint8 from the loader workers to the device (4x less to copy between processes and
    to the GPU) and are converted here, once per batch (VideoDataModule.on_after_batch_transfer, or the
    loops that read a DataLoader themselves). A float tensor is taken to be in [-1, 1] already and is
    returned as is, so converting an already converted batch is harmless.
    """
    if video.dtype != torch.uint8:
        return video
    return video.float().div_(127.5).sub_(1.0)


def resize_crop(video: torch.Tensor, resolution: int | Sequence[int], crop: Sampling,
                rng: random.Random | None = None) -> torch.Tensor:
    """Resize the short side to `resolution` (antialiased bilinear), then crop a square; resolution = (H, W):
    resize (aspect kept) to the smallest size covering H x W, then crop H x W.

    video: (C, T, h, w), uint8 pixels or float in [-1, 1]; the result keeps the dtype. Returns (C, T, H, W).
    Frames decoded with read_clip(short_side=resolution) are only cropped here.
    """
    _, _, h, w = video.shape
    H, W = frame_size(resolution)
    size = scaled_size(h, w, (H, W))
    if size != (h, w):
        # interpolate treats T as the batch: (C, T, H, W) -> (T, C, H, W); uint8 saturates, float is clamped
        video = F.interpolate(video.transpose(0, 1), size=size, mode="bilinear", antialias=True, align_corners=False)
        video = video.transpose(0, 1)
        if video.is_floating_point():
            video = video.clamp_(-1.0, 1.0)
        h, w = size
    if crop == Sampling.center:
        top, left = (h - H) // 2, (w - W) // 2
    else:
        r = rng or random
        top, left = r.randint(0, h - H), r.randint(0, w - W)
    return video[:, :, top : top + H, left : left + W]


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "libx264", qp: int = 18,
                gop: int | None = None) -> None:
    """Write uint8 (T, H, W, 3) frames to a video file (used for the synthetic set and samples).

    x264 encodes at a constant quantiser `qp`: with crf rate control the same frames gave other bytes from
    one write to the next (decoded pixels up to 40 levels apart in a quarter of the synthetic clips), so two
    generations of the synthetic set trained different models; a fixed qp writes the same file every time.
    gop: keyframe interval (None = the codec's default, 250 for x264: one keyframe in a short clip).
    """
    t, h, w, _ = frames.shape
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"qp": str(qp), "preset": "veryfast"}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
