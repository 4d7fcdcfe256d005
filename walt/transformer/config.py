"""Typed configuration of the stage-2 transformer and its layout spec.

A *layout* names the attention kind of every block. Kinds share one window machinery:

    S     spatial window     (1, h, w)    default h, w = the whole frame (`s_window: full`)
    ST    spatiotemporal     (t, h, w)    default 5 x 8 x 8 (`st_window`, or "full")
    T     temporal only      (t, 1, 1)    default all frames (`t_window`), Latte / LaVie style
    full  unrestricted       (T, H, W)    every token attends to every token

Windows are measured in tokens, i.e. on the patch grid (T, H/p, W/p), and must tile it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from walt.utils import from_dict

BLOCK_KINDS = ("S", "ST", "T", "full")
# Named layouts: a pattern repeated over the depth ("s_then_t" is special-cased: half S, then half T).
LAYOUTS = {
    "walt": ("S", "ST"),  # W.A.L.T: alternating spatial / spatiotemporal windows
    "spatial": ("S",),  # no temporal mixing at all (an image model applied per frame)
    "full": ("full",),  # full self-attention in every block (W.A.L.T Table 3b "full")
    "s_t": ("S", "T"),  # Latte variant 1 / LaVie-style factorised attention
    "s_then_t": ("S", "T"),  # Latte variant 2: all spatial blocks, then all temporal blocks
}
IMAGE_ST_MASKS = ("frame", "identity")

Window = Union[str, Sequence[int]]


@dataclass
class ModelConfig:
    """The W.A.L.T denoiser (see walt.transformer.backbone.WALT).

    Latent input:
        in_channels: latent channels c of the autoencoder (8 in the paper); also the output channels.
        input_size: latent grid (T, H, W) the model is built for (5 x 16 x 16 for 17 x 128 x 128 videos).
            Position embeddings and windows are sized from it; inputs with T = 1 are images.
        patch_size: per-frame p x p patchify (1, 2 or 4); tokens = T * H/p * W/p.
    Transformer:
        depth, hidden_size, num_heads: blocks, width d, attention heads (L: 24/1024/16, XL: 28/1152/16).
        mlp_ratio: MLP hidden width / d.
        layout: a name in LAYOUTS or an explicit list of kinds from BLOCK_KINDS; a list shorter than
            `depth` is repeated (its length must divide depth).
        st_window: ST window (t, h, w) in tokens, or "full" (the whole latent grid).
        s_window: S window (h, w) in tokens, or "full" (the whole frame, the paper's choice).
        t_window: T window length in frames, or "full" (all frames).
        qk_norm: LayerNorm on per-head queries and keys (stabilises attention logits).
        rel_pos_bias: learned per-head relative position bias inside each window, indexed by (dt, dy, dx).
        image_st_mask: how images (1-frame samples in a video batch) pass ST/T/full blocks:
            "frame" = tokens attend only within their own frame; "identity" = each token only to itself.
    Conditioning:
        adaln_lora_rank: r of AdaLN-LoRA (shared MLP + per-layer rank-r update); 0 = separate AdaLN
            per block (each block its own Linear(d, 6d)).
        num_classes: class-conditional labels (index num_classes is the null class); 0 = unconditional.
        class_dropout_prob: probability a label is replaced by the null class in training (for CFG).
        self_cond_prob: probability of self-conditioning in training; > 0 adds c input channels that
            carry the stop-grad x0 estimate (zeros otherwise).
        context_frames: latent frames given as clean context for frame prediction; > 0 adds c + 1 input
            channels: concat(mask * clean latents, mask).
        context_prob: probability a training sample is given its context frames (else mask = 0).
        cross_attention_dim: width of text token states; enables a cross-attention layer in every block.
        frequency_embedding_size: sinusoidal timestep features fed to the timestep MLP.
    Efficiency:
        grad_checkpointing: recompute block activations in backward (saves memory, costs ~1/3 compute).
    """

    in_channels: int = 8
    input_size: Tuple[int, int, int] = (5, 16, 16)
    patch_size: int = 1
    depth: int = 24
    hidden_size: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    layout: Union[str, Sequence[str]] = "walt"
    st_window: Window = (5, 8, 8)
    s_window: Window = "full"
    t_window: Union[str, int] = "full"
    qk_norm: bool = True
    rel_pos_bias: bool = True
    image_st_mask: str = "frame"
    adaln_lora_rank: int = 2
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    self_cond_prob: float = 0.9
    context_frames: int = 0
    context_prob: float = 1.0
    cross_attention_dim: Optional[int] = None
    frequency_embedding_size: int = 256
    grad_checkpointing: bool = False

    def __post_init__(self):
        self.input_size = tuple(int(s) for s in self.input_size)
        for name in ("st_window", "s_window"):  # canonical forms: "full" or a tuple of ints
            value = getattr(self, name)
            setattr(self, name, "full" if _is_full(value) else value if isinstance(value, str) else tuple(int(v) for v in value))
        if not _is_full(self.t_window):
            self.t_window = int(self.t_window)
        if isinstance(self.layout, str):
            if self.layout not in LAYOUTS:
                raise ValueError(f"layout={self.layout!r} is not one of {sorted(LAYOUTS)} (or give a list of {BLOCK_KINDS})")
        else:
            self.layout = tuple(self.layout)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        T, H, W = self.input_size
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} does not tile the latent frame {H}x{W}; "
                f"valid sizes: {sorted(set(_divisors(H)) & set(_divisors(W)))}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.image_st_mask not in IMAGE_ST_MASKS:
            raise ValueError(f"image_st_mask={self.image_st_mask!r} is not one of {IMAGE_ST_MASKS}")
        if self.adaln_lora_rank < 0:
            raise ValueError("adaln_lora_rank must be >= 0 (0 = separate AdaLN per block)")
        if not 0 <= self.context_frames <= T:
            raise ValueError(f"context_frames={self.context_frames} must lie in [0, {T}] (latent frames)")
        for name in ("class_dropout_prob", "self_cond_prob", "context_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for kind in self.blocks:  # validates layout kinds and every window against the grid
            self.window(kind)

    # ------------------------------------------------------------------ derived quantities
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a plain / OmegaConf mapping; unknown keys are an error naming the valid ones."""
        return from_dict(cls, values, "model")

    def to_dict(self) -> dict:
        """Primitive types only (lists, not tuples), safe for hparams and weights_only checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def grid(self) -> Tuple[int, int, int]:
        """Token grid (T, H/p, W/p)."""
        T, H, W = self.input_size
        return T, H // self.patch_size, W // self.patch_size

    @property
    def model_in_channels(self) -> int:
        """Input channels after the conditioning concats: x_t [+ x0 estimate] [+ masked context + mask]."""
        c = self.in_channels
        return c + (c if self.self_cond_prob > 0 else 0) + (c + 1 if self.context_frames > 0 else 0)

    @property
    def blocks(self) -> Tuple[str, ...]:
        """The kind of every block, length `depth`."""
        if isinstance(self.layout, str):
            pattern = LAYOUTS[self.layout]
            if self.layout == "s_then_t":
                half = self.depth // 2
                return ("S",) * half + ("T",) * (self.depth - half)
        else:
            pattern = self.layout
        bad = [k for k in pattern if k not in BLOCK_KINDS]
        if bad:
            raise ValueError(f"unknown block kind(s) {bad} in layout; valid kinds: {BLOCK_KINDS}")
        if not pattern or self.depth % len(pattern):
            raise ValueError(f"layout of length {len(pattern)} does not divide depth={self.depth}")
        return tuple(pattern) * (self.depth // len(pattern))

    def window(self, kind: str) -> Tuple[int, int, int]:
        """The (t, h, w) attention window of a block kind on the token grid; ValueError if it does not tile."""
        T, H, W = self.grid
        if kind == "full":
            return T, H, W
        if kind == "S":
            win = (1, H, W) if _is_full(self.s_window) else (1, *_as_tuple(self.s_window, 2, "s_window", allow_3=True))
            name = "s_window"
        elif kind == "ST":
            win = (T, H, W) if _is_full(self.st_window) else _as_tuple(self.st_window, 3, "st_window")
            name = "st_window"
        elif kind == "T":
            win = (T if _is_full(self.t_window) else int(self.t_window), 1, 1)
            name = "t_window"
        else:
            raise ValueError(f"unknown block kind {kind!r}; valid kinds: {BLOCK_KINDS}")
        # a window larger than the grid covers the whole axis: images (T = 1) and coarser patch
        # sizes (Table 3a: p = 4 gives 4x4 tokens per frame) keep the preset's windows
        win = tuple(min(size, extent) for size, extent in zip(win, (T, H, W)))
        for size, extent, axis in zip(win, (T, H, W), "thw"):
            if size < 1 or extent % size:
                raise ValueError(
                    f"{name}={list(win)} does not tile the token grid {T}x{H}x{W} "
                    f"(latent {self.input_size}, patch_size={self.patch_size}): the {axis} size {size} must "
                    f"divide {extent}; valid {axis} sizes: {_divisors(extent)} (or 'full')"
                )
        return win


def _divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def _is_full(value) -> bool:
    return isinstance(value, str) and value.lower() == "full"


def _as_tuple(value, n: int, name: str, allow_3: bool = False) -> tuple:
    if isinstance(value, str):
        raise ValueError(f"{name}={value!r}: give 'full' or a list of {n} ints")
    value = tuple(int(v) for v in value)
    if allow_3 and len(value) == 3:  # [1, h, w] is accepted for the spatial window
        if value[0] != 1:
            raise ValueError(f"{name}={list(value)}: a spatial window has t = 1")
        value = value[1:]
    if len(value) != n:
        raise ValueError(f"{name}={list(value)}: expected {n} ints or 'full'")
    return value
