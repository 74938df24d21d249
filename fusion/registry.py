"""Registry of fusion heads: configs store these names, never import paths."""

from __future__ import annotations

from fusion.base import Fusion
from ontologies.registry import Registry

__all__ = ["fusion_registry"]

fusion_registry: Registry[Fusion] = Registry("fusion head", Fusion)
