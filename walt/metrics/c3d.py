"""Inception score of UCF-101 videos with a C3D classifier (the TGAN / MAGVIT / StyleGAN-V protocol).

The classifier is the UCF-101-finetuned C3D of TGANv2 as StyleGAN-V's TorchScript export
(`c3d_ucf101.pt`): it takes uint8 clips (N, 3, 16, H, W) and does its own resize / crop / mean
subtraction to 16x112x112, returning class probabilities over 101 classes. The file is the user's;
without it the metric is skipped with a logged reason (the embedded default runs need no weights).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from walt.metrics.frechet import inception_score
from walt.metrics.protocol import MetricProtocol
from walt.utils import to_uint8
from walt.weights import WeightsError, WeightsSpec, load_torchscript

log = logging.getLogger(__name__)

C3D_SPEC = WeightsSpec(
    name="C3D UCF-101 classifier (c3d_ucf101.pt, TorchScript)",
    env_var="WALT_C3D_WEIGHTS",
    checksum=None,
    source="the StyleGAN-V metrics release (c3d_ucf101.pt, a TorchScript export of TGANv2's UCF-101 C3D)",
)
NUM_FRAMES = 16
RESOLUTION = 112
METRIC = "is_c3d"


def load_c3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, str]:
    """(classifier, "sha256:<hex>" of the file); raises WeightsError when the file is missing or unreadable."""
    return load_torchscript(C3D_SPEC, path, device)


def as_probabilities(out: torch.Tensor) -> torch.Tensor:
    """Classifier output -> probabilities: kept when rows already are a distribution, else softmaxed."""
    out = out.double()
    if (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(len(out), dtype=out.dtype), atol=1e-3):
        return out
    return out.softmax(-1)


@dataclass
class ISResult:
    """mean / std are None when the metric was skipped; protocol.skipped then says why."""

    mean: float | None
    std: float | None
    protocol: MetricProtocol


def classifier_probs(classifier: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor],
                     max_items: int | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """Stream videos in [-1, 1] (first NUM_FRAMES frames used) through the classifier: (N, K) float64."""
    probs, n = [], 0
    with torch.no_grad():
        for batch in batches:
            if max_items is not None:
                batch = batch[: max_items - n]
            if not len(batch):
                break
            if batch.shape[2] < NUM_FRAMES:
                raise ValueError(f"C3D needs {NUM_FRAMES} frames, got {batch.shape[2]}")
            probs.append(as_probabilities(classifier(to_uint8(batch[:, :, :NUM_FRAMES]).to(device)).cpu()))
            n += len(batch)
    return torch.cat(probs).numpy()


def c3d_inception_score(batches: Iterable[torch.Tensor], weights: str | Path | None = None, splits: int = 10,
                        max_items: int | None = None, device: str = "cpu") -> ISResult:
    """IS of generated UCF-101 videos with the C3D classifier. Without usable weights the metric is
    skipped, not failed: a warning is logged and the result carries the reason in protocol.skipped.

    splits=10 and rows shuffled with seed 42 before splitting follow StyleGAN-V's video IS.
    """
    try:
        classifier, checksum = load_c3d(weights, device)
    except WeightsError as err:
        log.warning("skipping %s (C3D inception score): %s", METRIC, err)
        return ISResult(None, None, MetricProtocol(metric=METRIC, extractor=C3D_SPEC.name, frames=NUM_FRAMES,
                                                   resolution=RESOLUTION, skipped=str(err)))
    probs = classifier_probs(classifier, batches, max_items, device)
    mean, std = inception_score(probs, splits=min(splits, len(probs)), shuffle_seed=42)
    protocol = MetricProtocol(
        metric=METRIC, extractor=f"C3D UCF-101 class probabilities ({probs.shape[1]} classes)",
        weights_checksum=checksum, frames=NUM_FRAMES, resolution=RESOLUTION, n_fake=len(probs),
        notes=f"{min(splits, len(probs))} splits, rows shuffled with seed 42; "
              "uint8 input, the classifier resizes internally",
    )
    return ISResult(mean, std, protocol)

