"""Graph encoders over the knowledge graph (PyTorch Geometric exports of :mod:`kg.pyg`).

The :class:`GraphEncoder` contract and its registry; importing the package registers the built-in
encoders: ``"rsign"`` (relation-aware SIGN, the coder's default) and ``"rgcn"`` (R-GCN, the SNOMED
CT link predictor's).
"""

from gnn.base import GraphEncoder
from gnn.registry import gnn_registry
from gnn.rgcn import RGCNEncoder
from gnn.rsign import DEFAULT_OPERATORS, RelationalSIGN

__all__ = ["DEFAULT_OPERATORS", "GraphEncoder", "RGCNEncoder", "RelationalSIGN", "gnn_registry"]
