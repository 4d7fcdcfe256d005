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
    pos_embed="sincos", adaln_lora_rank=0, self_cond_prob=0.0, learn_sigma=True, text_attention="plain",
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
    # self-conditioning; with text (cross_attention_dim), PixArt-alpha's cross-attention (keys = text only).
    # Other variants: layout=s_then_t | s_plus_t | split.
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
# Text-to-video cascade (Gupta et al. 2023, Sec. 5). Base: text cross-attention in the S layers
# (keys / values = concat[own window tokens, text states]), caption dropout for CFG, 1 latent frame of frame
# prediction for long videos by autoregressive extension; captions replace class labels (num_classes = 0).
# SR: the low-res latents upsampled 2x in latent space by the model's learned depth-to-space (cond_upsample = 2:
# a linear map to 4c channels, pixel-shuffled per frame), concatenated on channels (cond_channels = the latent
# channels), and their noise-conditioning-augmentation level through AdaLN (noise_cond).
_T2V: dict[str, Any] = dict(text_layers="S", text_dropout_prob=0.1, context_frames=1, context_prob=0.5, num_classes=0)
_SR: dict[str, Any] = dict(noise_cond=True, num_classes=0, cond_upsample=2)
PRESETS.update({
    # T5-XXL token states (4096); 17x128x128 -> 5x16x16 latents (the paper continues at 128x224).
    "walt_l_t2v": dict(PRESETS["walt_l"], cross_attention_dim=4096, **_T2V),
    # 2x: 128x224 -> 256x448 = 5x16x28 -> 5x32x56 latents (the ST window 5x8x8 tiles it); c = 8.
    "walt_l_sr": dict(PRESETS["walt_l"], input_size=(5, 32, 56), cross_attention_dim=4096, cond_channels=8, **_SR),
    # CPU-sized cascade: MiniLM token states (384); the tiny cascade's base is 5x16x16 clips -> 2x2x2 latents.
    "walt_tiny_t2v": dict(PRESETS["walt_tiny"], cross_attention_dim=384, **_T2V),
    "walt_tiny_sr": dict(PRESETS["walt_tiny"], cross_attention_dim=384, cond_channels=8, **_SR),
    # LaVie-style temporal interpolation stage (stage=interpolation), CPU-sized: the low-frame-rate latents repeated
    # to the model's frames and concatenated on channels, noise-augmented (no spatial upsampling: cond_upsample = 1).
    "walt_tiny_interp": dict(PRESETS["walt_tiny"], cross_attention_dim=384, cond_channels=8, noise_cond=True,
                             num_classes=0),
})


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """ModelConfig of a named preset, with field overrides (e.g. adaln_lora_rank=16)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


def build_model(name: str, **overrides: Any) -> WALT:
    return WALT(preset_config(name, **overrides))
