"""The contract every fusion head follows: score codes for a note."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Fusion"]


class Fusion(nn.Module, ABC):
    """Scores candidate codes for notes from code embeddings and note segment states.

    Code embeddings act as queries over a note's segments, so the head is defined for every
    code, including codes never seen in training; the attention weights are the evidence.
    """

    name: ClassVar[str]

    @abstractmethod
    def forward(
        self, segments: Tensor, segment_mask: Tensor, codes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Score codes for each note.

        Args:
            segments: segment (sentence or window) states of each note.
            segment_mask: which segments are real (True) and which are padding.
            codes: embeddings of the candidate codes.

        Returns:
            ``(logits, attention)``: one score per note and code, and the attention of each
            code over the note's segments (the evidence).

        Shapes:
            - segments: ``(batch, num_segments, dim)``
            - segment_mask: ``(batch, num_segments)``, bool
            - codes: ``(num_codes, dim)``
            - logits: ``(batch, num_codes)``
            - attention: ``(batch, num_codes, num_segments)``
        """

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments (JSON-ready)."""
