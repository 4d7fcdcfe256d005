"""Stage 2: the W.A.L.T window-attention latent transformer (one backbone, many layouts)."""
from walt.transformer.attention import CrossAttention, RotaryFrames, WindowAttention, WindowGroup, relative_position_index
from walt.transformer.backbone import WALT, count_params, tokens_per_sample, train_flops_per_sample
from walt.transformer.blocks import Block, FinalLayer
from walt.transformer.conditioning import MODULATION, AdaLNModulation, SharedAdaLN
from walt.transformer.config import ATTENTIONS, BLOCK_KINDS, LAYOUTS, ModelConfig
from walt.transformer.presets import PRESETS, build_model, preset_config

__all__ = [
    "WALT", "ModelConfig", "PRESETS", "LAYOUTS", "BLOCK_KINDS", "MODULATION", "build_model", "preset_config",
    "count_params", "tokens_per_sample", "train_flops_per_sample", "WindowAttention", "CrossAttention",
    "relative_position_index", "Block", "FinalLayer", "AdaLNModulation", "SharedAdaLN", "ATTENTIONS",
    "RotaryFrames", "WindowGroup",
]
