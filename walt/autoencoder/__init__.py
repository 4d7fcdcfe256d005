"""Stage 1: causal 3D CNN video autoencoder (MAGVIT-v2 shape, continuous latents)."""
from walt.autoencoder.config import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    AutoencoderLossConfig,
    AutoencoderOptimConfig,
    DiscriminatorConfig,
    preset,
)
from walt.autoencoder.model import CausalAutoencoder, Decoder, Encoder

__all__ = [
    "AUTOENCODER_PRESETS", "AutoencoderConfig", "AutoencoderLossConfig", "AutoencoderOptimConfig",
    "DiscriminatorConfig", "preset", "CausalAutoencoder", "Encoder", "Decoder",
]
