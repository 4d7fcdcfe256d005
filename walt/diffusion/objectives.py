"""What the network predicts (v, eps, x0), conversions between them, and the training loss.

With x_t = alpha x0 + sigma eps and alpha^2 + sigma^2 = 1:
    v   = alpha eps - sigma x0
    x0  = alpha x_t - sigma v            eps = sigma x_t + alpha v
v is well defined at every noise level, including alpha = 0 (zero terminal SNR), where x_t = eps
carries no information about x0 and eps prediction cannot give one: there x0 falls back to 0,
the mean of normalised latents (the best guess given pure noise).

Learned sigma (improved DDPM, Nichol & Dhariwal 2021; DiT; Latte): a model output with twice the
latent channels is (prediction, variance values v in [-1, 1]); the reverse-step variance is
exp(f log beta_t + (1 - f) log beta~_t) with f = (v + 1) / 2, trained by the VLB term with the mean
frozen (L_hybrid = L_simple + L_vlb, iDDPM's lambda = 0.001 over T = 1000 steps, as DiT / Latte).
"""
from __future__ import annotations

import math
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


def split_output(out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A model output -> (prediction, variance values or None): learned sigma doubles the channels."""
    if out.shape[1] == 2 * x.shape[1]:
        pred, var_values = out.chunk(2, dim=1)
        return pred, var_values
    return out, None


def learned_log_variance(var_values: torch.Tensor, beta: torch.Tensor, posterior_var: torch.Tensor) -> torch.Tensor:
    """log of the reverse-step variance interpolated between beta~ (f = 0) and beta (f = 1)."""
    frac = (var_values.float() + 1) / 2
    return frac * beta.clamp_min(1e-20).log() + (1 - frac) * posterior_var.clamp_min(1e-20).log()


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under N(mean, exp(log_var)) with bins of width 2/255 on [-1, 1] (open-ended edges)."""
    inv_std = (-0.5 * log_var).exp()
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    log_mid = (cdf_plus - cdf_min).clamp_min(1e-12).log()
    log_low, log_high = cdf_plus.clamp_min(1e-12).log(), (1 - cdf_min).clamp_min(1e-12).log()
    return torch.where(x < -0.999, log_low, torch.where(x > 0.999, log_high, log_mid))


def vlb_term(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor,
             var_values: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample L_t in bits per dimension (B,): KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0,
    -log p(x0 | x_1) at t = 0 with iDDPM's discretised Gaussian (2/255-wide bins, edges at +-1), which
    DiT and Latte apply to latents unchanged; it keeps the term >= 0 where a continuous density
    would reward an ever smaller variance.

    x0_hat: the model's x0 estimate (detached by the caller, so only the variance learns from it).
    beta~_0 = 0 is replaced by beta~_1 (iDDPM's clipped log variance).
    weight: optional per-element weights broadcastable to x0 (0 = masked out): a weighted mean per sample.
    """
    ndim = x0.ndim
    shape = (-1,) + (1,) * (ndim - 1)

    def coefficients(step):
        ab_t, ab_s = schedule.alpha_bar(step).view(shape), schedule.alpha_bar(step - 1).view(shape)
        beta = 1 - ab_t / ab_s
        return ab_t, ab_s, beta, beta * (1 - ab_s) / (1 - ab_t)

    ab_t, ab_s, beta, post_var = coefficients(t)
    post_var = torch.where(t.view(shape) == 0, coefficients(torch.ones_like(t))[3], post_var)
    c0, ct = ab_s.sqrt() * beta / (1 - ab_t), (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t)
    x0, x_t, x0_hat = x0.float(), x_t.float(), x0_hat.float()
    true_mean, model_mean = c0 * x0 + ct * x_t, c0 * x0_hat + ct * x_t
    model_logvar = learned_log_variance(var_values, beta, post_var)
    true_logvar = post_var.clamp_min(1e-20).log()
    kl = 0.5 * (-1 + model_logvar - true_logvar + (true_logvar - model_logvar).exp()
                + (true_mean - model_mean) ** 2 * (-model_logvar).exp())
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, model_logvar)
    per_elem = torch.where(t.view(shape) == 0, nll, kl)
    if weight is not None:
        w = weight.float().expand_as(per_elem)
        return (per_elem * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12) / math.log(2.0)
    return per_elem.flatten(1).mean(1) / math.log(2.0)


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
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """L2 between the model output and the `prediction` target, mean over all elements; with a
    learned-sigma output (2x channels) plus the VLB term of its variance (see the module docstring).
    weight: optional weights broadcastable to x0 (e.g. (B, 1, T, 1, 1) per latent frame; 0 = masked
    out, such as the padding frames of joint training's image samples): the loss is then the
    weighted mean, i.e. the mean over the kept elements only, and masked elements get no gradient.

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
            first = split_output(model_fn(x_t, t, None), x0)[0]
            self_cond = to_x0_eps(prediction, first.float(), x_t, alpha, sigma)[0].to(x0.dtype).detach()
            self_cond = self_cond * coins.view(B, *([1] * (x0.ndim - 1))).to(x0.dtype)
    pred, var_values = split_output(model_fn(x_t, t, self_cond), x0)
    sq = (pred.float() - target(prediction, x0, noise, alpha, sigma).float()).pow(2)
    if weight is None:
        loss = sq.mean()
    else:
        w = weight.float().expand_as(sq)
        loss = (sq * w).sum() / w.sum().clamp_min(1e-12)
    if var_values is not None:
        x0_hat = to_x0_eps(prediction, pred.detach().float(), x_t.float(), alpha.float(), sigma.float())[0]
        vlb = vlb_term(schedule, x0, x_t, t, x0_hat, var_values, weight)
        if weight is not None:  # samples with no kept element do not count
            kept = (weight.float().expand_as(sq).flatten(1).sum(1) > 0).float()
            loss = loss + (vlb * kept).sum() / kept.sum().clamp_min(1)
        else:
            loss = loss + vlb.mean()
    return loss
