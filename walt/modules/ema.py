"""Exponential moving average of a model's weights, for every stage.

Built on torch's `AveragedModel` (the average lives in `ema.module`, a frozen deep copy registered as a
submodule: it moves with `.to()`, is saved in the checkpoint's state_dict with its update count
`n_averaged`, and loads with `weights_only=True`). Call `update(model)` right after each optimiser
step, before any checkpoint of that step is written, so a resumed run continues the same average.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class EMA(AveragedModel):
    """ema = d_n * ema + (1 - d_n) * model after update n (n = 0, 1, ...), foreach-fused.

    decay: d. warmup: d_n = min(decay, (1 + n) / (10 + n)), so the average follows the model closely
    early on instead of staying near the initial weights for ~1/(1 - d) steps. The first update copies
    the weights (AveragedModel's rule). Buffers (e.g. norm statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(model, multi_avg_fn=self._average, use_buffers=False)
        self.decay, self.warmup = decay, warmup
        self.module.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of update n (0-based)."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(int(num_averaged)))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.update_parameters(model)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into `model` (same architecture)."""
        model.load_state_dict(self.module.state_dict())
