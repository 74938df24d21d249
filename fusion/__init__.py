"""Fusion heads: score codes for a note from code embeddings and the note's segment states.

Only the contract and its registry exist so far; heads register with
``@fusion_registry.register``.
"""

from fusion.base import Fusion
from fusion.registry import fusion_registry

__all__ = ["Fusion", "fusion_registry"]
