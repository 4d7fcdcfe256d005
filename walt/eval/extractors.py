"""The networks a run's metrics need, behind one interface: clips in, per-clip rows out.

video      the configured FeatureExtractor (synthetic classifier or I3D) on the first
           eval.num_frames_metric frames: features (fvd, fvd_synth, rfvd*) and class probabilities
           (is_synth, synth_acc) when it has them.
inception  torch-fidelity's InceptionV3 on every frame: features and logits (fid, kid, is). Image runs
           are 1-frame clips, so that is one image per sample.
c3d        the user's UCF-101 C3D on the first 16 frames: class probabilities (is_c3d).
Each network's `key` is what its rows depend on; it names the cached passes (walt.eval.state).
Weights are resolved before anything is sampled, so a missing file fails first.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch

from walt.config.run import RunConfig

VIDEO_METRICS = ("fvd", "fvd_synth", "is_synth", "synth_acc", "rfvd", "rfvd_synth")
INCEPTION_METRICS = ("fid", "is", "kid")
C3D_METRICS = ("is_c3d",)


class Network(Protocol):
    tag: str  # "video" | "inception" | "c3d": the rows' namespace
    name: str
    weights_checksum: Optional[str]
    resolution: Optional[int]
    frames: int

    @property
    def key(self) -> dict: ...

    def outputs(self, videos: torch.Tensor) -> dict[str, np.ndarray]: ...


class FirstFrames:
    """A FeatureExtractor fed the first `frames` frames of every clip (the protocol's frames, e.g. 16 of 17)."""

    tag = "video"

    def __init__(self, extractor, frames: int):
        self.extractor, self.frames = extractor, frames
        self.name, self.dim = extractor.name, extractor.dim
        self.weights_checksum, self.resolution = extractor.weights_checksum, extractor.resolution
        self.has_probs = hasattr(extractor, "probs")

    @property
    def key(self) -> dict:
        return {"name": self.name, "checksum": self.weights_checksum, "resolution": self.resolution,
                "frames": self.frames}

    def _first(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.shape[2] < self.frames:
            raise ValueError(f"clips have {videos.shape[2]} frames, the metric takes {self.frames} "
                             "(eval.num_frames_metric)")
        return videos[:, :, : self.frames]

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        return self.extractor.features(self._first(videos))

    def probs(self, videos: torch.Tensor) -> torch.Tensor:
        return self.extractor.probs(self._first(videos))

    def outputs(self, videos: torch.Tensor) -> dict[str, np.ndarray]:
        """features (N, D) and, for classifiers, probs (N, K)."""
        out = {"features": self.features(videos).float().numpy()}
        if self.has_probs:
            out["probs"] = self.probs(videos).float().numpy()
        return out


class InceptionFrames:
    """walt.metrics.fidelity.InceptionExtractor on the first `frames` frames, each frame one image."""

    tag = "inception"

    def __init__(self, extractor, frames: int):
        self.extractor, self.frames = extractor, frames
        self.name, self.weights_checksum = extractor.name, extractor.weights_checksum
        self.resolution = extractor.resolution

    @property
    def key(self) -> dict:
        return {"name": self.name, "checksum": self.weights_checksum, "frames": self.frames}

    def outputs(self, videos: torch.Tensor) -> dict[str, np.ndarray]:
        """features (N, frames, 2048) and logits (N, frames, 1008)."""
        features, logits = self.extractor.outputs(videos[:, :, : self.frames])
        return {"features": features, "logits": logits}


class C3DClips:
    """The C3D UCF-101 classifier (TorchScript) on the first 16 frames as uint8: probs (N, 101)."""

    tag = "c3d"

    def __init__(self, weights: Optional[str], device: torch.device):
        from walt.metrics.c3d import C3D_SPEC, NUM_FRAMES, RESOLUTION, load_c3d

        self.classifier, self.weights_checksum = load_c3d(weights, device)
        self.device, self.frames, self.resolution = device, NUM_FRAMES, RESOLUTION
        self.name = C3D_SPEC.name

    @property
    def key(self) -> dict:
        return {"name": self.name, "checksum": self.weights_checksum}

    def outputs(self, videos: torch.Tensor) -> dict[str, np.ndarray]:
        from walt.metrics.c3d import classifier_probs

        return {"probs": classifier_probs(self.classifier, [videos], device=self.device).astype(np.float32)}


@dataclasses.dataclass
class Networks:
    """The networks of one evaluation (None where no selected metric needs it)."""

    video: Optional[FirstFrames] = None
    inception: Optional[InceptionFrames] = None
    c3d: Optional[C3DClips] = None

    def present(self) -> list[Network]:
        return [n for n in (self.video, self.inception, self.c3d) if n is not None]


def build_networks(run: RunConfig, metrics: list[str], device: torch.device) -> Networks:
    """The networks `metrics` need; weights files are checked first (run.eval_weights), then loaded."""
    weights = run.eval_weights()
    frames = run.metric_frames()
    nets = Networks()
    if any(m in VIDEO_METRICS for m in metrics):
        nets.video = FirstFrames(_video_extractor(run, frames, device), frames)
    if any(m in INCEPTION_METRICS for m in metrics):
        from walt.metrics.fidelity import InceptionExtractor

        nets.inception = InceptionFrames(InceptionExtractor(weights["inception"], device, run.eval.batch_size), frames)
    if any(m in C3D_METRICS for m in metrics):
        from walt.metrics.c3d import NUM_FRAMES

        if run.clip_frames < NUM_FRAMES:
            raise ValueError(f"is_c3d feeds C3D {NUM_FRAMES} frames, the run's clips have {run.clip_frames} "
                             "(data.num_frames)")
        nets.c3d = C3DClips(str(weights["c3d"]), device)
    return nets


def _video_extractor(run: RunConfig, frames: int, device: torch.device):
    """The configured eval.extractor. The synthetic classifier is trained once per dataset (cached)."""
    from walt.metrics import build_extractor

    ev = run.eval
    opts = dict(ev.extractor_options)
    if ev.extractor == "synthetic":
        root = Path(run.data.root)
        run.data.datamodule().prepare_data()  # the synthetic set is generated on first use
        if not (root / "spec.json").exists():
            raise ValueError(f"eval.extractor=synthetic needs the synthetic dataset (a root with spec.json); "
                             f"{root} has none. Use eval=i3d for real videos.")
        opts.setdefault("num_frames", frames)
        opts.setdefault("split", int(run.data.split))
        return build_extractor("synthetic", root=str(root), device=str(device), batch_size=ev.batch_size, **opts)
    return build_extractor(ev.extractor, weights=ev.weights, device=str(device), batch_size=ev.batch_size, **opts)
