"""Causal 3D convolution and the causal resampling layers built on it.

Time is padded on the left only, so output frame t sees input frames <= t. With the default
"replicate" padding the frames before the clip look like the first frame held still: an image
(a 1-frame video) is encoded as the start of a static video, and the first latent frame has the
same statistics as later ones instead of absorbing an artificial black-frame edge. "zeros" is the
other option (it marks the start explicitly); both keep the first frame alone.

Normalisation is per frame (GroupNorm over channels and space only): statistics over time would
leak future frames into past ones and break causality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class CausalConv3d(nn.Conv3d):
    """Conv3d with left-only time padding (kt - 1 frames) and symmetric zero padding in space.

    With time stride s and kernel kt = s + 1, T = 1 + s*m frames give 1 + m outputs and output 0
    sees frame 0 alone (plus padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, temporal_padding: str = "replicate"):
        kt, kh, kw = _triple(kernel_size)
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=_triple(stride), padding=(0, kh // 2, kw // 2))
        if temporal_padding not in ("replicate", "zeros"):
            raise ValueError(f"temporal_padding must be 'replicate' or 'zeros', got {temporal_padding!r}")
        self.time_pad, self.temporal_padding = kt - 1, temporal_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        if self.time_pad:
            if self.temporal_padding == "replicate":
                x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
            else:
                x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        return super().forward(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to every frame on its own, so it cannot mix time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = super().forward(x)
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class CausalDownsample(nn.Module):
    """Strided causal conv: space /2, time /2 when `temporal`, first frame kept alone."""

    def __init__(self, channels: int, temporal: bool, temporal_padding: str = "replicate"):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2), temporal_padding=temporal_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CausalUpsample(nn.Module):
    """Depth-to-space(-time): a causal conv makes s_t*2*2 sub-pixels per position, which are
    rearranged into time and space. Time upsampling drops the s_t - 1 frames produced ahead of
    the first one, so T latent frames give s_t*(T - 1) + 1 frames (5 -> 9 -> 17, 1 -> 1).

    The conv is initialised so that all sub-pixels of a position start equal (ICNR), which avoids
    checkerboard artefacts early in training.
    """

    def __init__(self, channels: int, temporal: bool, temporal_padding: str = "replicate"):
        super().__init__()
        self.st = 2 if temporal else 1
        self.factor = self.st * 4
        self.conv = CausalConv3d(channels, channels * self.factor, 3, temporal_padding=temporal_padding)
        with torch.no_grad():
            if self.conv.weight.device.type != "meta":
                w = self.conv.weight[: channels].clone()
                self.conv.weight.copy_(repeat(w, "c i kt kh kw -> (c f) i kt kh kw", f=self.factor))
                self.conv.bias.copy_(repeat(self.conv.bias[:channels].clone(), "c -> (c f)", f=self.factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, C, st*T - st + 1, 2H, 2W)
        x = self.conv(x)
        x = rearrange(x, "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)", st=self.st, sh=2, sw=2)
        return x[:, :, self.st - 1:]
