"""Fusion heads: score codes for a note from code embeddings and the note's segment states.

The :class:`Fusion` contract and its registry; importing the package registers the built-in
heads of :mod:`fusion.label_attention`: ``"zero_shot"``, ``"label_attention"`` and
``"hybrid_label_attention"`` (the coder's default).
"""

from fusion.base import Fusion
from fusion.label_attention import HybridLabelAttention, LabelAttentionFusion, ZeroShotFusion
from fusion.registry import fusion_registry

__all__ = ["Fusion", "HybridLabelAttention", "LabelAttentionFusion", "ZeroShotFusion", "fusion_registry"]
