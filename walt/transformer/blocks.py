"""Transformer block (window attention(s) + optional text cross-attention + MLP) and the final layer."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from walt.transformer.attention import CrossAttention, WindowAttention
from walt.transformer.conditioning import AdaLNModulation, modulate, modulation_count
from walt.transformer.config import ATTENTIONS, TEMPORAL_KINDS, ModelConfig


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _attention(parts: tuple, cfg: ModelConfig) -> WindowAttention:
    """One attention sub-layer: a head group per primitive kind in `parts`."""
    temporal = [p in TEMPORAL_KINDS for p in parts]
    windows = [cfg.windows(p)[0] for p in parts]
    return WindowAttention(
        cfg.hidden_size, cfg.num_heads, windows, temporal, qk_norm=cfg.qk_norm,
        rel_pos_bias=cfg.rel_pos_bias, image_mask=cfg.image_st_mask, rope=cfg.temporal_pos == "rope" and any(temporal),
        spans_clip=[w[0] == cfg.grid[0] for w in windows],
    )


class Block(nn.Module):
    """Pre-norm block with AdaLN modulation; `kind` only changes the attention windows.

    x = x + alpha1 * Attn(LN(x) * (1 + gamma1) + beta1)
    x = x + alpha3 * TemporalAttn(LN(x) * (1 + gamma3) + beta3)   (kind S+T only: Latte V3 / LaVie)
    x = x + CrossAttn(LN(x), [x, text])                            (text blocks: cfg.text_blocks)
    x = x + alpha2 * MLP(LN(x) * (1 + gamma2) + beta2)
    With conditioning="tokens" there is no modulation (LayerNorms with affine, gates 1) and every
    attention also reads the condition tokens' keys / values.
    """

    def __init__(self, kind: str, cfg: ModelConfig, text: bool = False):
        super().__init__()
        d = cfg.hidden_size
        self.kind = kind
        affine = cfg.conditioning == "tokens"
        attentions = ATTENTIONS[kind]
        self.norm1 = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
        self.attn = _attention(attentions[0], cfg)
        if len(attentions) > 1:  # S+T: the temporal attention of the same block
            self.norm_t = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
            self.attn_t = _attention(attentions[1], cfg)
        else:
            self.attn_t = None
        if text:  # keys / values = concat[the block's own (first) window, text tokens] (or text only)
            self.norm_cross = nn.LayerNorm(d, eps=1e-6)
            window = cfg.windows(kind)[0]
            self.cross_attn = CrossAttention(d, cfg.cross_attention_dim, cfg.num_heads, window,
                                             qk_norm=cfg.qk_norm, spans_clip=window[0] == cfg.grid[0],
                                             self_keys=cfg.text_attention == "walt")
        else:
            self.cross_attn = None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.adaln = None if affine else AdaLNModulation(d, cfg.adaln_lora_rank, modulation_count(len(attentions)))

    @property
    def attentions(self) -> list[WindowAttention]:
        return [self.attn] + ([self.attn_t] if self.attn_t is not None else [])

    def forward(
        self,
        x: torch.Tensor,
        cond: Optional[torch.Tensor],
        shared: Optional[torch.Tensor] = None,
        is_image: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        tokens: Optional[torch.Tensor] = None,
        frame_image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x: (B, T, H, W, d); cond: SiLU(c + t) (B, d); shared: A1 (B, n d) for AdaLN-LoRA;
        tokens: (B, L, d) condition tokens (conditioning="tokens"); frame_image: (B, T) image frames."""
        if self.adaln is not None:
            mod = self.adaln(cond, shared).unbind(1)  # (B, d) each, MODULATION (+ EXTRA_MODULATION) order
            attn_mod = [(mod[0], mod[2], mod[4])] + ([(mod[6], mod[7], mod[8])] if self.attn_t is not None else [])
        for i, (norm, attn) in enumerate(zip((self.norm1, getattr(self, "norm_t", None)), self.attentions)):
            ctx = None if tokens is None else norm(tokens)
            if self.adaln is None:
                x = x + attn(norm(x), is_image, ctx, frame_image=frame_image)
            else:
                gamma, beta, alpha = attn_mod[i]
                x = x + gate(alpha, attn(modulate(norm(x), gamma, beta), is_image, ctx, frame_image=frame_image))
        if self.cross_attn is not None:  # text None = the null text (the window's own keys only)
            x = x + self.cross_attn(self.norm_cross(x), text, text_mask, is_image, frame_image)
        if self.adaln is None:
            return x + self.mlp(self.norm2(x))
        return x + gate(mod[5], self.mlp(modulate(self.norm2(x), mod[1], mod[3])))


def gate(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """alpha (B, d) * x (B, T, H, W, d): the zero-initialised residual gate."""
    return alpha[:, None, None, None] * x


class FinalLayer(nn.Module):
    """LN (with its own AdaLN scale / shift, or affine for token conditioning) and a zero-initialised
    projection to the s*p*p*C values of each token (C = out channels)."""

    def __init__(self, hidden_size: int, values_per_token: int, adaln: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=not adaln, eps=1e-6)
        self.adaln = nn.Linear(hidden_size, 2 * hidden_size) if adaln else None
        self.linear = nn.Linear(hidden_size, values_per_token)
        for layer in (self.adaln, self.linear):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        if self.adaln is None:
            return self.linear(self.norm(x))
        scale, shift = self.adaln(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), scale, shift))
