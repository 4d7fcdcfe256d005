"""Samplers (DDIM, ancestral DDPM) with classifier-free guidance and self-conditioning.

A sampler sees the network only through model_fn(x_t, t, self_cond) -> prediction, with every
condition closed over; ClassifierFreeGuidance is such a function wrapping a conditional model.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import torch

from walt.diffusion.config import DiffusionConfig
from walt.diffusion.objectives import learned_log_variance, split_output, to_x0_eps
from walt.diffusion.schedules import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def sampling_timesteps(num_timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """Descending timesteps of a `steps`-step sampler (Lin et al. 2023, Table 2 for the spacings)."""
    if spacing == "trailing":  # N-1, ..., N/steps - 1: includes the pure-noise step
        ts = [round(num_timesteps - i * num_timesteps / steps) - 1 for i in range(steps)]
    elif spacing == "leading":  # (steps-1) * N/steps, ..., 0
        ts = [i * (num_timesteps // steps) for i in reversed(range(steps))]
    elif spacing == "linspace":
        ts = [round(num_timesteps - 1 - i * (num_timesteps - 1) / max(steps - 1, 1)) for i in range(steps)]
    else:
        raise ValueError(f"timestep_spacing={spacing!r} is not one of ('trailing', 'leading', 'linspace')")
    return sorted(set(ts), reverse=True)


def guidance_weight(t: torch.Tensor, scale: float, schedule: str = "constant", power: float = 4.0,
                    num_timesteps: int = 1000) -> torch.Tensor:
    """Guidance weight per sample at timesteps t (B,): constant, or power-cosine ramp 1 -> scale."""
    if schedule == "constant":
        return torch.full(t.shape, float(scale), device=t.device)
    if schedule == "power_cosine":
        progress = (1 - t.float() / num_timesteps).clamp(0, 1) ** power
        return 1 + (scale - 1) * (1 - torch.cos(math.pi * progress)) / 2
    raise ValueError(f"guidance_schedule={schedule!r} is not one of ('constant', 'power_cosine')")


class ClassifierFreeGuidance:
    """model_fn that evaluates conditional and unconditional inputs in one batch and mixes them:
    out = uncond + w(t) (cond - uncond).

    model: called as model(x, t, self_cond=..., **kwargs). cond / uncond: keyword tensors batched
    along dim 0 (e.g. {"y": labels} and {"y": null labels}); keys only in `cond` (frame context,
    ...) are shared by both halves.
    """

    def __init__(self, model: Callable[..., torch.Tensor], cond: Mapping[str, Any], uncond: Mapping[str, Any],
                 scale: float, schedule: str = "constant", power: float = 4.0, num_timesteps: int = 1000):
        self.model, self.cond, self.uncond = model, dict(cond), dict(uncond)
        self.scale, self.schedule, self.power, self.num_timesteps = scale, schedule, power, num_timesteps

    def __call__(self, x: torch.Tensor, t: torch.Tensor, self_cond: Optional[torch.Tensor]) -> torch.Tensor:
        kwargs = {}
        for key, value in self.cond.items():
            other = self.uncond.get(key, value)
            kwargs[key] = None if value is None else torch.cat([value, other])
        double = lambda z: None if z is None else torch.cat([z, z])  # noqa: E731
        out_cond, out_uncond = self.model(double(x), double(t), self_cond=double(self_cond), **kwargs).chunk(2)
        (cond, var_values), (uncond, _) = split_output(out_cond, x), split_output(out_uncond, x)
        w = guidance_weight(t, self.scale, self.schedule, self.power, self.num_timesteps)
        w = w.view(-1, *([1] * (x.ndim - 1))).to(cond.dtype)
        guided = uncond + w * (cond - uncond)
        # learned sigma: guide the prediction, keep the conditional variance (as DiT)
        return guided if var_values is None else torch.cat([guided, var_values], dim=1)


def _estimates(model_fn, schedule, x, t, self_cond, prediction, clip_x0):
    alpha, sigma = schedule.alpha_sigma(t, x.ndim, torch.float32)
    pred, var_values = split_output(model_fn(x, t, self_cond).float(), x)
    x0, eps = to_x0_eps(prediction, pred, x, alpha, sigma)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = torch.where(sigma > 0, (x - alpha * x0) / sigma.clamp_min(1e-12), eps)
    return x0, eps, var_values


# per-step update: (x_t, x0, eps, variance values or None, alpha_bar_t, alpha_bar_s) -> (mean of x_s, std of the
# fresh noise added to it, or None for none); s is the next timestep (-1 = clean)
StepFn = Callable[..., tuple[torch.Tensor, Optional[torch.Tensor]]]


def _denoise(model_fn: ModelFn, schedule: NoiseSchedule, noise: torch.Tensor, update: StepFn, *, steps: int,
             prediction: str, spacing: str, self_condition: bool, clip_x0: Optional[float],
             generator: Optional[torch.Generator]) -> torch.Tensor:
    """The loop both samplers share, so they differ only in `update`: estimates from the model at each
    timestep (self-conditioned on the previous x0 estimate, zeros at the first), then x_t -> x_s; no noise
    is added at the last step, and none is drawn where `update` adds none (the generator's stream stays put)."""
    x, x0 = noise.float(), None
    ts = sampling_timesteps(schedule.num_timesteps, steps, spacing)
    for i, step in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0, eps, var_values = _estimates(model_fn, schedule, x, t, x0 if self_condition else None, prediction, clip_x0)
        ab_t = schedule.alpha_bar(t[:1]).view(1)
        ab_s = schedule.alpha_bar(torch.full_like(t[:1], prev)).view(1)
        x, std = update(x, x0, eps, var_values, ab_t, ab_s)
        if std is not None and prev >= 0:
            x = x + std * torch.randn(x.shape, device=x.device, generator=generator)
    return x


@torch.no_grad()
def ddim_sample(model_fn: ModelFn, schedule: NoiseSchedule, noise: torch.Tensor, *, steps: int = 50,
                eta: float = 0.0, prediction: str = "v", spacing: str = "trailing", self_condition: bool = False,
                clip_x0: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) from x_T = noise to x0; eta > 0 adds fresh noise each step.

    self_condition: feed the previous step's x0 estimate to the next step (zeros at the first).
    """
    def update(x, x0, eps, var_values, ab_t, ab_s):
        std = eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).clamp_min(0).sqrt()
        return ab_s.sqrt() * x0 + (1 - ab_s - std**2).clamp_min(0).sqrt() * eps, std if eta > 0 else None

    return _denoise(model_fn, schedule, noise, update, steps=steps, prediction=prediction, spacing=spacing,
                    self_condition=self_condition, clip_x0=clip_x0, generator=generator)


@torch.no_grad()
def ddpm_sample(model_fn: ModelFn, schedule: NoiseSchedule, noise: torch.Tensor, *, steps: Optional[int] = None,
                prediction: str = "v", spacing: str = "trailing", self_condition: bool = False,
                clip_x0: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Ancestral sampling from the posterior q(x_s | x_t, x0_hat); steps=None uses every timestep.

    The step variance is the posterior's beta~, or the model's learned one (learned sigma).
    """
    def update(x, x0, eps, var_values, ab_t, ab_s):
        beta = 1 - ab_t / ab_s  # beta of the (respaced) step s -> t
        mean = ab_s.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t) * x
        var = beta * (1 - ab_s) / (1 - ab_t)
        return mean, var.sqrt() if var_values is None else (0.5 * learned_log_variance(var_values, beta, var)).exp()

    return _denoise(model_fn, schedule, noise, update, steps=steps or schedule.num_timesteps, prediction=prediction,
                    spacing=spacing, self_condition=self_condition, clip_x0=clip_x0, generator=generator)


def sample(model_fn: ModelFn, schedule: NoiseSchedule, noise: torch.Tensor, cfg: DiffusionConfig, *,
           steps: Optional[int] = None, eta: Optional[float] = None, self_condition: bool = False,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Run the sampler named by cfg.sampler with cfg's defaults (steps / eta override them)."""
    common = dict(prediction=cfg.prediction, spacing=cfg.timestep_spacing, self_condition=self_condition,
                  clip_x0=cfg.clip_x0, generator=generator)
    steps = steps or cfg.sampling_steps
    if cfg.sampler == "ddim":
        return ddim_sample(model_fn, schedule, noise, steps=steps, eta=cfg.eta if eta is None else eta, **common)
    return ddpm_sample(model_fn, schedule, noise, steps=steps, **common)
