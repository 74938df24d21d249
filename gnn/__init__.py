"""Graph encoders over the knowledge graph (PyTorch Geometric).

Only the contract and its registry exist so far; encoders register with
``@gnn_registry.register``.
"""

from gnn.base import GraphEncoder
from gnn.registry import gnn_registry

__all__ = ["GraphEncoder", "gnn_registry"]
