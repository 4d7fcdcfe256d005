"""Typed `eval` config group: which metrics a run is measured with, and how (walt.eval runs them)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from walt.utils import from_dict

I3D_EXTRACTORS = ("i3d", "i3d_torchscript")
EXTRACTOR_NAMES = ("synthetic", *I3D_EXTRACTORS)
REFERENCE_SPLITS = ("train", "val")
# metric -> the eval.extractor values that can measure it; None: the metric needs no eval.extractor
# (pixels only, or its own network: InceptionV3 for fid/is/kid, C3D for is_c3d).
METRIC_EXTRACTORS: dict[str, Optional[tuple[str, ...]]] = {
    "fvd": I3D_EXTRACTORS, "fvd_synth": ("synthetic",), "is_synth": ("synthetic",), "synth_acc": ("synthetic",),
    "rfvd": I3D_EXTRACTORS, "rfvd_synth": ("synthetic",), "psnr": None, "ssim": None,
    "fid": None, "is": None, "kid": None, "is_c3d": None,
}
STAGE_METRICS = {
    "diffusion": ("fvd", "fvd_synth", "is_synth", "synth_acc", "fid", "is", "kid", "is_c3d"),
    "autoencoder": ("psnr", "ssim", "rfvd", "rfvd_synth"),
}


@dataclass
class EvalConfig:
    """The `eval` config group (experiments/eval/*.yaml).

    metrics: names to compute; None = the stage's defaults for the extractor (`stage_metrics`).
        Stage 2: fvd (I3D), fvd_synth / is_synth / synth_acc (synthetic-data classifier), fid / is / kid
        (InceptionV3 through torch-fidelity, image runs: ImageNet), is_c3d (UCF-101 Inception score with
        C3D). Stage 1: psnr, ssim, rfvd (I3D), rfvd_synth. The *_synth names are measured by the
        synthetic-data classifier, so no table reads them as I3D or Inception numbers.
    extractor: video feature network for fvd / rfvd, "synthetic" | "i3d" | "i3d_torchscript".
    weights: the I3D file; None = the extractor's environment variable ($WALT_I3D_WEIGHTS, ...).
    inception_weights: torch-fidelity's inception-v3-compat file for fid/is/kid; None = $WALT_INCEPTION_WEIGHTS.
    c3d_weights: the C3D TorchScript file for is_c3d; None = $WALT_C3D_WEIGHTS.
    extractor_options: extra extractor arguments (synthetic: SynthClassifierConfig fields such as
        width, epochs, resolution; i3d: resolution, verify); None = none.
    num_samples: generated clips (stage 2).
    num_real: reference clips, capped at the split's size; stage 1 reconstructs these.
    reference_split: "train" | "val": the split whose centred clips are the real data.
    batch_size: clips per sampling / reconstruction / feature batch.
    sampling_steps, guidance_scale: None = the diffusion config's values.
    use_ema: sample with the EMA weights.
    num_frames_metric: the first n frames of each clip are fed to the extractor (16 of 17 for I3D,
        the eval=i3d preset); None = all frames. More frames than the clips have is an error.
    is_splits: Inception-score splits.
    seed: labels, initial noise and the reference subset.
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    after_train: walt-train evaluates the run when training ends.
    """

    metrics: Optional[list] = None
    extractor: str = "synthetic"
    weights: Optional[str] = None
    inception_weights: Optional[str] = None
    c3d_weights: Optional[str] = None
    extractor_options: Optional[dict] = None
    num_samples: int = 256
    num_real: int = 2048
    reference_split: str = "train"
    batch_size: int = 16
    sampling_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    use_ema: bool = True
    num_frames_metric: Optional[int] = None
    is_splits: int = 1
    seed: int = 0
    device: str = "auto"
    after_train: bool = False

    def __post_init__(self):
        if self.extractor not in EXTRACTOR_NAMES:
            raise ValueError(f"eval.extractor={self.extractor!r} is not one of {EXTRACTOR_NAMES}")
        if self.reference_split not in REFERENCE_SPLITS:
            raise ValueError(f"eval.reference_split={self.reference_split!r} is not one of {REFERENCE_SPLITS}")
        for name in ("num_samples", "num_real", "batch_size", "is_splits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_frames_metric is not None and self.num_frames_metric < 1:
            raise ValueError(f"eval.num_frames_metric must be >= 1 or null, got {self.num_frames_metric}")
        if self.sampling_steps is not None and self.sampling_steps < 1:
            raise ValueError(f"eval.sampling_steps must be >= 1 or null, got {self.sampling_steps}")
        if self.metrics is not None:
            self.metrics = [str(m) for m in self.metrics]
            unknown = [m for m in self.metrics if m not in METRIC_EXTRACTORS]
            if unknown or not self.metrics:
                raise ValueError(f"eval.metrics {unknown or '[]'} unknown; valid metrics: {sorted(METRIC_EXTRACTORS)}")
            for m in self.metrics:
                needs = METRIC_EXTRACTORS[m]
                if needs is not None and self.extractor not in needs:
                    raise ValueError(f"eval.metrics has {m!r}, which needs eval.extractor in {needs}, "
                                     f"not {self.extractor!r}")
        self.extractor_options = dict(self.extractor_options or {})

    @classmethod
    def from_dict(cls, d: Any) -> "EvalConfig":
        """From a dict or DictConfig; unknown keys and wrongly typed values fail naming the valid ones."""
        return from_dict(cls, d, "eval")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stage_metrics(self, stage: str, class_conditional: bool = True) -> list[str]:
        """The metrics computed for `stage`: eval.metrics (all valid for the stage) or the defaults,
        diffusion [fvd_synth, is_synth, synth_acc] | [fvd] and autoencoder [psnr, ssim, rfvd_synth] | [psnr, ssim, rfvd].
        synth_acc (the class asked for vs the class recognised) needs a class-conditional model: a default
        for one, refused up front for the others (text-to-video, unconditional)."""
        if stage not in STAGE_METRICS:
            raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGE_METRICS)}")
        synthetic = self.extractor == "synthetic"
        if self.metrics is None:
            if stage == "diffusion":
                return ["fvd_synth", "is_synth", *(["synth_acc"] * class_conditional)] if synthetic else ["fvd"]
            return ["psnr", "ssim", "rfvd_synth" if synthetic else "rfvd"]
        wrong = [m for m in self.metrics if m not in STAGE_METRICS[stage]]
        if wrong:
            raise ValueError(f"eval.metrics {wrong} do not apply to stage {stage}; valid for it: {STAGE_METRICS[stage]}")
        if "synth_acc" in self.metrics and not class_conditional:
            raise ValueError("eval.metrics has synth_acc, which needs a class-conditional model (model.num_classes > 0)")
        return list(self.metrics)
