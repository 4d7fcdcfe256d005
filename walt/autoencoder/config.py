"""Typed configuration of the stage-1 autoencoder and its named presets.

`AutoencoderConfig` is the Hydra config group `autoencoder` (experiments/autoencoder/*.yaml hold
its fields), so `walt-train autoencoder=tiny autoencoder.latent_channels=16` works. The nested
`loss`, `discriminator` and `optim` blocks keep everything stage 1 trains with in one group.

Defaults follow MAGVIT-v2 as far as the papers and public configs state them (base 128 channels,
multipliers (1, 2, 2, 4), 4 residual blocks, time downsampled in the last two of the three
downsampling steps, GroupNorm with 32 groups); W.A.L.T sets c = 8 latent channels. Loss weights
and optimiser values are the usual MAGVIT-style ones (perceptual 0.1, GAN 0.1, LeCam 0.001,
Adam beta1 = 0, beta2 = 0.99) and are ours to tune, not paper-verified numbers.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from walt.utils import check_keys, plain

RECON_LOSSES = ("l1", "l2")
GAN_LOSSES = ("hinge", "non_saturating")
TEMPORAL_PADDINGS = ("replicate", "zeros")


@dataclass
class AutoencoderLossConfig:
    """Weights of the MAGVIT-v2 loss recipe; a weight of 0 turns its term off.

    recon_loss: "l1" or "l2" pixel reconstruction; recon_weight its weight.
    perceptual_weight: VGG16 feature distance (LPIPS-like, unlearned layer weights).
    perceptual_weights: path to torchvision's vgg16-397923af.pth; None falls back to
        $WALT_VGG16_WEIGHTS, and without either the perceptual term is off (logged at start).
    perceptual_max_frames: frames per clip fed to VGG (random subset); 0 = all frames.
    adversarial_weight: generator GAN weight; 0 builds no discriminator at all.
    gan_loss: "hinge" or "non_saturating".
    disc_start: global step (= batch) from which discriminator and GAN term are active.
    lecam_weight, lecam_decay: LeCam regulariser on the discriminator and the decay of the EMA of
        its real/fake logits.
    kl_weight: KL to N(0, 1); needs AutoencoderConfig.variational.
    latent_l2_weight: mean squared latent, a lighter way to keep latents bounded.
    """

    recon_loss: str = "l1"
    recon_weight: float = 1.0
    perceptual_weight: float = 0.1
    perceptual_weights: Optional[str] = None
    perceptual_max_frames: int = 0
    adversarial_weight: float = 0.1
    gan_loss: str = "hinge"
    disc_start: int = 20000
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999
    kl_weight: float = 0.0
    latent_l2_weight: float = 0.0


@dataclass
class DiscriminatorConfig:
    """StyleGAN-like 3D discriminator.

    base_channels: width of the first conv. channel_multipliers: one residual downsampling block
    per entry (space /2 each; time /2 while more than one frame is left).
    """

    base_channels: int = 64
    channel_multipliers: Tuple[int, ...] = (2, 4, 4, 4, 4)


@dataclass
class AutoencoderOptimConfig:
    """AdamW for generator and discriminator, linear warm-up, manual clipping, generator EMA.

    lr, disc_lr: learning rates. betas, weight_decay: AdamW settings shared by both.
    warmup_steps: linear warm-up of both learning rates. grad_clip: max grad norm per optimiser
    (0 = off). ema_decay: EMA of the generator used for validation and encoding (0 = no EMA).
    ema_warmup: ramp the decay as (1 + n) / (10 + n) so early EMA weights are not stuck at init.
    """

    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: Tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 1e-4
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True


@dataclass
class AutoencoderConfig:
    """Causal 3D CNN autoencoder (continuous latents, no quantiser).

    in_channels: video channels. base_channels: width of the first level.
    channel_multipliers: per-level width = base_channels * multiplier; every level but the last
        ends in a x2 spatial downsampling (so 4 levels give /8).
    num_res_blocks: residual blocks per level (and in the middle of encoder and decoder).
    temporal_downsample: per downsampling step (len(channel_multipliers) - 1 entries), whether it
        also halves time; (False, True, True) gives /4, so T = 1 + 4k frames -> 1 + k latent frames.
    latent_channels: c, channels of the latent (W.A.L.T default 8; Table 3f sweeps 4..32).
    norm_groups: GroupNorm groups (must divide every level's width).
    temporal_padding: "replicate" or "zeros" left padding of time in causal convs.
    variational: encoder predicts mean and log-variance (for loss.kl_weight); encode() returns the mean.
    latent_stats_batches: train batches encoded to estimate the per-channel latent mean/std at the end
        of fit (stored in the checkpoint; stage 2 decides whether to use them: diffusion.normalize_latents).
    log_videos: validation clips logged side by side with their reconstruction (0 = none).
    """

    in_channels: int = 3
    base_channels: int = 128
    channel_multipliers: Tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 4
    temporal_downsample: Tuple[bool, ...] = (False, True, True)
    latent_channels: int = 8
    norm_groups: int = 32
    temporal_padding: str = "replicate"
    variational: bool = False
    latent_stats_batches: int = 32
    log_videos: int = 4
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: AutoencoderOptimConfig = field(default_factory=AutoencoderOptimConfig)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    def level_channels(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_multipliers]

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(c, t, h, w) of the latent of a (frames, height, width) clip."""
        return (self.latent_channels, 1 + (frames - 1) // self.temporal_factor,
                height // self.spatial_factor, width // self.spatial_factor)

    def validate(self) -> "AutoencoderConfig":
        """Raise ValueError naming the valid values; returns self for chaining."""
        def choice(name, value, valid):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not one of {valid}")

        choice("autoencoder.temporal_padding", self.temporal_padding, TEMPORAL_PADDINGS)
        choice("autoencoder.loss.recon_loss", self.loss.recon_loss, RECON_LOSSES)
        choice("autoencoder.loss.gan_loss", self.loss.gan_loss, GAN_LOSSES)
        if not self.channel_multipliers or min(self.channel_multipliers) < 1:
            raise ValueError(f"autoencoder.channel_multipliers must be positive ints, got {self.channel_multipliers}")
        if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
            raise ValueError(
                f"autoencoder.temporal_downsample needs {len(self.channel_multipliers) - 1} entries (one per "
                f"downsampling step of channel_multipliers={tuple(self.channel_multipliers)}), got {tuple(self.temporal_downsample)}"
            )
        bad = [c for c in self.level_channels() if c % self.norm_groups]
        if bad:
            raise ValueError(f"autoencoder.norm_groups={self.norm_groups} must divide every level width {self.level_channels()}")
        for name in ("base_channels", "latent_channels", "in_channels", "norm_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"autoencoder.{name} must be >= 1")
        if self.num_res_blocks < 0 or self.latent_stats_batches < 1 or self.log_videos < 0:
            raise ValueError("autoencoder.num_res_blocks/log_videos must be >= 0 and latent_stats_batches >= 1")
        if self.loss.kl_weight > 0 and not self.variational:
            raise ValueError("autoencoder.loss.kl_weight > 0 needs autoencoder.variational=true")
        if not 0 <= self.optim.ema_decay < 1 or not 0 <= self.loss.lecam_decay < 1:
            raise ValueError("autoencoder.optim.ema_decay and autoencoder.loss.lecam_decay must be in [0, 1)")
        weights = [getattr(self.loss, f.name) for f in dataclasses.fields(self.loss) if f.name.endswith("_weight")]
        if any(w < 0 or not math.isfinite(w) for w in weights):
            raise ValueError(f"autoencoder.loss weights must be finite and >= 0, got {self.loss}")
        return self

    def to_dict(self) -> dict:
        """Plain nested dict (lists, not tuples) fit for save_hyperparameters and weights_only loads."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any = None) -> "AutoencoderConfig":
        """Build and validate from a (possibly partial, nested) dict, DictConfig or AutoencoderConfig."""
        if isinstance(data, AutoencoderConfig):
            return copy.deepcopy(data).validate()
        if data is not None and not isinstance(data, dict):
            from omegaconf import OmegaConf

            data = OmegaConf.to_container(data, resolve=True, enum_to_str=True)
        return _build(cls, dict(data or {}), "autoencoder").validate()


def _build(cls, data: dict, where: str):
    """Dataclass from a dict, recursing into nested dataclass fields; unknown keys are errors."""
    check_keys(cls, data, where)
    kwargs = {}
    nested = {"loss": AutoencoderLossConfig, "discriminator": DiscriminatorConfig, "optim": AutoencoderOptimConfig}
    for name, value in data.items():
        if name in nested and cls is AutoencoderConfig and isinstance(value, dict):
            value = _build(nested[name], value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# CPU-sized: trains on small synthetic clips in seconds per hundred steps; no VGG, GAN starts late.
TINY = AutoencoderConfig(
    base_channels=16,
    channel_multipliers=(1, 2, 2, 2),
    num_res_blocks=1,
    latent_channels=8,
    norm_groups=8,
    latent_stats_batches=4,
    log_videos=2,
    loss=AutoencoderLossConfig(recon_loss="l2", perceptual_weight=0.0, adversarial_weight=0.1, disc_start=1000),
    discriminator=DiscriminatorConfig(base_channels=8, channel_multipliers=(2, 4)),
    optim=AutoencoderOptimConfig(lr=1e-3, disc_lr=1e-3, betas=(0.9, 0.99), warmup_steps=20, ema_decay=0.99),
)

# The demo's: TINY at half the width, ~3.5x faster per training step on a 2-core CPU (0.63 s vs 2.25 s at
# batch 16 of 17x32x32 clips, 2 threads; benchmarks/bench_autoencoder.py).
MICRO = dataclasses.replace(TINY, base_channels=8, norm_groups=4)

AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    "magvit2": AutoencoderConfig(),
    "tiny": TINY,
    "micro": MICRO,
}


def preset(name: str) -> AutoencoderConfig:
    """A fresh AutoencoderConfig of a named preset."""
    if name not in AUTOENCODER_PRESETS:
        raise ValueError(f"unknown autoencoder preset {name!r}; choose one of {sorted(AUTOENCODER_PRESETS)}")
    return copy.deepcopy(AUTOENCODER_PRESETS[name]).validate()
