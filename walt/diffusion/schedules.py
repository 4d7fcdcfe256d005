"""Noise schedules: alpha_bar(t) for t = 0..N-1, with optional zero-terminal-SNR rescaling.

Convention (variance preserving): x_t = alpha_t * x0 + sigma_t * eps, alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t). Index t = N - 1 is the noisiest step.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's betas, evenly spaced from beta_start to beta_end (float64)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, alpha_bar(t) = cos^2((t/N + s) / (1 + s) * pi / 2)."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift and scale sqrt(alpha_bar) so the last step has SNR exactly 0.

    The first step keeps its value; in between sqrt(alpha_bar) is mapped linearly. Without this the
    model never sees pure noise in training yet starts sampling from it (Table 3e: FVD 91 vs 61).
    """
    root = alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)  # root[-1] is last - last == 0 exactly
    return root**2


class NoiseSchedule:
    """alpha_bar over the discrete timesteps.

    schedule: "linear" or "cosine". zero_terminal_snr: rescale so alpha_bar[N-1] == 0.
    The float64 table lives on the CPU (a module buffer would be cast by bf16-true precision);
    lookups use a float32 copy cached per device, where the terminal zero stays exactly zero.
    """

    def __init__(
        self,
        schedule: str = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        zero_terminal_snr: bool = True,
    ):
        if schedule == "linear":
            betas = linear_betas(num_timesteps, beta_start, beta_end)
        elif schedule == "cosine":
            betas = cosine_betas(num_timesteps)
        else:
            raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        self.num_timesteps = num_timesteps
        self.alphas_cumprod = alphas_cumprod  # (N,) float64, CPU
        self._tables: dict = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        """[1, alpha_bar_0, ..., alpha_bar_{N-1}] as float32 on `device` (index t + 1)."""
        if device not in self._tables:
            padded = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod])
            self._tables[device] = padded.to(device=device, dtype=torch.float32)
        return self._tables[device]

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t; t = -1 means "clean" (alpha_bar = 1), used by samplers."""
        return self._table(t.device)[t.long() + 1]

    def alpha_sigma(self, t: torch.Tensor, ndim: int = 5, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) at timesteps t (B,), shaped (B, 1, ...) to broadcast over ndim-d data."""
        ab = self.alpha_bar(t)
        shape = (-1,) + (1,) * (ndim - 1)
        return ab.sqrt().to(dtype).view(shape), (1 - ab).sqrt().to(dtype).view(shape)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t)
        return ab / (1 - ab)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, x0.ndim, x0.dtype)
        return alpha * x0 + sigma * noise
