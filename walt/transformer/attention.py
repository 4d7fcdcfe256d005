"""Window self-attention (S, ST, T, full share one code path) and text cross-attention.

Non-overlapping windows are gathered into the batch dimension with one einops reshape, so a
block is a single scaled_dot_product_attention call whatever the window: no loops over windows,
no data-dependent Python control flow (torch.compile traces it without graph breaks).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


def relative_position_index(window: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) index into a ((2t-1)(2h-1)(2w-1)) bias table for the N = t*h*w tokens of a window.

    Token order is (t, h, w) row-major, the order of the window partition below.
    """
    t, h, w = window
    coords = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
    coords = coords.flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N), each axis in [-(s-1), s-1]
    rel_t, rel_h, rel_w = rel[0] + t - 1, rel[1] + h - 1, rel[2] + w - 1
    return (rel_t * (2 * h - 1) + rel_h) * (2 * w - 1) + rel_w


def same_frame_mask(window: tuple[int, int, int], mode: str = "frame") -> torch.Tensor:
    """(N, N) bool: which keys an *image* token may see inside a window.

    "frame": keys of the same frame (a packed image never mixes with its neighbours);
    "identity": only itself (the ST block passes image tokens through unmixed).
    """
    t, h, w = window
    if mode == "identity":
        return torch.eye(t * h * w, dtype=torch.bool)
    frame = torch.arange(t).repeat_interleave(h * w)
    return frame[:, None] == frame[None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping (t, h, w) windows of a (T, H, W) token grid.

    window: the configured window; for 1-frame inputs (images) its t shrinks to 1, so an image
        batch through an ST block attends within each frame's spatial window.
    is_image (forward): (B,) bool marking samples whose frames are independent images; their
        tokens see only their own frame (or only themselves, `image_mask="identity"`) so they are
        unaffected by other frames and by other samples.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: tuple[int, int, int],
        qk_norm: bool = True,
        rel_pos_bias: bool = True,
        image_mask: str = "frame",
    ):
        super().__init__()
        self.num_heads, self.window = num_heads, tuple(window)
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        t, h, w = self.window
        if rel_pos_bias:
            self.rel_bias = nn.Parameter(torch.zeros((2 * t - 1) * (2 * h - 1) * (2 * w - 1), num_heads))
            nn.init.trunc_normal_(self.rel_bias, std=0.02)
            self.register_buffer("rel_index", relative_position_index(self.window), persistent=False)
        else:
            self.rel_bias = None
        self.register_buffer("image_allowed", same_frame_mask(self.window, image_mask), persistent=False)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}"

    def _attn_bias(self, n: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """(1, heads, n, n) relative position bias of the first n tokens of a window."""
        if self.rel_bias is None:
            return None
        bias = self.rel_bias[self.rel_index[:n, :n]]  # (n, n, heads)
        return rearrange(bias, "i j h -> 1 h i j").to(dtype)

    def forward(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, H, W, _ = x.shape
        wt, wh, ww = self.window
        wt = 1 if T == 1 else wt
        if T % wt or H % wh or W % ww:
            raise ValueError(f"window {(wt, wh, ww)} does not tile the token grid {(T, H, W)}")
        n = wt * wh * ww
        # (B, T, H, W, d) -> (B * windows, n, d)
        x = rearrange(x, "b (nt wt) (nh wh) (nw ww) d -> (b nt nh nw) (wt wh ww) d", wt=wt, wh=wh, ww=ww)
        q, k, v = rearrange(self.qkv(x), "n l (three h e) -> three n h l e", three=3, h=self.num_heads)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)

        mask = self._attn_bias(n, q.dtype)
        if is_image is not None and wt > 1:
            # image samples may not look across frames: (B, n, n) -> (B * windows, 1, n, n)
            allowed = self.image_allowed[:n, :n] | ~is_image.view(B, 1, 1)
            allowed = repeat(allowed, "b i j -> (b nwin) 1 i j", nwin=x.shape[0] // B)
            if mask is None:
                mask = allowed
            else:
                mask = mask.masked_fill(~allowed, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = rearrange(out, "n h l e -> n l (h e)")
        out = self.proj(out)
        # (B * windows, n, d) -> (B, T, H, W, d)
        return rearrange(
            out, "(b nt nh nw) (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) d",
            b=B, nt=T // wt, nh=H // wh, nw=W // ww, wt=wt, wh=wh, ww=ww,
        )


class CrossAttention(nn.Module):
    """Queries from the video tokens, keys/values from text token states (B, L, context_dim)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x: (B, T, H, W, d); context: (B, L, context_dim); context_mask: (B, L) bool, True = keep."""
        B, T, H, W, _ = x.shape
        q = rearrange(self.q(x), "b t h w (n e) -> b n (t h w) e", n=self.num_heads)
        k, v = rearrange(self.kv(context), "b l (two n e) -> two b n l e", two=2, n=self.num_heads)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = rearrange(out, "b n (t h w) e -> b t h w (n e)", t=T, h=H, w=W)
        return self.proj(out)
