"""Token and condition embeddings: per-frame patches, learned space + time positions, timesteps, labels."""
from __future__ import annotations

import math
from typing import Optional

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Per-frame p x p patchify + linear projection (a stride-p 2D conv written as a reshape).

    Frames are never merged, so a 1-frame image and a video share the same tokens per frame.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.p = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, T, H/p, W/p, d)
        x = rearrange(x, "b c t (h p1) (w p2) -> b t h w (p1 p2 c)", p1=self.p, p2=self.p)
        return self.proj(x)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """(B, T, h, w, p*p*C) -> (B, C, T, h*p, w*p); inverse of PatchEmbed's reshape."""
    return rearrange(x, "b t h w (p1 p2 c) -> b c t (h p1) (w p2)", p1=patch_size, p2=patch_size, c=channels)


class SpaceTimePosEmbed(nn.Module):
    """Learned absolute position embedding = spatial (h, w) table + temporal (t) table.

    Images use frame 0's temporal entry, so a picture looks like the first frame of a video (the
    causal autoencoder encodes the first frame on its own for the same reason).
    """

    def __init__(self, grid: tuple[int, int, int], hidden_size: int):
        super().__init__()
        T, H, W = grid
        self.spatial = nn.Parameter(torch.zeros(1, 1, H, W, hidden_size))
        self.temporal = nn.Parameter(torch.zeros(1, T, 1, 1, hidden_size))
        nn.init.trunc_normal_(self.spatial, std=0.02)
        nn.init.trunc_normal_(self.temporal, std=0.02)

    def forward(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, H, W, d); is_image: (B,) bool, samples whose frames are independent images."""
        T = x.shape[1]
        temporal = self.temporal[:, :T]  # (1, T, 1, 1, d)
        if is_image is not None:
            temporal = torch.where(is_image.view(-1, 1, 1, 1, 1), self.temporal[:, :1], temporal)
        return x + self.spatial + temporal


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps t (B,) -> (B, dim), cos then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbed(nn.Module):
    """Sinusoidal features -> MLP; the noise level every AdaLN layer is conditioned on."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.dim = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.dim).to(self.mlp[0].weight.dtype))


class LabelEmbed(nn.Module):
    """Class embedding with an extra null class (index num_classes) for classifier-free guidance.

    Label dropout is explicit (`drop`), applied once per training step by the caller, so the two
    forward passes of self-conditioning see the same labels.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.table = nn.Embedding(num_classes + 1, hidden_size)
        nn.init.normal_(self.table.weight, std=0.02)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def drop(self, labels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Replace each label by the null class with probability dropout_prob."""
        if self.dropout_prob <= 0:
            return labels
        u = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(u < self.dropout_prob, torch.full_like(labels, self.null_class), labels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)
