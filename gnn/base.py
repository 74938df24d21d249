"""The contract every graph encoder follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["GraphEncoder"]


class GraphEncoder(nn.Module, ABC):
    """Encodes the nodes of the KG's homogeneous PyG export.

    Subclasses set :attr:`name` (registry name) and keep every constructor argument in
    :meth:`get_config` so a saved model can be rebuilt from its ``config.json``.
    """

    name: ClassVar[str]

    @abstractmethod
    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        """Node embeddings.

        Args:
            x: input node features.
            edge_index: edges ``src -> dst``.
            edge_type: relation id of each edge (``None`` for relation-blind encoders).

        Returns:
            Node embeddings.

        Shapes:
            - x: ``(num_nodes, in_dim)``
            - edge_index: ``(2, num_edges)``, long
            - edge_type: ``(num_edges,)``, long
            - output: ``(num_nodes, out_dim)``
        """

    @abstractmethod
    def reset_parameters(self) -> None:
        """Re-initialise every learnable parameter."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments (JSON-ready)."""

    @torch.no_grad()
    def num_parameters(self) -> int:
        """Number of learnable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
