"""What the network predicts (v, eps, x0), conversions between them, and the training loss.

With x_t = alpha x0 + sigma eps and alpha^2 + sigma^2 = 1:
    v   = alpha eps - sigma x0
    x0  = alpha x_t - sigma v            eps = sigma x_t + alpha v
v is well defined at every noise level, including alpha = 0 (zero terminal SNR), where x_t = eps
carries no information about x0 and eps prediction cannot give one: there x0 falls back to 0,
the mean of normalised latents (the best guess given pure noise).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from walt.diffusion.schedules import NoiseSchedule

PREDICTIONS = ("v", "eps", "x0")


def _check(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"prediction={kind!r} is not one of {PREDICTIONS}")


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The regression target of a prediction kind."""
    _check(kind)
    if kind == "v":
        return alpha * eps - sigma * x0
    return eps if kind == "eps" else x0


def to_v(kind: str, pred: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Any prediction -> v (via x0 and eps, so eps at alpha = 0 uses the x0 = 0 fallback)."""
    if kind == "v":
        return pred
    x0, eps = to_x0_eps(kind, pred, x_t, alpha, sigma)
    return alpha * eps - sigma * x0


def to_x0_eps(
    kind: str, pred: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Any prediction -> (x0, eps) estimates consistent with x_t."""
    _check(kind)
    if kind == "v":
        return alpha * x_t - sigma * pred, sigma * x_t + alpha * pred
    if kind == "eps":
        safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
        x0 = torch.where(alpha > 0, (x_t - sigma * pred) / safe_alpha, torch.zeros_like(x_t))
        return x0, pred
    safe_sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    eps = torch.where(sigma > 0, (x_t - alpha * pred) / safe_sigma, torch.zeros_like(x_t))
    return pred, eps


def convert(
    pred: torch.Tensor, src: str, dst: str, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Re-express a `src` prediction as a `dst` prediction at the same x_t."""
    _check(dst)
    if src == dst:
        return pred
    if dst == "v":
        return to_v(src, pred, x_t, alpha, sigma)
    x0, eps = to_x0_eps(src, pred, x_t, alpha, sigma)
    return x0 if dst == "x0" else eps


def diffusion_loss(
    model_fn: Callable[..., torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: str = "v",
    *,
    self_condition: Union[bool, torch.Tensor] = False,
    t: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """L2 between the model output and the `prediction` target, mean over all elements.

    model_fn(x_t, t, self_cond) -> prediction; conditioning (labels, context, ...) is closed over.
    self_condition: per-sample coins (B,) bool, or one bool for the batch: where True, a first no-grad
    pass's x0 estimate, detached, is fed to the second pass (Chen et al., "Analog Bits"); where False
    the self-conditioning input is zeros (the model's self_cond=None).
    t, noise: drawn uniformly / from N(0, I) when omitted.
    """
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (B,), device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    alpha, sigma = schedule.alpha_sigma(t, x0.ndim, x0.dtype)
    x_t = alpha * x0 + sigma * noise
    self_cond = None
    coins = torch.as_tensor(self_condition, device=x0.device).expand(B)
    if coins.any():
        with torch.no_grad():
            first = model_fn(x_t, t, None)
            self_cond = to_x0_eps(prediction, first.float(), x_t, alpha, sigma)[0].to(x0.dtype).detach()
            self_cond = self_cond * coins.view(B, *([1] * (x0.ndim - 1))).to(x0.dtype)
    pred = model_fn(x_t, t, self_cond)
    return (pred.float() - target(prediction, x0, noise, alpha, sigma).float()).pow(2).mean()
