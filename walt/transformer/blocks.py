"""Transformer block (window attention + optional text cross-attention + MLP) and the final layer."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from walt.transformer.attention import CrossAttention, WindowAttention
from walt.transformer.conditioning import AdaLNModulation, modulate
from walt.transformer.config import ModelConfig


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block with AdaLN modulation; `kind` (S / ST / T / full) only changes the window.

    x = x + alpha1 * Attn(LN(x) * (1 + gamma1) + beta1)
    x = x + CrossAttn(LN(x), text)                       (when cross_attention_dim is set)
    x = x + alpha2 * MLP(LN(x) * (1 + gamma2) + beta2)
    """

    def __init__(self, kind: str, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.kind = kind
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = WindowAttention(
            d, cfg.num_heads, cfg.window(kind), qk_norm=cfg.qk_norm,
            rel_pos_bias=cfg.rel_pos_bias, image_mask=cfg.image_st_mask,
        )
        if cfg.cross_attention_dim:
            self.norm_cross = nn.LayerNorm(d, eps=1e-6)
            self.cross_attn = CrossAttention(d, cfg.cross_attention_dim, cfg.num_heads, qk_norm=cfg.qk_norm)
        else:
            self.cross_attn = None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.adaln = AdaLNModulation(d, cfg.adaln_lora_rank)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        shared: Optional[torch.Tensor] = None,
        is_image: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x: (B, T, H, W, d); cond: SiLU(c + t) (B, d); shared: A1 (B, 6d) for AdaLN-LoRA."""
        gamma1, gamma2, beta1, beta2, alpha1, alpha2 = self.adaln(cond, shared).unbind(1)
        x = x + alpha1[:, None, None, None] * self.attn(modulate(self.norm1(x), gamma1, beta1), is_image)
        if self.cross_attn is not None and text is not None:
            x = x + self.cross_attn(self.norm_cross(x), text, text_mask)
        x = x + alpha2[:, None, None, None] * self.mlp(modulate(self.norm2(x), gamma2, beta2))
        return x


class FinalLayer(nn.Module):
    """LN with its own AdaLN (scale, shift) and a zero-initialised projection to p*p*C per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Linear(hidden_size, 2 * hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size**2 * out_channels)
        for layer in (self.adaln, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.adaln(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), scale, shift))
