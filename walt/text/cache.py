"""Pre-computed text token states per caption, so training and sampling need not run the encoder.

One torch file {"identity", "captions", "states" (N, L, D) float16, "mask" (N, L) bool}, loaded with
weights_only=True; `identity` names the encoder directory and max_length that made it, and a cache
of another encoder is refused rather than silently mixing embeddings.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from walt import runs

Encode = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


class TextEmbeddingCache:
    """Caption -> (states (L, D), mask (L,)), persisted at `path` by `save`, checked against `identity`."""

    def __init__(self, path: str | os.PathLike, identity: str):
        self.path, self.identity = Path(path), identity
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.path.exists():
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            if data["identity"] != identity:
                raise ValueError(f"text embedding cache {self.path} was made by {data['identity']}, not {identity}: "
                                 f"delete it or point text.cache elsewhere")
            for j, caption in enumerate(data["captions"]):
                self.entries[caption] = (data["states"][j], data["mask"][j])

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, captions: Sequence[str], encode: Encode) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, L, D) float32, mask (B, L)); captions not held yet are encoded (one batch) and added."""
        todo = list(dict.fromkeys(c for c in captions if c not in self.entries))
        if todo:
            states, mask = encode(todo)
            for j, caption in enumerate(todo):
                self.entries[caption] = (states[j].detach().to("cpu", torch.float16), mask[j].cpu())
        states = torch.stack([self.entries[c][0] for c in captions]).float()
        return states, torch.stack([self.entries[c][1] for c in captions])

    def save(self) -> Path:
        """Write every entry atomically: readers never see half a cache, and a killed save leaves the old one."""
        captions = list(self.entries)
        data = {"identity": self.identity, "captions": captions,
                "states": torch.stack([self.entries[c][0] for c in captions]) if captions else torch.zeros(0),
                "mask": torch.stack([self.entries[c][1] for c in captions]) if captions else torch.zeros(0, dtype=torch.bool)}
        with runs.atomic_write(self.path, "wb") as f:
            torch.save(data, f)
        return self.path


def precompute(encoder, captions: Sequence[str], path: str | os.PathLike, batch_size: int = 64) -> TextEmbeddingCache:
    """Encode `captions` (e.g. a dataset's captions.json values) once into a cache file at `path`."""
    cache = TextEmbeddingCache(path, encoder.identity)
    unique = list(dict.fromkeys(captions))
    for i in range(0, len(unique), batch_size):
        cache.lookup(unique[i:i + batch_size], encoder.run)
    cache.save()
    return cache
