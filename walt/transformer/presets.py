"""Named model presets, one registry: the paper's sizes and tiny CPU configs for tests and demos.

Each preset only lists what differs from ModelConfig's defaults (which are W.A.L.T-L's choices:
p = 1, S window = whole frame, ST window 5x8x8 latent, AdaLN-LoRA r = 2, qk-norm, self-cond p = 0.9).
"""
from __future__ import annotations

from typing import Any

from walt.transformer.backbone import WALT
from walt.transformer.config import ModelConfig

_LATTE: dict[str, Any] = dict(
    in_channels=4, input_size=(16, 32, 32), patch_size=2, layout="s_t", qk_norm=False, rel_pos_bias=False,
    pos_embed="sincos", adaln_lora_rank=0, self_cond_prob=0.0, learn_sigma=True,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Gupta et al. 2023, Table 4: 313M with AdaLN-LoRA r=2 (458M with separate AdaLN).
    "walt_l": dict(depth=24, hidden_size=1024, num_heads=16),
    # 460M with r=2.
    "walt_xl": dict(depth=28, hidden_size=1152, num_heads=16),
    # CPU-sized: 64 px x 17 frame clips -> 5x8x8 latents; ST window 5x4x4 keeps 4 windows per clip.
    # Ma et al. 2024 (Latte), Table / latte_sizes.csv: X/2 models, depth counting spatial + temporal
    # blocks, built for 16 x 32 x 32 x 4 latents (256 px, SD-VAE /8), patch 2, learned sigma:
    # 32.48M / 129.55M / 456.82M / 673.68M. Variant 1 (alternating S / T blocks); S-AdaLN = a separate
    # adaLN-Zero per block; fixed sin-cos positions (the temporal term is added with the spatial one at
    # the input, Latte adds it before its first temporal block); no qk-norm, no relative bias, no
    # self-conditioning. Other variants: layout=s_then_t | s_plus_t | split.
    "latte_s": dict(_LATTE, depth=12, hidden_size=384, num_heads=6),
    "latte_b": dict(_LATTE, depth=12, hidden_size=768, num_heads=12),
    "latte_l": dict(_LATTE, depth=24, hidden_size=1024, num_heads=16),
    "latte_xl": dict(_LATTE, depth=28, hidden_size=1152, num_heads=16),
    # LaVie-style (Wang et al. 2023) transformer: every block spatial attention then temporal attention
    # with RoPE on q, k and a zero-initialised temporal output projection; images skip temporal mixing
    # (identity mask). Latte-B width; 9 blocks of 25 d^2 each ~ Latte-B's 12 blocks of 18 d^2 (~134M).
    "lavie": dict(_LATTE, depth=9, hidden_size=768, num_heads=12, layout="s_plus_t", temporal_pos="rope",
                  zero_init_temporal=True, learn_sigma=False),
    "walt_tiny": dict(depth=4, hidden_size=64, num_heads=4, input_size=(5, 8, 8), st_window=(5, 4, 4)),
    "walt_tiny_video": dict(depth=6, hidden_size=128, num_heads=4, input_size=(5, 8, 8), st_window=(5, 4, 4)),
}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """ModelConfig of a named preset, with field overrides (e.g. adaln_lora_rank=16)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


def build_model(name: str, **overrides: Any) -> WALT:
    return WALT(preset_config(name, **overrides))
