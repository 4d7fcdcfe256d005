"""Text conditioning: a frozen text encoder read from a local model directory, its embedding cache,
and the null text of classifier-free guidance."""
from walt.text.cache import TextEmbeddingCache
from walt.text.config import DEFAULT_ENCODER, TEXT_ENCODER_ENV, TextConfig
from walt.text.encoder import TextEncoder, load_text_encoder, null_text, resolve_text_encoder_dir

__all__ = ["TextConfig", "TextEncoder", "TextEmbeddingCache", "load_text_encoder", "null_text",
           "resolve_text_encoder_dir", "DEFAULT_ENCODER", "TEXT_ENCODER_ENV"]
