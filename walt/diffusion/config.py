"""Typed configuration of the diffusion process and its sampler (Hydra group `diffusion`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from walt.diffusion.objectives import PREDICTIONS
from walt.diffusion.schedules import SCHEDULES, NoiseSchedule
from walt.utils import from_dict

SAMPLERS = ("ddim", "ddpm")
SPACINGS = ("trailing", "leading", "linspace")
GUIDANCE_SCHEDULES = ("constant", "power_cosine")


@dataclass
class DiffusionConfig:
    """Noise schedule, training target and sampling defaults (W.A.L.T's choices as defaults).

    schedule: beta schedule, "linear" (beta_start..beta_end) or "cosine".
    num_timesteps: discrete training timesteps N.
    beta_start, beta_end: endpoints of the linear betas (DDPM's 1e-4 and 0.02).
    zero_terminal_snr: rescale so alpha_bar at t = N-1 is exactly 0 (Lin et al. 2023).
    prediction: network target, "v" (paper), "eps" or "x0".
    sampler: "ddim" (deterministic at eta = 0) or "ddpm" (ancestral, posterior variance).
    sampling_steps: number of denoising steps (50 in the paper).
    eta: DDIM stochasticity; 0 = deterministic, 1 = DDPM-like variance.
    timestep_spacing: how sampling steps pick timesteps; "trailing" starts at t = N-1, the step a
        zero-terminal-SNR model must start from.
    guidance_scale: classifier-free guidance weight w; 1 = no guidance (one forward per step).
    guidance_schedule: "constant" or "power_cosine": w(t) = 1 + (w-1) (1 - cos(pi (1 - t/N)^power)) / 2,
        which ramps guidance up from 1 at pure noise to w at the end.
    guidance_power: exponent of the power-cosine schedule.
    clip_x0: clamp predicted x0 to [-clip_x0, clip_x0] while sampling; None = off (latents are unbounded).
    normalize_latents: diffuse the first stage's latents scaled to zero mean and unit std per channel
        (statistics from its training set, stored in its checkpoint); false = raw latents (Table 3e).
    """

    schedule: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_terminal_snr: bool = True
    prediction: str = "v"
    sampler: str = "ddim"
    sampling_steps: int = 50
    eta: float = 0.0
    timestep_spacing: str = "trailing"
    guidance_scale: float = 1.0
    guidance_schedule: str = "constant"
    guidance_power: float = 4.0
    clip_x0: Optional[float] = None
    normalize_latents: bool = True

    def __post_init__(self):
        for name, valid in (
            ("schedule", SCHEDULES), ("prediction", PREDICTIONS), ("sampler", SAMPLERS),
            ("timestep_spacing", SPACINGS), ("guidance_schedule", GUIDANCE_SCHEDULES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(f"diffusion.{name}={getattr(self, name)!r} is not one of {valid}")
        if not 1 <= self.sampling_steps <= self.num_timesteps:
            raise ValueError(f"sampling_steps must lie in [1, num_timesteps={self.num_timesteps}]")
        if self.eta < 0:
            raise ValueError("eta must be >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DiffusionConfig":
        return from_dict(cls, values, "diffusion")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def make_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.schedule, self.num_timesteps, self.beta_start, self.beta_end, self.zero_terminal_snr)
