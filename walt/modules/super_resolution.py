"""Cascade stages as LightningModules: latent diffusion conditioned on the previous stage's latents.

SuperResolutionModule (W.A.L.T's 2x stages): the low-resolution latents of the same clip are upsampled
in latent space to the high-resolution latent grid and concatenated with x_t on channels
(model.cond_channels). The default, lowres.upsample=depth_to_space (the paper's "depth-to-space"), lets the
model do it: a learned linear map of every low-res latent pixel to factor^2 * c channels, pixel-shuffled
per frame (walt.transformer.backbone.WALT.upsample_cond, model.cond_upsample = factor), so `cond` stays at
low resolution here; "bilinear" / "nearest" interpolate per frame here instead (model.cond_upsample = 1).
Before upsampling the low-res latents get noise-conditioning augmentation,
x_lr -> alpha(t_sr) x_lr + sigma(t_sr) eps, with t_sr fed to AdaLN beside the timestep
(model.noise_cond), so at sampling the stage tolerates the base model's imperfect latents.
The conditioning path is shared with temporal interpolation (walt.modules.interpolation), which only
changes how low-res latents are made and brought to the high-res grid.

Training low-res latents: from 'video' batches, encode(downsample(video)) with the frozen first stage
(what the base stage generates); from cached 'latents' only, the latents average-pooled by `factor`
(an approximation: no decoder pass); or a batch's own 'low_latents'.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from walt.config.schema import LowResConfig, OptimConfig
from walt.diffusion import DiffusionConfig
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.transformer import ModelConfig
from walt.utils import from_dict, plain


class CascadeStageModule(LatentDiffusionModule):
    """Latent diffusion conditioned on low-res latents: subclasses say how they are made and upsampled."""

    stage = ""  # the RunConfig stage this module trains (walt.config.schema.Stage)

    def __init__(
        self,
        model: Union[ModelConfig, dict],
        diffusion: Union[DiffusionConfig, dict, None] = None,
        optim: Union[OptimConfig, dict, None] = None,
        lowres: Union[LowResConfig, dict, None] = None,
        first_stage: Optional[nn.Module] = None,
        text_encoder: Optional[nn.Module] = None,
    ):
        lowres_cfg = from_dict(LowResConfig, lowres or {}, "lowres")
        values = model.to_dict() if isinstance(model, ModelConfig) else dict(plain(model))
        want = lowres_cfg.cond_upsample(self.stage)
        if values.get("cond_upsample") is None:  # derived from lowres (as walt.config.run.complete_model does)
            values["cond_upsample"] = want
        if values["cond_upsample"] != want:
            raise ValueError(f"{type(self).__name__} with lowres.upsample={lowres_cfg.upsample}, factor={lowres_cfg.factor} "
                             f"needs model.cond_upsample={want}, got {values['cond_upsample']}")
        super().__init__(values, diffusion, optim, first_stage=first_stage, text_encoder=text_encoder)
        self.lowres_cfg = lowres_cfg
        self.hparams["lowres"] = plain(self.lowres_cfg)
        mc = self.model_cfg
        if mc.cond_channels != mc.in_channels or not mc.noise_cond:
            raise ValueError(f"{type(self).__name__} needs model.cond_channels = in_channels = {mc.in_channels} and "
                             f"model.noise_cond = true (got {mc.cond_channels}, {mc.noise_cond})")

    # ----------------------------------------------------------------- what subclasses define
    def low_from_video(self, video: torch.Tensor) -> torch.Tensor:
        """The previous stage's pixels of a clip (B, C, T, H, W) -> (B, C, T', H', W')."""
        raise NotImplementedError

    def low_from_latents(self, x0: torch.Tensor) -> torch.Tensor:
        """Approximate low-res latents from the high-res latents alone (latent-cache training)."""
        raise NotImplementedError

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        """Low-res latents (B, c, t, h, w) -> the model's `cond` input: the latent grid (B, c, T, H, W), or
        (B, c, T, H/s, W/s) for a model that upsamples it itself (model.cond_upsample = s)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- shared conditioning path
    @torch.no_grad()
    def batch_low_latents(self, batch: dict, x0: torch.Tensor) -> torch.Tensor:
        if "low_latents" in batch:
            return batch["low_latents"].float()
        if "video" in batch and self.first_stage is not None:
            return self.batch_latents({"video": self.low_from_video(batch["video"])})
        return self.low_from_latents(x0)

    def augment(self, low: torch.Tensor, aug_t: torch.Tensor, generator=None) -> torch.Tensor:
        """Noise-conditioning augmentation: low-res latents diffused to level aug_t (B,)."""
        alpha, sigma = self.schedule.alpha_sigma(aug_t, low.ndim, low.dtype)
        return alpha * low + sigma * torch.randn(low.shape, device=low.device, dtype=low.dtype, generator=generator)

    def lowres_condition(self, low: torch.Tensor, train: bool = False, aug_level: Optional[float] = None,
                         generator=None) -> dict:
        """{'cond', 'aug_t'} model keywords of low-res latents: augmented, then upsampled to the model grid.

        train: t_sr ~ U[0, aug_max N); else the fixed level aug_level (default lowres.aug_sample) * N."""
        n, lr, B = self.diffusion_cfg.num_timesteps, self.lowres_cfg, low.shape[0]
        if train:
            high = max(1, int(lr.aug_max * n))
            aug_t = torch.randint(0, high, (B,), device=low.device, generator=generator)
        else:
            level = lr.aug_sample if aug_level is None else aug_level
            aug_t = torch.full((B,), min(n - 1, int(round(level * n))), device=low.device, dtype=torch.long)
        return {"cond": self.upsample(self.augment(low.float(), aug_t, generator)), "aug_t": aug_t}

    def extra_conditions(self, batch: dict, x0: torch.Tensor, train: bool, generator=None) -> dict:
        return self.lowres_condition(self.batch_low_latents(batch, x0), train=train, generator=generator)

    @torch.no_grad()
    def sample(self, low_latents: torch.Tensor, num_steps: Optional[int] = None,
               guidance_scale: Optional[float] = None, *, text: Optional[Sequence[str]] = None,
               aug_level: Optional[float] = None, generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
        """High-res (or high frame rate) normalised latents (B, c, T, H, W) from the previous stage's
        low_latents (B, c, t, h, w); text / guidance / noise / context as LatentDiffusionModule.sample.
        The augmentation noise comes from `generator` too, so a seeded generator makes it deterministic."""
        low = low_latents.to(self.device)
        extra = self.lowres_condition(low, train=False, aug_level=aug_level, generator=generator)
        kwargs.setdefault("num_samples", low.shape[0])
        return super().sample(None, num_steps, guidance_scale, text=text, extra=extra, generator=generator, **kwargs)


class SuperResolutionModule(CascadeStageModule):
    """Spatial x`lowres.factor` super-resolution of latent videos (W.A.L.T's cascade stages)."""

    stage = "super_resolution"

    def low_from_video(self, video: torch.Tensor) -> torch.Tensor:
        f = self.lowres_cfg.factor
        B, C, T, H, W = video.shape
        frames = video.transpose(1, 2).flatten(0, 1)  # (B T, C, H, W)
        low = F.interpolate(frames.float(), size=(H // f, W // f), mode="area")
        return low.unflatten(0, (B, T)).transpose(1, 2).to(video.dtype)

    def low_from_latents(self, x0: torch.Tensor) -> torch.Tensor:
        f = self.lowres_cfg.factor
        return F.avg_pool3d(x0, (1, f, f))

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        T, H, W = low.shape[2], *self.model_cfg.input_size[1:]
        if self.lowres_cfg.upsample == "depth_to_space":  # the model's learned depth-to-space does it
            s = self.model_cfg.cond_upsample
            if tuple(low.shape[3:]) != (H // s, W // s):
                raise ValueError(f"low-res latents of {tuple(low.shape[3:])} do not upsample {s}x (depth-to-space) to the "
                                 f"model's {H}x{W} latent grid")
            return low
        mode = "nearest" if self.lowres_cfg.upsample == "nearest" else "trilinear"  # trilinear with T kept = bilinear
        return F.interpolate(low, size=(T, H, W), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
