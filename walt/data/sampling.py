"""Resumable data order: the train order of an epoch is a function of (seed, epoch) alone, and a resumed
run starts the interrupted epoch at the batch where it stopped.

Lightning restarts a non-stateful loader from the top of the epoch on resume and PyTorch's RandomSampler
draws its order (and each DataLoader iterator its worker seed) from the global RNG, so a resumed run
would see different batches than the uninterrupted one. Here the sampler and the loader's generator are
seeded from (seed, epoch), and both the epoch and the items already trained on in it come from the run's
position (optimizer steps taken, asked for at every epoch start), never from Lightning's epoch counter:
that counter lags by one after a resume from a checkpoint saved at an epoch's last batch, and a second
resume then replayed the previous epoch's order. The loader keeps its full length, as Lightning's progress
counters expect. Under DDP every rank takes its strided share of the same order (no second shuffle).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DistributedSampler

from walt.utils import mix_seed


class ResumableSampler(DistributedSampler):
    """Indices 0..n-1, shuffled per epoch by (seed, epoch) (or in order), skipping `skip` at the resume epoch.

    generator: a torch.Generator re-seeded at every epoch: pass the same one to the DataLoader, so the
    iterator's worker seed is a function of (seed, epoch) too and never touches the global RNG.
    position: () -> (epoch, items of it already trained on), asked at every epoch start and iteration (the
    DataModule's: from the trainer's global step); without it the epoch is the one Lightning sets.
    rank, num_replicas: this process's share under DDP / FSDP: the epoch's order (the same on every rank)
    cut to a multiple of num_replicas and strided, order[rank::num_replicas], so the ranks' batches of one
    step together are the batch one process would draw with num_replicas times the batch size. It is a
    DistributedSampler (without its own shuffling), so Lightning keeps it instead of wrapping it in one
    that would reshuffle.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, generator: torch.Generator | None = None,
                 rank: int = 0, num_replicas: int = 1, position: Callable[[], tuple[int, int]] | None = None):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.num_replicas = int(rank), int(num_replicas)
        self.generator = generator if generator is not None else torch.Generator()
        self.position = position
        self.epoch = 0
        self.set_epoch(0)

    def where(self) -> tuple[int, int]:
        """(epoch, items to skip at its start): from `position` when given."""
        return tuple(map(int, self.position())) if self.position is not None else (self.epoch, 0)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each epoch start, before the loader's iterator draws its worker seed."""
        self.epoch = int(epoch) if self.position is None else self.where()[0]
        self.generator.manual_seed(mix_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        # the full epoch (this rank's share): Lightning counts the resumed batches as done already
        return self.n // self.num_replicas

    def __iter__(self):
        self.epoch, skip = self.where()
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))) \
            if self.shuffle else torch.arange(self.n)
        if self.num_replicas > 1:
            order = order[: len(self) * self.num_replicas][self.rank::self.num_replicas]
        return iter(order[skip:].tolist())
