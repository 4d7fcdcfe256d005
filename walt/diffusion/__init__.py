"""Stage-2 diffusion process: schedules, prediction targets and losses, samplers."""
from walt.diffusion.config import GUIDANCE_SCHEDULES, SAMPLERS, SPACINGS, DiffusionConfig
from walt.diffusion.objectives import PREDICTIONS, convert, diffusion_loss, target, to_v, to_x0_eps
from walt.diffusion.samplers import (
    ClassifierFreeGuidance, ddim_sample, ddpm_sample, guidance_weight, sample, sampling_timesteps,
)
from walt.diffusion.schedules import SCHEDULES, NoiseSchedule, cosine_betas, linear_betas, rescale_zero_terminal_snr

__all__ = [
    "DiffusionConfig", "NoiseSchedule", "ClassifierFreeGuidance", "diffusion_loss", "sample", "ddim_sample",
    "ddpm_sample", "sampling_timesteps", "guidance_weight", "target", "to_v", "to_x0_eps", "convert",
    "linear_betas", "cosine_betas", "rescale_zero_terminal_snr", "PREDICTIONS", "SCHEDULES", "SAMPLERS",
    "SPACINGS", "GUIDANCE_SCHEDULES",
]
