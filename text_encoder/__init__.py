"""Text encoders: the :class:`TextEncoder` contract, its registry, the Hugging Face encoder,
sentence/window segmentation and the on-disk embedding cache.

Importing the package registers ``"hf"`` (without importing ``transformers``: that happens when a
model first loads) and ``"hashing"`` (a weightless encoder for tests).
"""

from text_encoder.base import Segments, TextEncoder
from text_encoder.cache import EmbeddingCache
from text_encoder.hashing import HashingTextEncoder
from text_encoder.hf import HFTextEncoder, default_model_path
from text_encoder.registry import (
    register_text_encoder,
    resolve_text_encoder,
    text_encoder_from_config,
    text_encoder_registry,
)
from text_encoder.segment import split_sentences, token_windows, window_spans

__all__ = [
    "EmbeddingCache",
    "HFTextEncoder",
    "HashingTextEncoder",
    "Segments",
    "TextEncoder",
    "default_model_path",
    "register_text_encoder",
    "resolve_text_encoder",
    "split_sentences",
    "text_encoder_from_config",
    "text_encoder_registry",
    "token_windows",
    "window_spans",
]
