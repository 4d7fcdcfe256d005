"""AdaLN conditioning: the per-block scale / shift / gate vectors derived from timestep + class.

W.A.L.T's AdaLN-LoRA: one shared projection A1 = MLP(c + t) for all blocks, and per block a
rank-r update, A_i = A1 + W_b^i W_a^i (c + t). With r = 2 this costs 7 d r parameters per block
instead of the 6 d^2 of a separate AdaLN, which is the 313M vs 458M of W.A.L.T-L.
Every modulation starts at zero (adaLN-Zero), so each residual block is the identity at init.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

# Order of the six modulation vectors, in the paper's notation.
MODULATION = ("gamma1", "gamma2", "beta1", "beta2", "alpha1", "alpha2")


class SharedAdaLN(nn.Module):
    """A1 = Linear(SiLU(c + t)) -> (B, 6d), shared by all blocks (AdaLN-LoRA only)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 6 * hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond: SiLU(c + t), (B, d)."""
        return self.linear(cond)


class AdaLNModulation(nn.Module):
    """One block's modulation from SiLU(c + t) (B, d).

    rank > 0: A_i = shared + up(down(cond)), up: (6d x r), down: (r x d), no biases (LoRA).
    rank = 0: A_i = Linear_i(cond), a separate Linear(d, 6d) per block; `shared` is ignored.
    Returns (B, 6, d) in MODULATION order.
    """

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        self.rank = rank
        if rank > 0:
            self.down = nn.Linear(hidden_size, rank, bias=False)
            self.up = nn.Linear(rank, 6 * hidden_size, bias=False)
            nn.init.zeros_(self.up.weight)  # LoRA convention: the update starts at zero
        else:
            self.linear = nn.Linear(hidden_size, 6 * hidden_size)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor, shared: Optional[torch.Tensor]) -> torch.Tensor:
        if self.rank > 0:
            out = shared + self.up(self.down(cond))
        else:
            out = self.linear(cond)
        return out.unflatten(-1, (6, -1))


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, W, d); scale, shift: (B, d). The 1 + scale keeps identity at zero modulation."""
    return x * (1 + scale[:, None, None, None]) + shift[:, None, None, None]
