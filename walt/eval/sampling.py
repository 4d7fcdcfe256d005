"""Samples that do not depend on batching: shared by walt-eval (metrics) and walt-sample (videos).

Sample j draws its label and initial noise from its own CPU generator seeded by (eval.seed, j), so the
sample set is the same on any device and batch size, a resumed evaluation continues exactly where it
stopped, and walt-sample with the same seed shows the clips walt-eval measured.

Frame-prediction models (model.context_frames = k > 0) are sampled from real context: the first
1 + (k - 1) * temporal_factor video frames of a real clip (5 frames for k = 2 latent frames at /4) are
encoded by the first stage alone (no later frame reaches the context latents), given to the sampler as
concat(mask * clean latents, mask), copied into the result, and the whole clip is decoded.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from walt.config.eval import EvalConfig
from walt.utils import mix_seed


def eval_device(ev: EvalConfig) -> torch.device:
    """The torch device of eval.device ("auto": CUDA when available)."""
    if ev.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(ev.device)


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample `index` of the stream `seed` (64-bit: seed in the high half, index in the low)."""
    return mix_seed(seed, index, base=1 << 32)


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


def context_frames(module) -> tuple[int, int]:
    """(latent, video) context frames of a frame-prediction module: model.context_frames = k latent frames
    are the first 1 + (k - 1) * temporal_factor video frames (2 -> 5 at /4); (0, 0) for other models."""
    k = int(module.model_cfg.context_frames)
    if k == 0:
        return 0, 0
    if module.first_stage is None:
        raise ValueError("frame prediction encodes real context frames with the first stage: set first_stage_ckpt "
                         "(a stage-1 checkpoints/last.ckpt)")
    return k, 1 + (k - 1) * module.first_stage.cfg.temporal_factor


@torch.no_grad()
def context_latents(module, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context (B, c, T, h, w), context_mask (B, T)) for module.sample from real clips (B, C, T', H, W) in
    [-1, 1]: only their first context video frames are encoded (normalised latents in the first k latent
    frames, zeros after); later frames, if any, are ignored."""
    k, n = context_frames(module)
    if k == 0:
        raise ValueError("the model takes no context frames (model.context_frames=0): it is not a frame-prediction model")
    mc = module.model_cfg
    if videos.ndim != 5 or videos.shape[2] < n:
        raise ValueError(f"frame prediction needs clips (B, C, T, H, W) of at least {n} frames ({k} latent context "
                         f"frames), got {tuple(videos.shape)}")
    latents = module.batch_latents({"video": videos[:, :, :n].to(module.device)})
    B, T = latents.shape[0], mc.input_size[0]
    if tuple(latents.shape[1:]) != (mc.in_channels, k, *mc.input_size[1:]):
        raise ValueError(f"context clips encode to latents {tuple(latents.shape[1:])}, the model takes "
                         f"{(mc.in_channels, k, *mc.input_size[1:])} in its first {k} frames: clips must be "
                         f"{videos.shape[1]} x {n} x H x W at the run's resolution")
    context = latents.new_zeros((B, mc.in_channels, T, *mc.input_size[1:]))
    context[:, :, :k] = latents
    mask = (torch.arange(T, device=latents.device) < k).expand(B, T)
    return context, mask


@torch.no_grad()
def generate(module, ev: EvalConfig, start: int, stop: int, labels: Optional[Sequence[int]] = None,
             context: Optional[torch.Tensor] = None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(labels (B,) or None, decoded videos (B, C, T, H, W) in [-1, 1]) of samples start..stop-1.

    context: real clips (B, C, T', H, W) in [-1, 1], one per sample, for frame-prediction models: sample j
    continues the first context frames of context[j - start] (see context_latents); the returned clips hold
    the decoded context frames followed by the prediction. A frame-prediction model trained always with
    context (model.context_prob = 1) refuses to sample without it.
    Stochastic samplers (ddpm, eta > 0) draw their step noise from one generator per batch, seeded by
    (seed, start): reproducible for the same batch boundaries.
    """
    if module.first_stage is None:
        raise ValueError("stage-2 samples are decoded with the first stage: set first_stage_ckpt "
                         "(a stage-1 checkpoints/last.ckpt)")
    device = module.device
    cond = {}
    if context is not None:
        if len(context) != stop - start:
            raise ValueError(f"{stop - start} samples need as many context clips, got {len(context)}")
        cond["context"], cond["context_mask"] = context_latents(module, context)
    elif module.model_cfg.context_frames > 0 and module.model_cfg.context_prob >= 1:
        raise ValueError(f"a frame-prediction model (model.context_frames={module.model_cfg.context_frames}, "
                         "context_prob=1) predicts from real context frames: pass context clips")
    y, noise = sample_inputs(module, ev.seed, start, stop, labels)
    step_gen = torch.Generator(device=device).manual_seed(sample_seed(ev.seed, start) ^ (1 << 63))
    latents = module.sample(None if y is None else y.to(device), ev.sampling_steps, ev.guidance_scale,
                            noise=noise.to(device), use_ema=ev.use_ema, generator=step_gen, **cond)
    return y, module.decode(latents).float()


def class_cycle(num_classes: int, n: int) -> Optional[list[int]]:
    """Labels j % num_classes (one class per grid column); None for unconditional models."""
    return [j % num_classes for j in range(n)] if num_classes else None


def sampling_settings(module, ev: EvalConfig) -> dict:
    """What defines the samples besides the weights: sampler, steps, eta, guidance (scale and schedule), EMA, seed."""
    d = module.diffusion_cfg
    return {"sampler": d.sampler, "sampling_steps": ev.sampling_steps or d.sampling_steps, "eta": d.eta,
            "guidance_scale": d.guidance_scale if ev.guidance_scale is None else ev.guidance_scale,
            "guidance_schedule": d.guidance_schedule,
            **({"guidance_power": d.guidance_power} if d.guidance_schedule != "constant" else {}),
            "use_ema": ev.use_ema, "seed": ev.seed}
