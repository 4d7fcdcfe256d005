"""StyleGAN-like 3D discriminator: residual downsampling blocks, leaky ReLU, no normalisation.

It judges whole clips (B, C, T, H, W) -> one logit per clip. It need not be causal, and it pools
time only while more than one frame is left, so it also takes images (T = 1). A global average
before the head lets one discriminator see any clip size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from walt.autoencoder.config import DiscriminatorConfig


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Average-pool by 2 in every dimension still larger than 1 (blur + decimate in one)."""
    kernel = tuple(2 if s > 1 else 1 for s in x.shape[2:])
    return F.avg_pool3d(x, kernel, ceil_mode=False)


class DiscBlock(nn.Module):
    """conv3 -> lrelu -> conv3 -> lrelu -> pool, plus a pooled 1x1x1 skip; sum scaled by 1/sqrt(2)
    so activations keep their scale through the stack (as in StyleGAN2's residual D)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = _pool(F.leaky_relu(self.conv2(h), 0.2))
        return (h + _pool(self.skip(x))) / math.sqrt(2.0)


class Discriminator3d(nn.Module):
    """(B, in_channels, T, H, W) -> (B,) logits."""

    def __init__(self, cfg: DiscriminatorConfig, in_channels: int = 3):
        super().__init__()
        chans = [cfg.base_channels] + [cfg.base_channels * m for m in cfg.channel_multipliers]
        self.conv_in = nn.Conv3d(in_channels, chans[0], 3, padding=1)
        self.blocks = nn.Sequential(*[DiscBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Sequential(nn.Linear(chans[-1], chans[-1]), nn.LeakyReLU(0.2), nn.Linear(chans[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.leaky_relu(self.conv_in(x), 0.2))
        h = reduce(h, "b c t h w -> b c", "mean")
        return self.head(h).squeeze(-1)
