"""Samples that do not depend on batching: shared by walt-eval (metrics) and walt-sample (videos).

Sample j draws its label and initial noise from its own CPU generator seeded by (eval.seed, j), so the
sample set is the same on any device and batch size, a resumed evaluation continues exactly where it
stopped, and walt-sample with the same seed shows the clips walt-eval measured.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from walt.config.eval import EvalConfig


def eval_device(ev: EvalConfig) -> torch.device:
    """The torch device of eval.device ("auto": CUDA when available)."""
    if ev.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(ev.device)


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample `index` of the stream `seed` (64-bit: seed in the high half, index in the low)."""
    return (int(seed) & 0xFFFFFFFF) << 32 | (int(index) & 0xFFFFFFFF)


def sample_inputs(module, seed: int, start: int, stop: int,
                  labels: Optional[Sequence[int]] = None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(labels (B,) or None, initial noise (B, c, T, H, W)) of samples start..stop-1, on the CPU.

    labels: class per sample, indexed by sample number (None: uniform over the classes, per-sample seeded).
    """
    mc = module.model_cfg
    shape = (mc.in_channels, *mc.input_size)
    ys, noise = [], []
    for j in range(start, stop):
        g = torch.Generator().manual_seed(sample_seed(seed, j))
        y = int(torch.randint(mc.num_classes, (1,), generator=g)) if mc.num_classes else None
        ys.append(int(labels[j]) if labels is not None else y)
        noise.append(torch.randn(shape, generator=g))
    return (torch.tensor(ys) if mc.num_classes else None), torch.stack(noise)


@torch.no_grad()
def generate(module, ev: EvalConfig, start: int, stop: int,
             labels: Optional[Sequence[int]] = None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(labels (B,) or None, decoded videos (B, C, T, H, W) in [-1, 1]) of samples start..stop-1.

    Stochastic samplers (ddpm, eta > 0) draw their step noise from one generator per batch, seeded by
    (seed, start): reproducible for the same batch boundaries.
    """
    if module.first_stage is None:
        raise ValueError("stage-2 samples are decoded with the first stage: set first_stage_ckpt "
                         "(a stage-1 checkpoints/last.ckpt)")
    device = module.device
    y, noise = sample_inputs(module, ev.seed, start, stop, labels)
    step_gen = torch.Generator(device=device).manual_seed(sample_seed(ev.seed, start) ^ (1 << 63))
    latents = module.sample(None if y is None else y.to(device), ev.sampling_steps, ev.guidance_scale,
                            noise=noise.to(device), use_ema=ev.use_ema, generator=step_gen)
    return y, module.decode(latents).float()


def class_cycle(num_classes: int, n: int) -> Optional[list[int]]:
    """Labels j % num_classes (one class per grid column); None for unconditional models."""
    return [j % num_classes for j in range(n)] if num_classes else None


def sampling_settings(module, ev: EvalConfig) -> dict:
    """What defines the samples besides the weights: sampler, steps, eta, guidance, EMA, seed."""
    d = module.diffusion_cfg
    return {"sampler": d.sampler, "sampling_steps": ev.sampling_steps or d.sampling_steps, "eta": d.eta,
            "guidance_scale": d.guidance_scale if ev.guidance_scale is None else ev.guidance_scale,
            "use_ema": ev.use_ema, "seed": ev.seed}
