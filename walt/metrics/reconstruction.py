"""Autoencoder reconstruction quality: rFVD, PSNR, SSIM, accumulated over a stream of clip pairs.

PSNR and SSIM are computed per frame on [0, 1] images (the model's [-1, 1] mapped by (x + 1) / 2,
data_range = 1, clamped as a saved video would be) with frames folded into the batch, then averaged
over all frames. rFVD is the Frechet distance between a feature extractor's statistics of the real
clips and of their reconstructions (any registered extractor; I3D for paper numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from einops import rearrange

from walt.metrics.frechet import FeatureStats
from walt.metrics.protocol import FeatureExtractor, MetricProtocol


def _frames01(videos: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) in [-1, 1] -> (N*T, C, H, W) in [0, 1], float32."""
    return rearrange((videos.float().clamp(-1, 1) + 1) / 2, "n c t h w -> (n t) c h w")


def frame_psnr(real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of every frame, (N*T,), for videos (N, C, T, H, W) in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio  # imported late: torchmetrics takes seconds

    return peak_signal_noise_ratio(_frames01(recon), _frames01(real), data_range=1.0, reduction="none", dim=(1, 2, 3))


def frame_ssim(real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """SSIM (11x11 Gaussian window, sigma 1.5) of every frame, (N*T,), for videos in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(_frames01(recon), _frames01(real), data_range=1.0, reduction="none")


@dataclass
class ReconstructionMeter:
    """Streams (real, reconstruction) batches; keeps only running sums and two FeatureStats.

    extractor: feature network for rFVD (None: PSNR / SSIM only).
    """

    extractor: FeatureExtractor | None = None
    real_stats: FeatureStats = field(default_factory=FeatureStats)
    recon_stats: FeatureStats = field(default_factory=FeatureStats)
    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    frames: int = 0
    videos: int = 0
    clip_frames: int | None = None

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        if real.shape != recon.shape:
            raise ValueError(f"real {tuple(real.shape)} and reconstruction {tuple(recon.shape)} differ in shape")
        self.psnr_sum += frame_psnr(real, recon).double().sum().item()
        self.ssim_sum += frame_ssim(real, recon).double().sum().item()
        self.frames += real.shape[0] * real.shape[2]
        self.videos += real.shape[0]
        self.clip_frames = real.shape[2]
        if self.extractor is not None:
            self.real_stats.update(self.extractor.features(real))
            self.recon_stats.update(self.extractor.features(recon))

    def compute(self) -> dict[str, float]:
        """{"psnr", "ssim"} and "rfvd" when an extractor is set (needs at least 2 videos)."""
        if not self.frames:
            raise ValueError("no reconstructions accumulated")
        out = {"psnr": self.psnr_sum / self.frames, "ssim": self.ssim_sum / self.frames}
        if self.extractor is not None:
            out["rfvd"] = self.real_stats.frechet_distance(self.recon_stats)
        return out

    def protocols(self, reference_split: str | None = None) -> dict[str, MetricProtocol]:
        common = dict(frames=self.clip_frames, n_real=self.videos, n_fake=self.videos, reference_split=reference_split)
        out = {
            "psnr": MetricProtocol("psnr", "none (pixels in [0,1], data_range=1)", notes="mean over frames", **common),
            "ssim": MetricProtocol("ssim", "none (pixels in [0,1], data_range=1, 11x11 Gaussian sigma 1.5)",
                                   notes="mean over frames", **common),
        }
        if self.extractor is not None:
            out["rfvd"] = MetricProtocol.for_extractor(
                "rfvd", self.extractor, notes="real clips vs their reconstructions", **common)
        return out


def rfvd(extractor: FeatureExtractor, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Frechet distance between features of real clips and of their reconstructions, streamed."""
    real, recon = FeatureStats(extractor.dim), FeatureStats(extractor.dim)
    for x, y in pairs:
        real.update(extractor.features(x))
        recon.update(extractor.features(y))
    return real.frechet_distance(recon)
