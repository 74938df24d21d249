"""A weightless, deterministic bag-of-words text encoder (registry name ``"hashing"``).

For tests, demos and machines without a Hugging Face model: no download, no weights, the same
vectors on every machine.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from text_encoder.base import Segments, TextEncoder
from text_encoder.registry import register_text_encoder
from text_encoder.segment import split_sentences

__all__ = ["HashingTextEncoder"]


@register_text_encoder
class HashingTextEncoder(TextEncoder):
    """A weightless, deterministic bag-of-words encoder (for tests, demos and machines without HF).

    Each word (lower case, cut to its first ``prefix`` letters so that ``diabetes`` and
    ``diabetic`` match) gets a fixed pseudo-random Gaussian vector derived from a hash of the word
    and ``seed``; a text is the L2-normalised sum of its words' vectors. Cosine similarity is then
    roughly word overlap, which is enough for a zero-shot path to work on toy data.

    Args:
        dim: vector size.
        seed: changes every word vector.
        prefix: letters of each word that count.
    """

    name = "hashing"

    def __init__(self, dim: int = 64, seed: int = 0, prefix: int = 6) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim={dim}: expected at least 2")
        self.dim = int(dim)
        self.seed = int(seed)
        self.prefix = int(prefix)
        self._vocab: dict[str, Tensor] = {}

    _WORD = re.compile(r"[a-z0-9]+")

    def _word(self, word: str) -> Tensor:
        vec = self._vocab.get(word)
        if vec is None:
            digest = hashlib.blake2b(f"{self.seed}:{word}".encode(), digest_size=8).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
            vec = self._vocab[word] = torch.randn(self.dim, generator=gen)
        return vec

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> Tensor:
        """Encode texts (see :meth:`TextEncoder.encode`).

        Shapes:
            output: ``(len(texts), dim)``.
        """
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, got a single string: wrap it in a list")
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in self._WORD.findall(text.lower()):
                out[i] += self._word(word[: self.prefix])
        return F.normalize(out, dim=-1)

    def encode_segments(self, text: str) -> Segments:
        """Sentences of ``text`` and their vectors (see :meth:`TextEncoder.encode_segments`).

        Shapes:
            vectors: ``(s, dim)``.
        """
        spans = split_sentences(text)
        texts = [text[a:b] for a, b in spans]
        return Segments(texts=texts, spans=spans, vectors=self.encode(texts))

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments."""
        return {"name": self.name, "kwargs": {"dim": self.dim, "seed": self.seed, "prefix": self.prefix}}
