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

# Order of the modulation vectors, in the paper's notation: attention (1) and MLP (2); a block with a
# second attention (S+T) has a third triple for it.
MODULATION = ("gamma1", "gamma2", "beta1", "beta2", "alpha1", "alpha2")
EXTRA_MODULATION = ("gamma3", "beta3", "alpha3")


def modulation_count(attentions: int) -> int:
    """Modulation vectors of a block with `attentions` attention sub-layers and one MLP."""
    return len(MODULATION) + len(EXTRA_MODULATION) * (attentions - 1)


class SharedAdaLN(nn.Module):
    """A1 = Linear(SiLU(c + t)) -> (B, n d), shared by all blocks (AdaLN-LoRA only)."""

    def __init__(self, hidden_size: int, count: int = len(MODULATION)):
        super().__init__()
        self.linear = nn.Linear(hidden_size, count * hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond: SiLU(c + t), (B, d)."""
        return self.linear(cond)


class AdaLNModulation(nn.Module):
    """One block's modulation from SiLU(c + t) (B, d).

    rank > 0: A_i = shared + up(down(cond)), up: (n d x r), down: (r x d), no biases (LoRA); a block
        that needs fewer vectors than the shared projection gives reads its first n d.
    rank = 0: A_i = Linear_i(cond), a separate Linear(d, n d) per block; `shared` is ignored.
    Returns (B, n, d) in MODULATION (+ EXTRA_MODULATION) order; n = 6 by default.
    """

    def __init__(self, hidden_size: int, rank: int, count: int = len(MODULATION)):
        super().__init__()
        self.rank, self.count = rank, count
        if rank > 0:
            self.down = nn.Linear(hidden_size, rank, bias=False)
            self.up = nn.Linear(rank, count * hidden_size, bias=False)
            nn.init.zeros_(self.up.weight)  # LoRA convention: the update starts at zero
        else:
            self.linear = nn.Linear(hidden_size, count * hidden_size)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor, shared: Optional[torch.Tensor]) -> torch.Tensor:
        if self.rank > 0:
            update = self.up(self.down(cond))
            out = shared[:, : update.shape[-1]] + update
        else:
            out = self.linear(cond)
        return out.unflatten(-1, (self.count, -1))


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, W, d); scale, shift: (B, d). The 1 + scale keeps identity at zero modulation."""
    return x * (1 + scale[:, None, None, None]) + shift[:, None, None, None]
