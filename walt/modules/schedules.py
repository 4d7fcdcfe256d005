"""Learning-rate schedules of the stages, and re-applying configured rates to a restored scheduler."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup: int, max_steps: Optional[int], min_ratio: float = 0.0) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to min_ratio at max_steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if not max_steps or max_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (max_steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_base_lrs(scheduler: LambdaLR, lrs: Sequence[float]) -> list[tuple[float, float]]:
    """Make a (restored) LambdaLR use these base rates from its current step on; returns (old, new) pairs.

    A resumed run restores the optimizer and scheduler state of its checkpoint, base rates included, so a
    changed optim.lr would otherwise be ignored while config.yaml records it. The schedule's lambdas are
    the new config's already (configure_optimizers runs before the restore).
    """
    changed = list(zip(scheduler.base_lrs, lrs))
    scheduler.base_lrs = [float(lr) for lr in lrs]
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * fn(scheduler.last_epoch)
    return changed
