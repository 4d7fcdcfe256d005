"""Resumable data order: the train order of an epoch is a function of (seed, epoch) alone, and a resumed
run starts the interrupted epoch at the batch where it stopped.

Lightning restarts a non-stateful loader from the top of the epoch on resume and PyTorch's RandomSampler
draws its order (and each DataLoader iterator its worker seed) from the global RNG, so a resumed run
would see different batches than the uninterrupted one. Here the sampler and the loader's generator are
seeded from (seed, epoch), and `resume_at` (set by the DataModule from the restored trainer state) skips
the batches already trained on while the loader keeps its full length, as Lightning's progress
counters expect.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) & 0xFFFFFFFF) * 1_000_003 + int(epoch)


class ResumableSampler(Sampler[int]):
    """Indices 0..n-1, shuffled per epoch by (seed, epoch) (or in order), skipping `skip` at the resume epoch.

    generator: a torch.Generator re-seeded at every epoch: pass the same one to the DataLoader, so the
    iterator's worker seed is a function of (seed, epoch) too and never touches the global RNG.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, generator: torch.Generator | None = None):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch, self._resume = 0, None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each epoch start."""
        self.epoch = int(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))

    def resume_at(self, epoch: int, items: int) -> None:
        """Start epoch `epoch` after its first `items` indices (the batches a checkpoint already trained on)."""
        self._resume = (int(epoch), int(items))
        self.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n  # the full epoch: Lightning counts the resumed batches as done already

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))) \
            if self.shuffle else torch.arange(self.n)
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        return iter(order[skip:].tolist())
