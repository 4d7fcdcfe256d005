"""How a number was measured, and the feature extractors that measure it.

A metric value is meaningless without its protocol (FVD on 2048 vs 10k samples, which I3D file, which
frames and resolution), so every value in results.json sits next to a `MetricProtocol`. Extractors
are registered by name so `walt-eval` picks them from config ('i3d', 'i3d_torchscript', 'synthetic').
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps videos (N, C, T, H, W) in [-1, 1] to features (N, dim) float32 on CPU."""

    name: str
    dim: int
    weights_checksum: str | None
    resolution: int | None  # frame size the network sees after preprocessing

    def features(self, videos: torch.Tensor) -> torch.Tensor: ...


@dataclass
class MetricProtocol:
    """The record stored beside a metric value.

    metric: e.g. "fvd", "rfvd", "fvd_synth", "is_synth", "is_c3d", "fid", "psnr".
    extractor: network and output used (e.g. "InceptionI3d Kinetics-400 logits (400-d)").
    weights_checksum: checksum of the weights file actually used (None: no pretrained weights).
    frames, resolution: clip length and frame size fed to the extractor.
    n_real, n_fake: sample counts of each side (None where a side does not exist, e.g. IS).
    reference_split: which real data the reference statistics come from.
    skipped: why the metric was not computed (None when it was).
    task: what the fake side is: "generation" (samples from noise, labels or text) or "frame_prediction"
        (samples continue real clips); None where there is no fake side (reconstruction metrics).
    context: for frame prediction, where the context came from: latent_frames, video_frames,
        predicted_video_frames, clip_frames, source.
    """

    metric: str
    extractor: str
    weights_checksum: str | None = None
    frames: int | None = None
    resolution: int | None = None
    n_real: int | None = None
    n_fake: int | None = None
    reference_split: str | None = None
    notes: str = ""
    skipped: str | None = None
    task: str | None = None
    context: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricProtocol":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown MetricProtocol fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    @classmethod
    def for_extractor(cls, metric: str, extractor: FeatureExtractor, **kw) -> "MetricProtocol":
        kw.setdefault("resolution", extractor.resolution)
        return cls(metric=metric, extractor=extractor.name, weights_checksum=extractor.weights_checksum, **kw)


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str):
    """Decorator: make a factory (keyword arguments -> FeatureExtractor) available by `name`."""

    def wrap(factory):
        if name in EXTRACTORS:
            raise ValueError(f"feature extractor {name!r} is already registered")
        EXTRACTORS[name] = factory
        return factory

    return wrap


def build_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build a registered extractor; an unknown name fails listing the valid ones."""
    import walt.metrics  # noqa: F401  (importing the package registers the built-in extractors)

    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; valid: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](**kwargs)
