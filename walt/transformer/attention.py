"""Window self-attention (S, ST, T, full and split heads share one code path) and text cross-attention.

Non-overlapping windows are gathered into the batch dimension with one einops reshape, so each
head group is a single scaled_dot_product_attention call whatever the window: no loops over
windows or frames, no data-dependent Python control flow (torch.compile traces it without graph
breaks).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from walt.transformer.embeddings import video_frame_index


def relative_position_index(window: tuple[int, int, int], table_t: Optional[int] = None) -> torch.Tensor:
    """(N, N) index into a ((2t-1)(2h-1)(2w-1)) bias table for the N = t*h*w tokens of a window.

    Token order is (t, h, w) row-major, the order of the window partition below. table_t: the t of
    the bias table when the window spans more frames than the table (appended image frames: time
    offsets are clamped to the table; only video-video pairs, within the table, are ever unmasked).
    """
    t, h, w = window
    tt = t if table_t is None else table_t
    coords = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
    coords = coords.flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N), each axis in [-(s-1), s-1]
    rel_t, rel_h, rel_w = rel[0].clamp(-(tt - 1), tt - 1) + tt - 1, rel[1] + h - 1, rel[2] + w - 1
    return (rel_t * (2 * h - 1) + rel_h) * (2 * w - 1) + rel_w


def window_frame_flags(frame_image: torch.Tensor, window: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Per-frame flags (B, T) -> per-token flags of every window (B * windows, n), in the window
    partition's order ((b nt nh nw), tokens (wt wh ww)); tensor ops only."""
    B = frame_image.shape[0]
    wt, wh, ww = window
    T, H, W = grid
    f = frame_image.view(B, T // wt, 1, wt).expand(B, T // wt, (H // wh) * (W // ww), wt)
    return f.reshape(-1, wt).repeat_interleave(wh * ww, dim=1)


def same_frame_mask(window: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) bool: keys of the same frame as the query inside a window (the "frame" image mask)."""
    t, h, w = window
    frame = torch.arange(t).repeat_interleave(h * w)
    return frame[:, None] == frame[None, :]


class RotaryFrames(nn.Module):
    """Rotary position embedding (Su et al.) of the frame index on per-head queries / keys.

    q_t . k_s then depends on t - s only, so attention is invariant to a shift of all frame
    indices (LaVie's temporal attention, Latte's RoPE ablation). Rotates the whole head width,
    channel pairs (i, i + e/2), frequencies theta^(-2i/e).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", theta ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H, W, heads, e) rotated by the angle of each token's frame index, frames: (B or 1, T)."""
        angles = (frames.float()[..., None] * self.inv_freq)[:, :, None, None, None]  # (B, T, 1, 1, 1, e/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().chunk(2, dim=-1)  # each pair (x1_i, x2_i) rotates by its frame's angle
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)  # 2-3x faster than rotate-half


class WindowGroup(nn.Module):
    """One head group's attention inside non-overlapping (t, h, w) windows of the token grid.

    window: the token window; for 1-frame inputs (images) its t shrinks to 1.
    temporal: the kind spans frames (ST, T, full): images pass it by `image_mask` ("identity":
        each image token attends only to itself, i.e. its output is its value; "frame": within its
        own frame inside the window). Applied per sample, so an image gives the same output alone
        and inside any mixed image / video batch; and per frame (`frame_image`): image frames of a
        video sample (Latte / LaVie appended images) pass the same way, and video frames never read them.
    spans_clip: the window spans all frames of the model's clip (T, full, ST with t = the clip):
        it then spans all frames of a longer input too (a clip plus appended image frames).
    """

    def __init__(self, heads: int, window: tuple[int, int, int], temporal: bool, rel_pos_bias: bool, image_mask: str,
                 spans_clip: bool = False):
        super().__init__()
        self.heads, self.window, self.temporal, self.image_mask = heads, tuple(window), temporal, image_mask
        self.spans_clip = spans_clip and temporal
        self._index_cache: dict[int, torch.Tensor] = {}
        t, h, w = self.window
        if rel_pos_bias:
            self.rel_bias = nn.Parameter(torch.zeros((2 * t - 1) * (2 * h - 1) * (2 * w - 1), heads))
            nn.init.trunc_normal_(self.rel_bias, std=0.02)
            self.register_buffer("rel_index", relative_position_index(self.window), persistent=False)
        else:
            self.rel_bias = None
        if temporal and image_mask == "frame":
            self.register_buffer("image_allowed", same_frame_mask(self.window), persistent=False)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, window={self.window}, temporal={self.temporal}"

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        is_image: Optional[torch.Tensor] = None,
        extra_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        frame_image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """q, k, v: (B, T, H, W, heads, e); extra_kv: keys / values (B, heads, L, e) every window also reads;
        frame_image: (B, T) bool, frames that are independent images (None: no such frame; the caller
        skips it for batches without image frames, so they take the plain path).

        Returns (B, T, H, W, heads, e).
        """
        B, T, H, W = q.shape[:4]
        identity = self.temporal and self.image_mask == "identity"
        if identity and T == 1:  # an image batch: every token attends only to itself
            return v
        wt, wh, ww = self.window
        wt = 1 if T == 1 else wt
        frames = frame_image is not None and self.temporal and T > 1
        if frames and self.spans_clip and T > wt:  # a clip plus appended image frames: one window in time
            wt = T
        if T % wt or H % wh or W % ww:
            raise ValueError(f"window {(wt, wh, ww)} does not tile the token grid {(T, H, W)}")
        n = wt * wh * ww
        # (B, T, H, W, heads, e) -> (B * windows, heads, n, e)
        part = "b (nt wt) (nh wh) (nw ww) g e -> (b nt nh nw) g (wt wh ww) e"
        qw, kw, vw = (rearrange(z, part, wt=wt, wh=wh, ww=ww) for z in (q, k, v))
        nwin = qw.shape[0] // B

        mask = None
        if self.rel_bias is not None:
            if wt > self.window[0]:  # the window grew past the bias table (appended image frames)
                index = self._index_cache.get(wt)
                if index is None:
                    index = relative_position_index((wt, wh, ww), self.window[0]).to(self.rel_index.device)
                    self._index_cache[wt] = index
            else:
                index = self.rel_index[:n, :n]  # relative offsets of the window's first n tokens
            mask = rearrange(self.rel_bias[index], "i j g -> 1 g i j").to(q.dtype)
        token_image = None
        if frames:  # per-frame flags, or'ed with the per-sample ones: (B * windows, n) per token
            flags = frame_image if is_image is None else frame_image | is_image[:, None]
            token_image = window_frame_flags(flags.to(q.device), (wt, wh, ww), (T, H, W))
            video = ~token_image
            if self.image_mask == "frame":  # images: keys of their own frame; video frames: video keys only
                own = same_frame_mask((wt, wh, ww)).to(q.device)
            else:  # identity (images' outputs are set to their values below): a row that is never empty
                own = torch.eye(n, dtype=torch.bool, device=q.device)
            allowed = ((video[:, :, None] & video[:, None, :]) | own)[:, None]  # (B * windows, 1, n, n)
            mask = allowed if mask is None else mask.masked_fill(~allowed, float("-inf"))
            is_image = None  # folded into the per-frame flags
        elif is_image is not None and self.temporal and self.image_mask == "frame" and wt > 1:
            # image samples may not look across frames: (B, n, n) -> (B * windows, 1, n, n)
            allowed = self.image_allowed[:n, :n] | ~is_image.view(B, 1, 1)
            allowed = repeat(allowed, "b i j -> (b nwin) 1 i j", nwin=nwin)
            mask = allowed if mask is None else mask.masked_fill(~allowed, float("-inf"))
        if extra_kv is not None:  # condition tokens: appended to every window's keys / values
            ek, ev = (repeat(z.to(v.dtype), "b g l e -> (b nwin) g l e", nwin=nwin) for z in extra_kv)
            kw, vw = torch.cat([kw, ek], dim=2), torch.cat([vw, ev], dim=2)
            if mask is not None:  # extra keys: no bias, always allowed
                mask = F.pad(mask, (0, ek.shape[2]), value=True if mask.dtype == torch.bool else 0.0)
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask)
        out = rearrange(
            out, "(b nt nh nw) g (wt wh ww) e -> b (nt wt) (nh wh) (nw ww) g e",
            b=B, nt=T // wt, nh=H // wh, nw=W // ww, wt=wt, wh=wh, ww=ww,
        )
        if identity and is_image is not None:
            out = torch.where(is_image.view(B, 1, 1, 1, 1, 1), v, out)
        if identity and token_image is not None:
            out = torch.where(flags.view(B, T, 1, 1, 1, 1), v, out)
        return out


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of a (T, H, W) token grid.

    windows: one (t, h, w) window per head group, the heads split evenly between them (one group
        for S / ST / T / full, two for Latte's split-heads kind: spatial and temporal heads fused
        by the output projection). temporal: per group, whether the kind spans frames (default all).
    rope: rotary frame embedding on q, k of the head groups that span frames (images use frame 0;
        condition tokens are not rotated, so with conditioning="tokens" their logits depend on the
        absolute frame).
    is_image (forward): (B,) bool marking samples whose frames are independent images.
    frame_image (forward): (B, T) bool marking single frames that are independent images (appended
        to a clip; None when there is none): they attend as images, video frames never read them, and
        RoPE gives video frames their index among video frames, image frames 0.
    spans_clip: per group, whether its window spans the model's whole clip (then also a longer input).
    cond (forward): (B, L, d) condition tokens whose keys / values every window also reads.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        windows: Sequence[tuple[int, int, int]],
        temporal: Optional[Sequence[bool]] = None,
        qk_norm: bool = True,
        rel_pos_bias: bool = True,
        image_mask: str = "identity",
        rope: bool = False,
        spans_clip: Optional[Sequence[bool]] = None,
    ):
        super().__init__()
        windows = [tuple(windows)] if isinstance(windows[0], int) else [tuple(w) for w in windows]
        temporal = [True] * len(windows) if temporal is None else list(temporal)
        if num_heads % len(windows) or len(temporal) != len(windows):
            raise ValueError(f"{num_heads} heads cannot be split evenly between {len(windows)} windows "
                             f"(with one temporal flag each, got {temporal})")
        self.num_heads, self.window = num_heads, windows[0] if len(windows) == 1 else tuple(windows)
        head_dim, group_heads = dim // num_heads, num_heads // len(windows)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.rope = RotaryFrames(head_dim) if rope else None
        spans_clip = [False] * len(windows) if spans_clip is None else list(spans_clip)
        self.groups = nn.ModuleList(
            WindowGroup(group_heads, w, tm, rel_pos_bias, image_mask, sc) for w, tm, sc in zip(windows, temporal, spans_clip)
        )

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}"

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., d) -> normalised q, k and v, each (..., heads, e)."""
        q, k, v = rearrange(self.qkv(x), "... (three g e) -> three ... g e", three=3, g=self.num_heads)
        return self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype), v

    def forward(
        self,
        x: torch.Tensor,
        is_image: Optional[torch.Tensor] = None,
        cond: Optional[torch.Tensor] = None,
        frame_offset: int = 0,
        frame_image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x: (B, T, H, W, d) -> (B, T, H, W, d); frame_offset shifts the RoPE frame indices."""
        T = x.shape[1]
        q, k, v = self._qkv(x)  # (B, T, H, W, heads, e)
        frames = None
        if self.rope is not None:  # (B or 1, T) frame indices; images sit at frame 0 like their position embedding
            frames = torch.arange(T, device=x.device)[None] + frame_offset
            if frame_image is not None:
                flags = frame_image if is_image is None else frame_image | is_image[:, None]
                frames = video_frame_index(flags.to(x.device)) + frame_offset
            elif is_image is not None:
                frames = torch.where(is_image[:, None], torch.full_like(frames, frame_offset), frames)
        extra = None
        if cond is not None:
            _, ck, cv = self._qkv(cond)  # (B, L, heads, e)
            extra = rearrange(ck, "b l g e -> b g l e"), rearrange(cv, "b l g e -> b g l e")
        step = self.num_heads // len(self.groups)
        outs = []
        for i, group in enumerate(self.groups):  # one or two head groups, never a loop over windows
            heads = slice(i * step, (i + 1) * step)
            qg, kg = q[..., heads, :], k[..., heads, :]
            if frames is not None and group.temporal:
                qg, kg = self.rope(qg, frames), self.rope(kg, frames)
            extra_g = None if extra is None else (extra[0][:, heads], extra[1][:, heads])
            outs.append(group(qg, kg, v[..., heads, :], is_image, extra_g, frame_image))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)
        return self.proj(rearrange(out, "b t h w g e -> b t h w (g e)"))


class CrossAttention(nn.Module):
    """W.A.L.T's text cross-attention: queries from the video tokens of a window, keys / values =
    concat[the window's own tokens, the text tokens].

    Keeping the queries' own tokens among the keys means a sample whose text is empty (the null
    text of classifier-free guidance: mask all False) still attends somewhere (no all-masked row),
    and "no text" is exactly that null text. window: the (t, h, w) token window of the self part
    (the block's own window: S = one frame); for 1-frame inputs its t shrinks to 1, and image
    samples of a mixed batch (is_image) only see keys of their own frame.

    self_keys=False is Latte's / PixArt-alpha's plain cross-attention instead: keys / values = the text
    tokens only (no window); a sample without text tokens (null text, all masked) gets zero from it.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, window: tuple[int, int, int],
                 qk_norm: bool = True, spans_clip: bool = False, self_keys: bool = True):
        super().__init__()
        self.num_heads, self.window, self.spans_clip = num_heads, tuple(window), spans_clip and window[0] > 1
        self.self_keys = self_keys
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, (3 if self_keys else 1) * dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.register_buffer("same_frame", same_frame_mask(self.window), persistent=False)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}"

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None, is_image: Optional[torch.Tensor] = None,
                frame_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, H, W, d); context: (B, L, context_dim) or None (= the null text);
        context_mask: (B, L) bool, True = keep (default all kept); frame_image: (B, T) bool image
        frames (own frame's keys only; video frames do not read them). Returns (B, T, H, W, d)."""
        if not self.self_keys:
            return self._plain(x, context, context_mask)
        B, T, H, W, _ = x.shape
        wt, wh, ww = self.window
        wt = 1 if T == 1 else wt
        if frame_image is not None and self.spans_clip and T > wt:  # a clip plus appended image frames
            wt = T
        q, k, v = rearrange(self.qkv(x), "b t h w (three g e) -> three b t h w g e", three=3, g=self.num_heads)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        part = "b (nt wt) (nh wh) (nw ww) g e -> (b nt nh nw) g (wt wh ww) e"
        qw, kw, vw = (rearrange(z, part, wt=wt, wh=wh, ww=ww) for z in (q, k, v))  # (B * windows, g, n, e)
        nwin, n = qw.shape[0] // B, qw.shape[2]
        frames = frame_image is not None and wt > 1
        needs_mask = context is not None or (is_image is not None and wt > 1) or frames
        keep = torch.ones(B, n, n, dtype=torch.bool, device=x.device)  # (B, queries, self keys)
        if frames:  # per window: (B * windows, n, n); image frames see their own frame, video frames video keys
            flags = frame_image if is_image is None else frame_image | is_image[:, None]
            video = ~window_frame_flags(flags.to(x.device), (wt, wh, ww), (T, H, W))
            own = same_frame_mask((wt, wh, ww)).to(x.device)
            keep = (video[:, :, None] & video[:, None, :]) | own
            keep = rearrange(keep, "(b nwin) i j -> b nwin i j", b=B)
        elif is_image is not None and wt > 1:  # images of a video batch: keys of their own frame only
            keep = self.same_frame[:n, :n] | ~is_image.view(B, 1, 1)
        if context is not None:
            ck, cv = rearrange(self.kv(context.to(x.dtype)), "b l (two g e) -> two b g l e", two=2, g=self.num_heads)
            ck = self.k_norm(ck).to(v.dtype)
            kw = torch.cat([kw, repeat(ck, "b g l e -> (b nwin) g l e", nwin=nwin)], dim=2)
            vw = torch.cat([vw, repeat(cv.to(v.dtype), "b g l e -> (b nwin) g l e", nwin=nwin)], dim=2)
            text_keep = (torch.ones(context.shape[:2], dtype=torch.bool, device=x.device) if context_mask is None
                         else context_mask.to(x.device, torch.bool))
            if frames:
                keep = torch.cat([keep, text_keep[:, None, None, :].expand(B, nwin, n, -1)], dim=3)
            else:
                keep = torch.cat([keep.expand(B, n, n), text_keep[:, None, :].expand(B, n, -1)], dim=2)
        if not needs_mask:
            mask = None
        elif frames:
            mask = rearrange(keep, "b nwin i j -> (b nwin) 1 i j")
        else:
            mask = repeat(keep.expand(B, n, -1), "b i j -> (b nwin) 1 i j", nwin=nwin)
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask)
        out = rearrange(out, "(b nt nh nw) g (wt wh ww) e -> b (nt wt) (nh wh) (nw ww) (g e)",
                        b=B, nt=T // wt, nh=H // wh, nw=W // ww, wt=wt, wh=wh, ww=ww)
        return self.proj(out)

    def _plain(self, x: torch.Tensor, context: Optional[torch.Tensor], context_mask: Optional[torch.Tensor]):
        """Keys / values = text tokens only: every video token reads the whole caption (B, T, H, W, d)."""
        if context is None:  # the null text adds nothing
            return torch.zeros_like(x)
        B, T, H, W, _ = x.shape
        q = rearrange(self.qkv(x), "b t h w (g e) -> b g (t h w) e", g=self.num_heads)
        ck, cv = rearrange(self.kv(context.to(x.dtype)), "b l (two g e) -> two b g l e", two=2, g=self.num_heads)
        q, ck = self.q_norm(q).to(cv.dtype), self.k_norm(ck).to(cv.dtype)
        mask = has_text = None
        if context_mask is not None:
            keep = context_mask.to(x.device, torch.bool)  # (B, L)
            has_text = keep.any(dim=1)  # a sample with every token masked reads nothing (its rows would be NaN)
            mask = (keep | ~has_text[:, None])[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask)  # (B, g, N, e)
        out = self.proj(rearrange(out, "b g (t h w) e -> b t h w (g e)", t=T, h=H, w=W))
        return out if has_text is None else out * has_text.view(B, 1, 1, 1, 1).to(out.dtype)
