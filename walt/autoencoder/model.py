"""MAGVIT-v2-shaped causal 3D CNN encoder/decoder with continuous latents (no quantiser).

Encoder: conv_in -> per level [res blocks, downsample (space x2, time x2 where configured)]
-> middle res blocks -> norm/SiLU -> conv to c (or 2c when variational). The decoder mirrors it
with causal depth-to-space(-time) upsampling. Every layer is causal in time, so the first frame is
encoded alone (images are 1-frame videos) and a 17x128x128 clip maps to 5x16x16xc.
"""
from __future__ import annotations

import torch
from torch import nn

from walt.autoencoder.causal_conv import CausalConv3d, CausalDownsample, CausalUpsample, FrameGroupNorm
from walt.autoencoder.config import AutoencoderConfig


class ResBlock(nn.Module):
    """(GroupNorm, SiLU, causal conv) x 2 plus a 1x1x1 skip when widths differ.

    The second conv starts at zero so each block starts as the identity, which keeps a deep
    stack trainable without normalising the residual sum.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, temporal_padding: str):
        super().__init__()
        self.block = nn.Sequential(
            FrameGroupNorm(groups, in_channels), nn.SiLU(),
            CausalConv3d(in_channels, out_channels, 3, temporal_padding=temporal_padding),
            FrameGroupNorm(groups, out_channels), nn.SiLU(),
            CausalConv3d(out_channels, out_channels, 3, temporal_padding=temporal_padding),
        )
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


def _res_stack(n: int, in_channels: int, out_channels: int, cfg: AutoencoderConfig) -> list[nn.Module]:
    return [ResBlock(in_channels if i == 0 else out_channels, out_channels, cfg.norm_groups, cfg.temporal_padding)
            for i in range(n)]


class Encoder(nn.Module):
    """(B, in_channels, T, H, W) -> (B, c or 2c, 1 + (T-1)/tf, H/sf, W/sf)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        pad, chans = cfg.temporal_padding, cfg.level_channels()
        self.conv_in = CausalConv3d(cfg.in_channels, chans[0], 3, temporal_padding=pad)
        layers: list[nn.Module] = []
        prev = chans[0]
        for i, ch in enumerate(chans):
            layers += _res_stack(cfg.num_res_blocks, prev, ch, cfg)
            prev = ch if cfg.num_res_blocks else prev
            if i < len(chans) - 1:
                layers.append(CausalDownsample(prev, bool(cfg.temporal_downsample[i]), pad))
        layers += _res_stack(cfg.num_res_blocks, prev, chans[-1], cfg)
        prev = chans[-1] if cfg.num_res_blocks else prev
        self.body = nn.Sequential(*layers)
        out = cfg.latent_channels * (2 if cfg.variational else 1)
        self.head = nn.Sequential(FrameGroupNorm(cfg.norm_groups, prev), nn.SiLU(), CausalConv3d(prev, out, 3, temporal_padding=pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.conv_in(x)))


class Decoder(nn.Module):
    """(B, c, t, h, w) -> (B, in_channels, 1 + (t-1)*tf, h*sf, w*sf)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        pad, chans = cfg.temporal_padding, cfg.level_channels()
        self.conv_in = CausalConv3d(cfg.latent_channels, chans[-1], 3, temporal_padding=pad)
        layers: list[nn.Module] = _res_stack(cfg.num_res_blocks, chans[-1], chans[-1], cfg)
        prev = chans[-1]
        for i in reversed(range(len(chans))):
            layers += _res_stack(cfg.num_res_blocks, prev, chans[i], cfg)
            prev = chans[i] if cfg.num_res_blocks else prev
            if i > 0:
                layers.append(CausalUpsample(prev, bool(cfg.temporal_downsample[i - 1]), pad))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(FrameGroupNorm(cfg.norm_groups, prev), nn.SiLU(),
                                  CausalConv3d(prev, cfg.in_channels, 3, temporal_padding=pad))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.conv_in(z)))


class CausalAutoencoder(nn.Module):
    """Encoder + decoder. `encode` is deterministic (the mean when variational)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def check_input(self, x: torch.Tensor) -> None:
        """Clear errors for shapes the causal strides cannot map exactly."""
        if x.ndim != 5:
            raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        if (t - 1) % tf or h % sf or w % sf:
            raise ValueError(f"clip of {t}x{h}x{w} does not fit the autoencoder: frames must be 1 + {tf}k "
                             f"(e.g. {1 + 4 * tf}) and height/width multiples of {sf}")

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent mean and log-variance (None unless variational), each (B, c, t, h, w)."""
        self.check_input(x)
        h = self.encoder(x)
        if not self.cfg.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_moments(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = False):
        """Reconstruction, latent mean and log-variance; samples the posterior when `sample`."""
        mean, logvar = self.encode_moments(x)
        z = mean
        if sample and logvar is not None:
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        return self.decode(z), mean, logvar
