"""Registry of graph encoders: configs store these names, never import paths."""

from __future__ import annotations

from gnn.base import GraphEncoder
from ontologies.registry import Registry

__all__ = ["gnn_registry"]

gnn_registry: Registry[GraphEncoder] = Registry("graph encoder", GraphEncoder)
