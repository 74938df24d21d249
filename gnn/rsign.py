"""Relation-aware SIGN over the KG (registry name ``"rsign"``): the coder's default graph encoder."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gnn.base import GraphEncoder
from gnn.registry import gnn_registry

__all__ = ["DEFAULT_OPERATORS", "RelationalSIGN"]


#: Default propagation operators of :class:`RelationalSIGN`: each is a path of relation groups,
#: applied left to right (``["is_a", "rev_is_a"]``: children's mean at the parent, then the
#: parents' value at the child = the siblings). Edges ``src -> dst`` aggregate at ``dst``
#: (PyG's convention), so ``rev_is_a`` brings a node its parents and ``is_a`` its children.
DEFAULT_OPERATORS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("rev_is_a",),),
    (("rev_is_a",), ("rev_is_a",)),
    (("is_a",),),
    (("is_a",), ("rev_is_a",)),
    (("excludes1", "excludes2", "rev_excludes1", "rev_excludes2"),),
    (("code_first", "use_additional", "code_also", "rev_code_first", "rev_use_additional",
      "rev_code_also"),),
    (("gem_equivalent", "rev_gem_equivalent"),),
    (("xref", "rev_xref", "equivalent", "rev_equivalent"),),
    (("xref", "rev_xref", "equivalent", "rev_equivalent"), ("xref", "rev_xref", "equivalent",
                                                             "rev_equivalent")),
)  # fmt: skip


@gnn_registry.register
class RelationalSIGN(GraphEncoder):
    """Relation-aware SIGN (Frasca et al. 2020): fixed typed propagations, learned combination.

    For each operator ``k`` (a path of relation groups, see :data:`DEFAULT_OPERATORS`) the node
    features are averaged along the path, over neighbours that have features (a SNOMED CT id has
    an empty text and a zero vector: it is skipped, not averaged in as zero). The output is
    ``x W_0 + sum_k h_k W_k + b`` with ``W_0`` starting as the identity and every ``W_k`` at zero,
    so an untrained encoder returns the text vectors unchanged and training moves away from them.

    Why SIGN rather than R-GCN on this 2-core machine: the propagations do not depend on the
    weights, so they are computed once per KG (:meth:`propagate`) and a training step costs only
    ``(K + 1)`` small matrix products for the codes in the batch, instead of message passing over
    the 180,000-node graph at every step. It is relation-aware (one operator per relation group
    and path) and, being linear, equivalent to a one-layer R-GCN with fixed multi-hop aggregation.

    Args:
        in_dim: node feature size.
        relation_names: the relation vocabulary (``edge_type`` ids index it), as in
            :func:`kg.pyg.to_homogeneous` with ``reverse=True``.
        out_dim: output size (default ``in_dim``).
        operators: propagation paths; relation names absent from ``relation_names`` are ignored.
        dropout: dropout on the propagated features during training.
    """

    name = "rsign"

    def __init__(
        self,
        in_dim: int,
        relation_names: Sequence[str],
        out_dim: int | None = None,
        operators: Sequence[Sequence[Sequence[str]]] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim or in_dim)
        self.relation_names = list(relation_names)
        ops = DEFAULT_OPERATORS if operators is None else operators
        self.operators = [[list(group) for group in path] for path in ops]
        self.dropout_p = float(dropout)
        self.self_loop = nn.Linear(self.in_dim, self.out_dim)
        self.hops = nn.ModuleList(nn.Linear(self.in_dim, self.out_dim, bias=False) for _ in self.operators)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @property
    def num_operators(self) -> int:
        """Number of propagated feature sets (the self features not counted)."""
        return len(self.operators)

    def reset_parameters(self) -> None:
        """Identity on the node's own features, zero on the neighbours'."""
        with torch.no_grad():
            w = torch.zeros(self.out_dim, self.in_dim)
            n = min(self.in_dim, self.out_dim)
            w[:n, :n] = torch.eye(n)
            self.self_loop.weight.copy_(w)
            self.self_loop.bias.zero_()
            for lin in self.hops:
                lin.weight.zero_()

    def _adjacency(
        self, group: Sequence[str], edge_index: Tensor, edge_type: Tensor | None, n: int
    ) -> Tensor:
        ids = [i for i, r in enumerate(self.relation_names) if r in set(group)]
        if edge_type is None or not ids:
            keep = torch.zeros(edge_index.shape[1], dtype=torch.bool) if ids == [] else None
        else:
            keep = torch.isin(edge_type, torch.tensor(ids, dtype=edge_type.dtype))
        ei = edge_index if keep is None else edge_index[:, keep]
        values = torch.ones(ei.shape[1])
        # aggregate at dst from src: row = dst, column = src
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            coo = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), values, (n, n), check_invariants=False)
            return coo.coalesce().to_sparse_csr()

    @torch.no_grad()
    def propagate(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor | None = None,
        rows: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The propagated features (no learnable parameter is involved: compute once per KG).

        Args:
            x: node features (zero rows for nodes without features).
            edge_index: edges ``src -> dst``.
            edge_type: relation id of each edge.
            rows: keep only these nodes (e.g. the label codes); all when ``None``.
            dtype: storage type of the result (``torch.float16`` halves the memory).

        Returns:
            One feature matrix per operator.

        Shapes:
            x: ``(n, in_dim)``; output: ``(num_operators, len(rows) or n, in_dim)``.
        """
        n = x.shape[0]
        has = (x.abs().sum(-1) > 0).float()[:, None]
        cache: dict[tuple[str, ...], Tensor] = {}
        out = []
        for path in self.operators:
            h, m = x.float(), has
            for group in path:
                key = tuple(sorted(group))
                adj = cache.get(key)
                if adj is None:
                    adj = cache[key] = self._adjacency(group, edge_index, edge_type, n)
                num = adj @ (h * m)
                den = adj @ m
                h = num / den.clamp(min=1e-9)
                m = (den > 0).float()
            h = h * m
            out.append((h if rows is None else h[rows]).to(dtype))
        return torch.stack(out) if out else torch.zeros(0, n if rows is None else len(rows), self.in_dim)

    def combine(self, x: Tensor, propagated: Tensor) -> Tensor:
        """Learned combination of a node's own and propagated features.

        Shapes:
            x: ``(c, in_dim)``; propagated: ``(num_operators, c, in_dim)``; output: ``(c, out_dim)``.
        """
        out = self.self_loop(x)
        for k, lin in enumerate(self.hops):
            out = out + lin(self.dropout(propagated[k].to(x.dtype)))
        return out

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        """Node embeddings for every node (see :class:`gnn.base.GraphEncoder`).

        Shapes:
            x: ``(n, in_dim)``; edge_index: ``(2, e)``; edge_type: ``(e,)``; output: ``(n, out_dim)``.
        """
        return self.combine(x, self.propagate(x, edge_index, edge_type))

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments."""
        return {
            "name": self.name,
            "kwargs": {
                "in_dim": self.in_dim,
                "relation_names": self.relation_names,
                "out_dim": self.out_dim,
                "operators": self.operators,
                "dropout": self.dropout_p,
            },
        }
