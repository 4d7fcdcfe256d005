"""Stage-1 losses (MAGVIT-v2 recipe): reconstruction, VGG perceptual, GAN with LeCam, latent terms.

The perceptual network is a user-supplied file (torchvision's vgg16-397923af.pth) found through
walt.weights; it is never part of the autoencoder's checkpoint.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from walt.autoencoder.config import AutoencoderLossConfig
from walt.weights import WeightsError, WeightsSpec, file_checksum, resolve_weights

log = logging.getLogger(__name__)

# torchvision names hub files <arch>-<first 8 hex of sha256>.pth; the full digest is not pinned here.
VGG16_WEIGHTS = WeightsSpec(
    name="VGG16 ImageNet features (torchvision vgg16-397923af.pth)",
    env_var="WALT_VGG16_WEIGHTS",
    checksum=None,
    source="https://download.pytorch.org/models/vgg16-397923af.pth (torchvision VGG16_Weights.IMAGENET1K_V1)",
)
VGG16_SHA256_PREFIX = "397923af"
VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16().features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def perceptual_weights_path(cfg: AutoencoderLossConfig) -> str | None:
    """The configured VGG16 file, else $WALT_VGG16_WEIGHTS, else None (perceptual term off)."""
    return cfg.perceptual_weights or os.environ.get(VGG16_WEIGHTS.env_var) or None


def load_vgg16_features(path: str | os.PathLike, verify_prefix: bool = True) -> nn.Sequential:
    """torchvision's VGG16 `features[:30]` with weights from a state-dict file, frozen and in eval mode.

    Built on the meta device and filled with `assign=True`, so the 100M-parameter classifier is
    never allocated. `verify_prefix` checks the sha256 prefix torchvision puts in the file name.
    """
    from torchvision.models import vgg16

    resolved = resolve_weights(VGG16_WEIGHTS, path)
    if verify_prefix:
        digest = file_checksum(resolved, "sha256")
        if not digest.startswith(VGG16_SHA256_PREFIX):
            raise WeightsError(f"weights file {resolved} has sha256 {digest}, which does not start with "
                               f"{VGG16_SHA256_PREFIX} ({VGG16_WEIGHTS.name}; it usually comes from {VGG16_WEIGHTS.source})")
    state = torch.load(resolved, map_location="cpu", weights_only=True)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    with torch.device("meta"):
        net = vgg16(weights=None).features[: VGG_TAPS[-1] + 1]
    expected = set(net.state_dict())
    if not expected <= set(features):
        raise WeightsError(f"{resolved} is not a VGG16 state dict: missing {sorted(expected - set(features))[:4]}... "
                           f"({VGG16_WEIGHTS.name}; it usually comes from {VGG16_WEIGHTS.source})")
    net.load_state_dict({k: features[k] for k in expected}, assign=True)
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on VGG16 features with unit channel weights: per layer, unit-normalise
    features over channels, squared difference summed over channels and averaged over space."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike, verify_prefix: bool = True) -> "PerceptualLoss":
        return cls(load_vgg16_features(path, verify_prefix))

    def train(self, mode: bool = True):  # the feature net stays in eval mode
        return super().train(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x + 1) / 2, []
        h = (h - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG_TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean distance between image batches (N, 3, H, W) in [-1, 1]."""
        total = x.new_zeros(())
        for fx, fy in zip(self.taps(x), self.taps(y)):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (fx - fy).pow(2).sum(dim=1).mean()
        return total


class LeCam(nn.Module):
    """LeCam regulariser (Tseng et al. 2021): keeps D's logits near the EMA of the other side's,
    which bounds D on small data. Buffers are persistent so a resumed run keeps its EMA."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_ema", torch.zeros(()))
        self.register_buffer("fake_ema", torch.zeros(()))

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.real_ema.lerp_(logits_real.detach().float().mean(), 1 - self.decay)
            self.fake_ema.lerp_(logits_fake.detach().float().mean(), 1 - self.decay)
        return (F.relu(logits_real - self.fake_ema).pow(2).mean()
                + F.relu(self.real_ema - logits_fake).pow(2).mean())


def gan_generator_loss(kind: str, logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean() if kind == "hinge" else F.softplus(-logits_fake).mean()


def gan_discriminator_loss(kind: str, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


class AutoencoderLoss(nn.Module):
    """All weighted terms; returns (total, {name: detached value}) for logging.

    The perceptual network is attached with `set_perceptual` and kept outside the module tree
    (no checkpoint entry, no state-dict key), so checkpoints stay small and loading one for
    encoding never needs the VGG file.
    """

    def __init__(self, cfg: AutoencoderLossConfig):
        super().__init__()
        self.cfg = cfg
        self.lecam = LeCam(cfg.lecam_decay)
        object.__setattr__(self, "perceptual", None)

    def set_perceptual(self, net: PerceptualLoss | None) -> None:
        object.__setattr__(self, "perceptual", net)

    def reconstruction(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(recon, x) if self.cfg.recon_loss == "l1" else F.mse_loss(recon, x)

    def perceptual_term(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        net = self.perceptual.to(x.device)
        t, k = x.shape[2], self.cfg.perceptual_max_frames
        if k and k < t:
            idx = torch.randperm(t, device=x.device)[:k]
            x, recon = x[:, :, idx], recon[:, :, idx]
        # frames folded into the batch: (B, C, T, H, W) -> (B*T, C, H, W)
        fold = lambda v: rearrange(v, "b c t h w -> (b t) c h w").float()  # VGG weights stay fp32
        return net(fold(x), fold(recon))

    def generator(self, x, recon, mean, logvar, logits_fake=None) -> tuple[torch.Tensor, dict]:
        cfg, logs = self.cfg, {}
        rec = self.reconstruction(x, recon)
        total = cfg.recon_weight * rec
        logs["recon"] = rec
        if self.perceptual is not None and cfg.perceptual_weight > 0:
            p = self.perceptual_term(x, recon)
            total = total + cfg.perceptual_weight * p
            logs["perceptual"] = p
        if logits_fake is not None and cfg.adversarial_weight > 0:
            g = gan_generator_loss(cfg.gan_loss, logits_fake)
            total = total + cfg.adversarial_weight * g
            logs["gan_g"] = g
        if cfg.kl_weight > 0 and logvar is not None:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
            total = total + cfg.kl_weight * kl
            logs["kl"] = kl
        if cfg.latent_l2_weight > 0:
            l2 = mean.pow(2).mean()
            total = total + cfg.latent_l2_weight * l2
            logs["latent_l2"] = l2
        return total, {k: v.detach() for k, v in logs.items()}

    def discriminator(self, logits_real, logits_fake) -> tuple[torch.Tensor, dict]:
        d = gan_discriminator_loss(self.cfg.gan_loss, logits_real, logits_fake)
        total, logs = d, {"gan_d": d, "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}
        if self.cfg.lecam_weight > 0:
            reg = self.lecam(logits_real, logits_fake)
            total = total + self.cfg.lecam_weight * reg
            logs["lecam"] = reg
        return total, {k: v.detach() for k, v in logs.items()}
