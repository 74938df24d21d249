"""The contract every text encoder follows.

A text encoder turns clinical text (a note, a sentence, a code title) into vectors:

* :meth:`TextEncoder.encode` gives one pooled, L2-normalised vector per text;
* :meth:`TextEncoder.encode_segments` cuts one note into segments (sentences, or token windows for
  long sentences) and gives a vector per segment together with its character span, so that a
  fusion model can attend over the note and point back at the evidence.

Encoders are registered by a short ``name`` (see :mod:`text_encoder.registry`); a saved model
stores :meth:`TextEncoder.get_config` (registry name and constructor arguments), never an import path.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = ["Segments", "TextEncoder"]


@dataclass
class Segments:
    """The segments of one text and their vectors.

    Attributes:
        texts: the segment strings, ``texts[i] == text[spans[i][0]:spans[i][1]]``.
        spans: ``(start, end)`` character offsets of each segment in the original text.
        vectors: one pooled vector per segment.

    Shapes:
        vectors: ``(s, dim)`` with ``s == len(texts) == len(spans)``.
    """

    texts: list[str]
    spans: list[tuple[int, int]]
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.spans) == self.vectors.shape[0]):
            raise ValueError(
                f"Segments: {len(self.texts)} texts, {len(self.spans)} spans and "
                f"{self.vectors.shape[0]} vectors: expected the same number of each"
            )

    def __len__(self) -> int:
        return len(self.texts)


class TextEncoder(torch.nn.Module, ABC):
    """Abstract text encoder: texts in, pooled vectors and segment vectors out.

    Subclasses set the class attribute :attr:`name` (their registry name), expose :attr:`dim`
    and implement :meth:`encode`, :meth:`encode_segments` and :meth:`get_config`.

    Attributes:
        name: the registry name (e.g. ``"hf"``).
        dim: the size of the vectors the encoder returns.
    """

    name: ClassVar[str]
    dim: int

    @abstractmethod
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> torch.Tensor:
        """Encode texts into one pooled, L2-normalised vector each.

        Args:
            texts: the texts (a list, not a single string).
            batch_size: texts per forward pass (the encoder's default when ``None``).
            show_progress_bar: ``None`` shows a bar only when stderr is a terminal and logging is
                at INFO or below.

        Returns:
            The vectors, row ``i`` for ``texts[i]``.

        Shapes:
            output: ``(len(texts), dim)``.
        """

    @abstractmethod
    def encode_segments(self, text: str) -> Segments:
        """Cut one text into segments and encode them in one batch.

        Args:
            text: the note.

        Returns:
            The segment strings, their character spans in ``text`` and their vectors.

        Shapes:
            vectors: ``(s, dim)`` for ``s`` segments (``s == 0`` for a blank text).
        """

    def encode_segments_many(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[Segments]:
        """Segment and encode several notes (subclasses may batch across notes).

        Args:
            texts: the notes.
            batch_size: segments per forward pass where the subclass batches across notes.
            show_progress_bar: as in :meth:`encode`.

        Returns:
            One :class:`Segments` per note.
        """
        return [self.encode_segments(t) for t in texts]

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The registry name and constructor arguments that rebuild this encoder.

        Returns:
            ``{"name": <registry name>, "kwargs": {...}}``, JSON-serialisable, no import paths.
            Rebuild with :func:`text_encoder.registry.text_encoder_from_config`.
        """

    def quantized(self) -> TextEncoder:
        """An int8 version of this encoder for inference (dynamic quantization), if it has one.

        The returned encoder shares the tokenizer and segmentation; only its matrix products run in
        int8, so its vectors are close to, not equal to, this encoder's. It is never used to fill
        the embedding cache.

        Returns:
            The int8 encoder (built once and reused).

        Raises:
            ValueError: this encoder has no int8 version.
        """
        raise ValueError(f"text encoder {self.name!r} has no int8 version: use inference_dtype fp32 or auto")

    def onnx_runtime(self, *, int8: bool, cache_dir: str | os.PathLike[str]) -> TextEncoder:
        """A version of this encoder that runs in ONNX Runtime for inference, if it has one.

        Same tokenizer, segmentation and pooling; the transformer is exported once to ``cache_dir``
        (fp32, or int8 matrix products). Never used to fill the embedding cache.

        Args:
            int8: dynamically quantized matrix products instead of fp32.
            cache_dir: where exports are kept, keyed by :meth:`fingerprint`.

        Returns:
            The ONNX Runtime encoder (built once and reused).

        Raises:
            ValueError: this encoder has no ONNX version, or onnxruntime is missing.
        """
        raise ValueError(
            f"text encoder {self.name!r} has no ONNX Runtime version: use inference_backend torch"
        )

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the vectors this encoder produces (used as a cache key).

        The default is :meth:`get_config`; encoders with weights on disk add their identity.

        Returns:
            A JSON-serialisable dict: equal fingerprints mean equal vectors for equal texts.
        """
        return self.get_config()

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
