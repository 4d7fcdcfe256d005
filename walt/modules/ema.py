"""Exponential moving average of a model's weights, for any stage.

The average lives in a frozen deep copy (`ema.module`) registered as a submodule of the
LightningModule: it moves with `.to()`, is saved in the checkpoint's state_dict and loads with
`weights_only=True`, and can be used directly for validation and sampling. Its train/eval mode
follows the parent's, so Lightning's validation loop puts it in eval mode like everything else.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copy updated as ema = d * ema + (1 - d) * model after each optimiser step.

    decay: d. warmup: use d_n = min(decay, (1 + n) / (10 + n)) at update n, so the average follows
    the model closely early on instead of staying near the initial weights for ~1/(1 - d) steps.
    Buffers (e.g. norm statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_params = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            ema_params[name].lerp_(p.detach().to(ema_params[name].dtype), 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into `model` (same architecture)."""
        model.load_state_dict(self.module.state_dict())
