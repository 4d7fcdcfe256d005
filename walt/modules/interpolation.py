"""LaVie's temporal interpolation stage: higher frame rate latents conditioned on low-frame-rate ones.

The low-rate latents are repeated along time to the model's frame count (each high-rate latent frame
takes the nearest low-rate frame) and channel-concatenated with x_t, through the same
noise-augmented conditioning path as super-resolution (CascadeStageModule). Low-rate latents in
training: encode(every `factor`-th video frame) (17 -> 9 frames: 5 -> 3 causal latent frames), or from
cached latents every `factor`-th latent frame.
"""
from __future__ import annotations

import torch

from walt.modules.super_resolution import CascadeStageModule


def nearest_frames(low_frames: int, high_frames: int, device=None) -> torch.Tensor:
    """(high_frames,) index of the low-rate frame each high-rate frame repeats (ends aligned)."""
    if high_frames == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    pos = torch.arange(high_frames, device=device) * (low_frames - 1) / (high_frames - 1)
    return pos.round().long()


class InterpolationModule(CascadeStageModule):
    """Temporal x`lowres.factor` frame interpolation of latent videos (LaVie's second stage)."""

    stage = "interpolation"

    def low_from_video(self, video: torch.Tensor) -> torch.Tensor:
        return video[:, :, :: self.lowres_cfg.factor]

    def low_from_latents(self, x0: torch.Tensor) -> torch.Tensor:
        return x0[:, :, :: self.lowres_cfg.factor]

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        T = self.model_cfg.input_size[0]
        return low[:, :, nearest_frames(low.shape[2], T, low.device)]
