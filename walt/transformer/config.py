"""Typed configuration of the stage-2 transformer and its layout spec.

A *layout* names the kind of every block. Kinds share one window machinery:

    S      spatial window        (1, h, w)   default the whole frame (`s_window: full`)
    ST     spatiotemporal window (t, h, w)   default 5 x 8 x 8 latent (`st_window`, or "full")
    T      temporal only         (t, 1, 1)   default all frames (`t_window`): a token attends over
                                             every frame at its own spatial position (Latte / LaVie)
    full   unrestricted          (T, H, W)   every token attends to every token
    S+T    one block, spatial attention then temporal attention (Latte variant 3, LaVie)
    split  one attention whose heads are split: the first half spatial (S window), the second half
           temporal (T window), fused by the output projection (Latte variant 4)

Windows are given as in the W.A.L.T paper, in *latent* units, and divided by the patch size:
S = 1 x h'/p x w'/p, ST = (1 + t) x h'/p x w'/p, so `patch_size` is the only thing Table 3a changes
(ST 5x8x8 latent -> 5x8x8 / 5x4x4 / 5x2x2 tokens at p = 1 / 2 / 4). The `*_tokens` variants give
a window directly on the token grid instead (mutually exclusive with the latent one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from walt.utils import from_dict

BLOCK_KINDS = ("S", "ST", "T", "full", "S+T", "split")
# The attention sub-layers of each kind, in order; a tuple of primitive kinds is one attention whose
# heads are split evenly between those windows.
ATTENTIONS = {
    "S": (("S",),), "ST": (("ST",),), "T": (("T",),), "full": (("full",),),
    "S+T": (("S",), ("T",)), "split": (("S", "T"),),
}
# Primitive kinds whose windows span frames: images pass them by the image mask (`image_st_mask`).
TEMPORAL_KINDS = ("ST", "T", "full")
# Named layouts: a pattern repeated over the depth ("s_then_t" is special-cased: half S, then half T).
LAYOUTS = {
    "walt": ("S", "ST"),  # W.A.L.T: alternating spatial / spatiotemporal windows
    "spatial": ("S",),  # no temporal mixing at all (an image model applied per frame)
    "full": ("full",),  # full self-attention in every block (W.A.L.T Table 3b "full")
    "s_t": ("S", "T"),  # Latte variant 1: alternating spatial / temporal blocks
    "s_then_t": ("S", "T"),  # Latte variant 2 (late fusion): all spatial blocks, then all temporal blocks
    "s_plus_t": ("S+T",),  # Latte variant 3: spatial then temporal attention inside every block (LaVie's order)
    "split": ("split",),  # Latte variant 4: heads split between spatial and temporal attention
}
IMAGE_ST_MASKS = ("identity", "frame")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
POS_EMBEDS = ("learned", "sincos")
TEMPORAL_POS = ("absolute", "rope")
CONDITIONINGS = ("adaln", "tokens")
TEXT_ATTENTIONS = ("walt", "plain")
# text_layers -> block kinds that get text cross-attention
TEXT_LAYERS = {"S": ("S", "S+T", "split"), "ST": ("ST", "T", "full"), "all": BLOCK_KINDS}

Window = Union[str, Sequence[int]]


@dataclass
class ModelConfig:
    """The W.A.L.T denoiser (see walt.transformer.backbone.WALT); Latte / LaVie are options of it.

    Latent input:
        in_channels: latent channels c of the autoencoder (8 in the paper); also the output channels.
        input_size: latent grid (T, H, W) the model is built for (5 x 16 x 16 for 17 x 128 x 128 videos).
            Position embeddings and windows are sized from it; inputs with T = 1 are images.
        patch_size: per-frame p x p patchify (1, 2 or 4); tokens = T/s * H/p * W/p.
        temporal_patch_size: s, frames merged into one token (Latte's "compression frame" tubelet
            embedding; the output layer upsamples time by s again). 1 = per-frame patches (W.A.L.T,
            Latte's "uniform frame"); images (1-frame inputs) need s = 1.
    Transformer:
        depth, hidden_size, num_heads: blocks, width d, attention heads (L: 24/1024/16, XL: 28/1152/16).
        mlp_ratio: MLP hidden width / d.
        layout: a name in LAYOUTS or an explicit list of kinds from BLOCK_KINDS; a list shorter than
            `depth` is repeated (its length must divide depth). Latte V1-V4 = s_t, s_then_t, s_plus_t,
            split; depth counts every block (a V1 model of depth 12 has 6 S and 6 T blocks).
        st_window: ST window (t, h, w) in latent units (frames, latent pixels) or "full"; divided by
            (temporal_patch_size, patch_size, patch_size) to get tokens. The paper's 5x8x8 is the default.
        st_window_tokens: the ST window on the token grid instead (then st_window must be null).
        s_window: S window (h, w) in latent units, or "full" (the whole frame, the paper's choice).
        s_window_tokens: the S window on the token grid instead (then s_window must be null).
        t_window: T window length in latent frames (divided by temporal_patch_size), or "full".
        A window larger than the grid covers that axis; one that does not tile it is an error.
        qk_norm: LayerNorm on per-head queries and keys (stabilises attention logits).
        rel_pos_bias: learned per-head relative position bias inside each window, indexed by (dt, dy, dx).
        pos_embed: absolute position embedding added to the tokens, spatial (h, w) + temporal (t):
            "learned" tables (W.A.L.T) or fixed "sincos" (Latte, not trained).
        temporal_pos: "absolute" (the temporal term of pos_embed) or "rope": no temporal term; rotary
            embedding of the frame index on queries and keys of every attention that spans frames
            (Latte's RoPE ablation, LaVie's temporal attention). Images use frame 0 either way.
        image_st_mask: how images (1-frame inputs, or samples flagged `is_image`) pass attention that
            spans frames (ST, T, full, the temporal part of S+T / split): "identity" = each token attends
            only to itself (the paper; an image gives the same output alone or in any mixed batch,
            and never mixes across frames); "frame" = tokens attend within their own frame inside the
            window. S attention is ordinary spatial attention for images.
            (Latte / LaVie skip their temporal blocks for image frames altogether; "identity" keeps
            the block's per-token path, proj(v) and the MLP, which is W.A.L.T's choice.)
        zero_init_temporal: zero-initialise the output projection of purely temporal attention (T blocks
            and the T part of S+T), so temporal layers start as the identity (LaVie).
    Conditioning:
        conditioning: "adaln" = modulation of every block from SiLU(c + t) (W.A.L.T's AdaLN-LoRA, or with
            adaln_lora_rank = 0 Latte's S-AdaLN / DiT's adaLN-Zero per block); "tokens" = the timestep
            and class embeddings are extra tokens whose keys / values every attention window also
            reads (Latte's "all tokens" ablation). Our choice: the condition tokens are a fixed
            context (not updated by the blocks), because with windows a token shared by all windows
            would get a different update from each.
        adaln_lora_rank: r of AdaLN-LoRA (shared MLP + per-layer rank-r update); 0 = separate AdaLN
            per block (each block its own Linear(d, 6d)).
        num_classes: class-conditional labels (index num_classes is the null class); 0 = unconditional.
        class_dropout_prob: probability a label is replaced by the null class in training (for CFG).
        self_cond_prob: probability of self-conditioning in training; > 0 adds c input channels that
            carry the stop-grad x0 estimate (zeros otherwise).
        context_frames: latent frames given as clean context for frame prediction; > 0 adds c + 1 input
            channels: concat(mask * clean latents, mask).
        context_prob: probability a training sample is given its context frames (else mask = 0).
        cross_attention_dim: width of the text encoder's token states; enables text cross-attention (keys /
            values = concat[the window's own tokens, text tokens], W.A.L.T) in the blocks `text_layers` picks.
        text_layers: which blocks get it: "S" = blocks with a spatial attention (S, S+T, split; the paper),
            "ST" = blocks whose attention spans frames (ST, T, full; the ablation), "all" = every block.
            The self part of the keys is the block's own first window (one frame for S).
        text_attention: "walt" = keys / values concat[own window tokens, text] (the paper: it worked better
            than text alone); "plain" = text tokens only (Latte's / PixArt-alpha's cross-attention, ~1/2.3 of the
            FLOPs per token: no key / value projection of the video tokens, 120 instead of window + 120 keys).
        text_dropout_prob: probability a training caption is replaced by the null text (for CFG).
        cond_channels: extra input channels concatenated to x_t, the cascade stages' conditioning (the
            upsampled low-resolution latents of super-resolution, the repeated low-frame-rate latents of
            temporal interpolation); 0 = none.
        cond_upsample: depth-to-space factor s of `cond` (W.A.L.T's super-resolution): the model takes cond at
            (T, H/s, W/s), projects every latent pixel linearly to s*s*cond_channels channels and rearranges
            them into an s x s block per pixel (pixel shuffle, per frame) before the concat; the projection
            starts as nearest-neighbour upsampling (each block copies its pixel). 1 = cond given at (T, H, W).
        noise_cond: embed the noise-conditioning-augmentation level t_sr of that input and add it to the
            timestep embedding (so it reaches every AdaLN), as the W.A.L.T / Imagen cascades.
        frequency_embedding_size: sinusoidal timestep features fed to the timestep MLP.
    Output:
        learn_sigma: also predict the per-element variance interpolation (out channels 2c; improved
            DDPM / DiT / Latte), trained by the VLB term in walt.diffusion.diffusion_loss.
    Efficiency (none of them changes the weights or the checkpoint's tensors):
        grad_checkpointing: recompute block activations in backward (saves memory, costs ~1/3 compute).
        compile: torch.compile the backbone's forward in place (nn.Module.compile: the state_dict keys
            stay the same; the online model and its EMA copy). The forward has no graph breaks (a test).
        sdpa_backend: the kernels scaled_dot_product_attention may pick (torch.nn.attention.sdpa_kernel):
            "auto" (torch decides), "flash" (CPU and CUDA), "efficient", "cudnn" (CUDA only) or "math".
            On CPU, auto picks flash (measured: flash and math both take our masks there). CUDA's flash kernel
            takes no attention mask, and every window attention with rel_pos_bias passes one (the bias):
            with rel_pos_bias on a GPU use auto or efficient.
    """

    in_channels: int = 8
    input_size: Tuple[int, int, int] = (5, 16, 16)
    patch_size: int = 1
    temporal_patch_size: int = 1
    depth: int = 24
    hidden_size: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    layout: Union[str, Sequence[str]] = "walt"
    st_window: Optional[Window] = (5, 8, 8)
    st_window_tokens: Optional[Window] = None
    s_window: Optional[Window] = "full"
    s_window_tokens: Optional[Window] = None
    t_window: Union[str, int] = "full"
    qk_norm: bool = True
    rel_pos_bias: bool = True
    pos_embed: str = "learned"
    temporal_pos: str = "absolute"
    image_st_mask: str = "identity"
    zero_init_temporal: bool = False
    conditioning: str = "adaln"
    adaln_lora_rank: int = 2
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    self_cond_prob: float = 0.9
    context_frames: int = 0
    context_prob: float = 1.0
    cross_attention_dim: Optional[int] = None
    text_layers: str = "S"
    text_attention: str = "walt"
    text_dropout_prob: float = 0.1
    cond_channels: int = 0
    cond_upsample: int = 1
    noise_cond: bool = False
    frequency_embedding_size: int = 256
    learn_sigma: bool = False
    grad_checkpointing: bool = False
    compile: bool = False
    sdpa_backend: str = "auto"

    def __post_init__(self):
        self.input_size = tuple(int(s) for s in self.input_size)
        for name in ("st_window", "st_window_tokens", "s_window", "s_window_tokens"):  # None, "full" or ints
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, "full" if _is_full(value) else value if isinstance(value, str) else tuple(int(v) for v in value))
        for latent, tokens, default in (("st_window", "st_window_tokens", "[5, 8, 8]"), ("s_window", "s_window_tokens", "full")):
            if (getattr(self, latent) is None) == (getattr(self, tokens) is None):
                raise ValueError(
                    f"give exactly one of {latent} (latent units, divided by the patch size; paper default "
                    f"{default}) and {tokens} (tokens); they are mutually exclusive: set {latent}: null to use "
                    f"{tokens}, got {latent}={_show(getattr(self, latent))}, {tokens}={_show(getattr(self, tokens))}"
                )
        if not _is_full(self.t_window):
            self.t_window = int(self.t_window)
        if isinstance(self.layout, str):
            if self.layout not in LAYOUTS:
                raise ValueError(f"layout={self.layout!r} is not one of {sorted(LAYOUTS)} (or give a list of {BLOCK_KINDS})")
        else:
            self.layout = tuple(self.layout)
        for name, valid in (("image_st_mask", IMAGE_ST_MASKS), ("pos_embed", POS_EMBEDS),
                            ("temporal_pos", TEMPORAL_POS), ("conditioning", CONDITIONINGS),
                            ("sdpa_backend", SDPA_BACKENDS), ("text_attention", TEXT_ATTENTIONS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {valid}")
        if self.patch_size < 1 or self.temporal_patch_size < 1:
            raise ValueError(f"patch sizes must be >= 1, got patch_size={self.patch_size}, "
                             f"temporal_patch_size={self.temporal_patch_size}")
        T, H, W = self.input_size
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} does not tile the latent frame {H}x{W}; "
                f"valid sizes: {sorted(set(_divisors(H)) & set(_divisors(W)))}"
            )
        if T % self.temporal_patch_size:
            raise ValueError(f"temporal_patch_size={self.temporal_patch_size} does not tile the {T} latent frames; "
                             f"valid sizes: {_divisors(T)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.temporal_pos == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"temporal_pos=rope needs an even head width, got {self.hidden_size // self.num_heads}")
        if "split" in self.blocks and self.num_heads % 2:
            raise ValueError(f"the 'split' kind halves the heads between spatial and temporal attention: "
                             f"num_heads={self.num_heads} must be even")
        if self.adaln_lora_rank < 0:
            raise ValueError("adaln_lora_rank must be >= 0 (0 = separate AdaLN per block)")
        if not 0 <= self.context_frames <= T:
            raise ValueError(f"context_frames={self.context_frames} must lie in [0, {T}] (latent frames)")
        if self.text_layers not in TEXT_LAYERS:
            raise ValueError(f"text_layers={self.text_layers!r} is not one of {tuple(TEXT_LAYERS)}")
        if self.cross_attention_dim and not any(self.text_blocks):
            raise ValueError(f"text_layers={self.text_layers!r} picks no block of layout {self.blocks}: "
                             f"valid choices here: {[k for k, v in TEXT_LAYERS.items() if set(v) & set(self.blocks)]}")
        if self.cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {self.cond_channels}")
        if self.cond_upsample < 1 or (self.cond_upsample > 1 and (H % self.cond_upsample or W % self.cond_upsample
                                                                  or not self.cond_channels)):
            raise ValueError(f"cond_upsample={self.cond_upsample} must be >= 1 and, above 1, divide the latent frame "
                             f"{H}x{W} of a model with cond_channels > 0 (got cond_channels={self.cond_channels})")
        for name in ("class_dropout_prob", "self_cond_prob", "context_prob", "text_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for kind in self.blocks:  # validates layout kinds and every window against the grid
            self.windows(kind)

    # ------------------------------------------------------------------ derived quantities
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a plain / OmegaConf mapping; unknown keys are an error naming the valid ones."""
        return from_dict(cls, values, "model")

    def to_dict(self) -> dict:
        """Primitive types only (lists, not tuples), safe for hparams and weights_only checkpoints.
        cond_upsample only when it is used (> 1), so the stored configs of runs from before it compare equal."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if out["cond_upsample"] == 1:
            del out["cond_upsample"]
        return out

    @property
    def grid(self) -> Tuple[int, int, int]:
        """Token grid (T/s, H/p, W/p)."""
        T, H, W = self.input_size
        return T // self.temporal_patch_size, H // self.patch_size, W // self.patch_size

    @property
    def patch(self) -> Tuple[int, int, int]:
        """Latent extent (s, p, p) of one token."""
        return self.temporal_patch_size, self.patch_size, self.patch_size

    @property
    def model_in_channels(self) -> int:
        """Input channels after the conditioning concats: x_t [+ x0 estimate] [+ masked context + mask] [+ cond]."""
        c = self.in_channels
        return (c + (c if self.self_cond_prob > 0 else 0) + (c + 1 if self.context_frames > 0 else 0)
                + self.cond_channels)

    @property
    def text_blocks(self) -> Tuple[bool, ...]:
        """Per block, whether it has text cross-attention (all False without cross_attention_dim)."""
        kinds = TEXT_LAYERS[self.text_layers]
        return tuple(bool(self.cross_attention_dim) and kind in kinds for kind in self.blocks)

    @property
    def out_channels(self) -> int:
        """c, or 2c with learn_sigma (prediction, then the variance interpolation values)."""
        return self.in_channels * (2 if self.learn_sigma else 1)

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

    def windows(self, kind: str) -> Tuple[Tuple[int, int, int], ...]:
        """Token windows of every attention part of a block kind (S+T and split have two)."""
        if kind not in ATTENTIONS:
            raise ValueError(f"unknown block kind {kind!r}; valid kinds: {BLOCK_KINDS}")
        return tuple(self._window(part) for parts in ATTENTIONS[kind] for part in parts)

    def token_windows(self) -> Dict[str, str]:
        """{block kind: its token window(s)} of the blocks this model has, e.g. {"ST": "5x2x2", "S": "1x2x2"}
        (S+T and split: "1x2x2+5x1x1"): what the model attends over once windows are clamped to the grid, so
        runs whose window settings differ but whose windows do not are seen to train one model."""
        return {kind: "+".join("x".join(map(str, w)) for w in self.windows(kind)) for kind in dict.fromkeys(self.blocks)}

    def window(self, kind: str):
        """The (t, h, w) attention window of a block kind on the token grid (what walt-info shows);
        for S+T and split, one window per part: ((1, h, w), (t, 1, 1)). ValueError if one does not tile."""
        windows = self.windows(kind)
        return windows[0] if len(windows) == 1 else windows

    def _window(self, kind: str) -> Tuple[int, int, int]:
        """Token window of a primitive kind (S, ST, T, full)."""
        grid = self.grid
        T, H, W = grid
        full = {"full": grid, "S": (1, H, W), "ST": grid, "T": (T, 1, 1)}[kind]
        if kind == "full":
            return grid
        if kind == "S":
            latent = self.s_window is not None
            name, given = ("s_window", self.s_window) if latent else ("s_window_tokens", self.s_window_tokens)
            win = None if _is_full(given) else (1, *_as_tuple(given, 2, name, allow_3=True))
            step = (1, self.patch_size, self.patch_size)
        elif kind == "ST":
            latent = self.st_window is not None
            name, given = ("st_window", self.st_window) if latent else ("st_window_tokens", self.st_window_tokens)
            win = None if _is_full(given) else _as_tuple(given, 3, name)
            step = self.patch
        else:
            latent, name, given = True, "t_window", self.t_window
            win = None if _is_full(given) else (int(given), 1, 1)
            step = (self.temporal_patch_size, 1, 1)
        if win is None:
            return full
        step = step if latent else (1, 1, 1)
        tokens = []
        for size, s, extent, axis in zip(win, step, grid, "thw"):
            if size >= extent * s:  # a window larger than the grid covers the whole axis
                tokens.append(extent)
            elif size >= 1 and size % s == 0 and extent % (size // s) == 0:
                tokens.append(size // s)
            else:
                units = "latent units, divided by the patch size" if latent else "tokens"
                raise ValueError(
                    f"{name}={_show(given)} ({units}) does not tile the token grid {T}x{H}x{W} (latent "
                    f"{self.input_size}, patch (t, h, w) = {self.patch}): valid {axis} sizes: "
                    f"{[s * d for d in _divisors(extent)]} (or 'full')"
                )
        return tuple(tokens)


def _divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def _is_full(value) -> bool:
    return isinstance(value, str) and value.lower() == "full"


def _show(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


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
