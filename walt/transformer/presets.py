"""Named model presets, one registry: the paper's sizes and tiny CPU configs for tests and demos.

Each preset only lists what differs from ModelConfig's defaults (which are W.A.L.T-L's choices:
p = 1, S window = whole frame, ST window 5x8x8, AdaLN-LoRA r = 2, qk-norm, self-cond p = 0.9).
"""
from __future__ import annotations

from typing import Any

from walt.transformer.backbone import WALT
from walt.transformer.config import ModelConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Gupta et al. 2023, Table 4: 313M with AdaLN-LoRA r=2 (458M with separate AdaLN).
    "walt_l": dict(depth=24, hidden_size=1024, num_heads=16),
    # 460M with r=2.
    "walt_xl": dict(depth=28, hidden_size=1152, num_heads=16),
    # CPU-sized: 64 px x 17 frame clips -> 5x8x8 latents; ST window 5x4x4 keeps 4 windows per clip.
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
