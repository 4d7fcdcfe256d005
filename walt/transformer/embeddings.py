"""Token and condition embeddings: patches, space + time positions (learned or sin-cos), timesteps, labels."""
from __future__ import annotations

import math
from typing import Optional

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """s x p x p patchify + linear projection (a stride-(s, p, p) 3D conv written as a reshape).

    s = 1 (default): per-frame patches, frames are never merged, so a 1-frame image and a video share
    the same tokens per frame. s > 1: Latte's compression-frame (tubelet) embedding.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, temporal_patch_size: int = 1):
        super().__init__()
        self.p, self.s = patch_size, temporal_patch_size
        self.proj = nn.Linear(in_channels * temporal_patch_size * patch_size**2, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, T/s, H/p, W/p, d)
        x = rearrange(x, "b c (t s) (h p1) (w p2) -> b t h w (s p1 p2 c)", s=self.s, p1=self.p, p2=self.p)
        return self.proj(x)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int, temporal_patch_size: int = 1) -> torch.Tensor:
    """(B, T, h, w, s*p*p*C) -> (B, C, T*s, h*p, w*p); inverse of PatchEmbed's reshape (with s > 1 the
    output layer's s values per token are the temporal upsampling of a tubelet embedding)."""
    return rearrange(x, "b t h w (s p1 p2 c) -> b c (t s) (h p1) (w p2)",
                     s=temporal_patch_size, p1=patch_size, p2=patch_size, c=channels)


def sincos_1d(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Fixed sin-cos features (N,) -> (N, dim), sin then cos (the MAE / DiT / Latte convention)."""
    half = dim // 2
    omega = 1.0 / max_period ** (torch.arange(half, dtype=torch.float64) / half)
    args = positions.double()[:, None] * omega[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return torch.cat([emb, emb.new_zeros(len(positions), dim - 2 * half)], dim=-1).float()


class SpaceTimePosEmbed(nn.Module):
    """Absolute position embedding = spatial (h, w) table + temporal (t) table.

    kind "learned": trained tables (W.A.L.T); "sincos": fixed 2D sin-cos for space (half the
    channels for h, half for w) and 1D sin-cos for time, buffers, not trained (Latte / DiT).
    temporal=False leaves out the temporal term (RoPE carries the frame index instead).
    Images use frame 0's temporal entry, so a picture looks like the first frame of a video (the
    causal autoencoder encodes the first frame on its own for the same reason).
    """

    def __init__(self, grid: tuple[int, int, int], hidden_size: int, kind: str = "learned", temporal: bool = True):
        super().__init__()
        T, H, W = grid
        if kind == "learned":
            self.spatial = nn.Parameter(torch.zeros(1, 1, H, W, hidden_size))
            nn.init.trunc_normal_(self.spatial, std=0.02)
            if temporal:
                self.temporal = nn.Parameter(torch.zeros(1, T, 1, 1, hidden_size))
                nn.init.trunc_normal_(self.temporal, std=0.02)
        else:
            half = hidden_size // 2
            emb_h = sincos_1d(torch.arange(H), half)[:, None].expand(H, W, half)
            emb_w = sincos_1d(torch.arange(W), hidden_size - half)[None].expand(H, W, hidden_size - half)
            self.register_buffer("spatial", torch.cat([emb_h, emb_w], dim=-1)[None, None], persistent=False)
            if temporal:
                table = sincos_1d(torch.arange(T), hidden_size).view(1, T, 1, 1, hidden_size)
                self.register_buffer("temporal", table, persistent=False)
        if not temporal:
            self.temporal = None

    def forward(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None,
                frame_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, H, W, d); is_image: (B,) bool, samples whose frames are independent images;
        frame_image: (B, T) bool, image frames (appended to a clip: T may exceed the table); video
        frames take the entry of their index among the video frames, image frames frame 0's."""
        x = x + self.spatial
        if self.temporal is None:
            return x
        if frame_image is not None:
            flags = frame_image if is_image is None else frame_image | is_image[:, None]
            index = video_frame_index(flags).clamp_max(self.temporal.shape[1] - 1)  # (B, T)
            return x + self.temporal[0, :, 0, 0][index][:, :, None, None]
        temporal = self.temporal[:, : x.shape[1]]  # (1, T, 1, 1, d)
        if is_image is not None:
            temporal = torch.where(is_image.view(-1, 1, 1, 1, 1), self.temporal[:, :1], temporal)
        return x + temporal


def video_frame_index(frame_image: torch.Tensor) -> torch.Tensor:
    """(B, T) bool image-frame flags -> (B, T) long: each video frame's index among the sample's video
    frames, 0 for image frames (they sit at frame 0, like images alone). Tensor ops only."""
    video = (~frame_image).long()
    return ((video.cumsum(1) - 1).clamp_min(0) * video)


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
