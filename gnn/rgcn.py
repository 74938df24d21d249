"""Relational GCN encoder (Schlichtkrull et al. 2018) over the KG's homogeneous export.

Why R-GCN for the KG: the graph has few relation types (``is_a``, ``gem_equivalent``, ``xref``,
``equivalent``, the tabular-list notes, and their reverses) that mean very different things
(a GEM edge says "same disease in another code system", ``is_a`` "broader", an Excludes1 note
"not this"), so each gets its own weight matrix; basis decomposition shares parameters among them
so rare relations (``code_also``: ~900 edges) do not overfit. Mean aggregation per relation keeps
high-degree hubs (an ICD-9 code that GEMs to 60 ICD-10 codes) from drowning the others.

Layout (pre-norm residual blocks, as in deep GNN practice, so depth does not wash out the text):

.. code-block:: text

    x (text features) -> Linear -> h0
    h_{l+1} = h_l + Dropout(GELU(RGCNConv_l(LayerNorm(h_l))))
    out = Linear(LayerNorm(h_L))

Example:
    >>> enc = RGCNEncoder(in_dim=384, num_relations=10, hidden_dim=64, out_dim=64)  # doctest: +SKIP
    >>> z = enc(x, data.edge_index, data.edge_type)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn.base import GraphEncoder
from gnn.registry import gnn_registry

__all__ = ["RGCNEncoder", "SparseRGCNConv"]


class SparseRGCNConv(nn.Module):
    """The R-GCN layer of :class:`torch_geometric.nn.RGCNConv`, computed with per-relation sparse matrices.

    Same parameters (``weight``, ``comp``, ``root``, ``bias``, same names and shapes) and the same
    function as ``RGCNConv(in_dim, out_dim, num_relations, num_bases=..., aggr="mean"|"sum")``
    (a test checks that both give the same output from the same state_dict), but much faster on
    CPU for large graphs: ``RGCNConv`` multiplies *every* node's state by every relation's
    weight and masks the edge list once per relation on each call, while this layer builds, once
    per graph, one sparse ``(targets_r, num_nodes)`` averaging matrix per relation and computes
    ``out[targets_r] += (A_r @ x) @ W_r`` for the targets of relation ``r`` only. On the
    163,000-node predictor subgraph (10 relations, 64 dims) that is ~50x faster.

    Args:
        in_channels: input size.
        out_channels: output size.
        num_relations: number of relation ids.
        num_bases: bases of the basis decomposition (``None``: a full matrix per relation).
        aggr: ``"mean"`` or ``"sum"`` per relation.
        bias: add a learnable bias.

    Shapes:
        - x: ``(num_nodes, in_channels)``
        - edge_index: ``(2, num_edges)``; edge_type: ``(num_edges,)``
        - output: ``(num_nodes, out_channels)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_relations: int,
        num_bases: int | None = None,
        aggr: str = "mean",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if aggr not in ("mean", "sum", "add"):
            raise ValueError(f"SparseRGCNConv supports aggr 'mean' or 'sum', not {aggr!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_relations = num_relations
        self.num_bases = num_bases
        self.aggr = aggr
        if num_bases is not None:
            self.weight = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
            self.comp = nn.Parameter(torch.empty(num_relations, num_bases))
        else:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, out_channels))
            self.register_parameter("comp", None)
        self.root = nn.Parameter(torch.empty(in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._cache_key: tuple[Any, ...] | None = None
        self._cache: list[tuple[int, Tensor, Tensor]] = []
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights, zero bias (as ``RGCNConv``)."""
        from torch_geometric.nn.inits import glorot, zeros

        glorot(self.weight)
        if self.comp is not None:
            glorot(self.comp)
        glorot(self.root)
        if self.bias is not None:
            zeros(self.bias)

    def _adjacency(
        self, edge_index: Tensor, edge_type: Tensor, num_nodes: int
    ) -> list[tuple[int, Tensor, Tensor]]:
        n_e = edge_index.size(1)
        probe = (
            (int(edge_index[:, : min(8, n_e)].sum()), int(edge_index[:, max(0, n_e - 8) :].sum()))
            if n_e
            else ()
        )
        key = (edge_index.data_ptr(), n_e, edge_type.data_ptr(), num_nodes, probe, edge_index.device)
        if key == self._cache_key:
            return self._cache
        out: list[tuple[int, Tensor, Tensor]] = []
        for r in range(self.num_relations):
            mask = edge_type == r
            if not bool(mask.any()):
                continue
            src, dst = edge_index[0, mask], edge_index[1, mask]
            targets, local = torch.unique(dst, return_inverse=True)
            if self.aggr == "mean":
                deg = torch.bincount(local, minlength=targets.numel()).to(torch.float32)
                values = 1.0 / deg[local]
            else:
                values = torch.ones(src.numel())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                adj = (
                    torch.sparse_coo_tensor(
                        torch.stack([local, src]),
                        values.to(edge_index.device),
                        (targets.numel(), num_nodes),
                        check_invariants=False,
                    )
                    .coalesce()
                    .to_sparse_csr()
                )
            out.append((r, targets, adj))
        self._cache_key, self._cache = key, out
        return out

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        """Relation-wise aggregation plus the root transform (see the class docstring)."""
        weight = self.weight
        if self.comp is not None:
            weight = (self.comp @ weight.view(self.num_bases, -1)).view(
                self.num_relations, self.in_channels, self.out_channels
            )
        out = x @ self.root
        if self.bias is not None:
            out = out + self.bias
        for r, targets, adj in self._adjacency(edge_index, edge_type, x.size(0)):
            agg = adj.to(x.dtype) @ x
            out = out.index_add(0, targets, agg @ weight[r])
        return out


@gnn_registry.register
class RGCNEncoder(GraphEncoder):
    """R-GCN with an input projection from text features, residual connections and layer norm.

    Args:
        in_dim: size of the input node features (e.g. 384 for MiniLM text embeddings).
        num_relations: number of relation ids in ``edge_type`` (with reverses, if the export
            added them).
        hidden_dim: size of the hidden states.
        out_dim: size of the output embeddings (default: ``hidden_dim``).
        num_layers: number of R-GCN layers (0: the input projection and output head only).
        num_bases: bases of the basis decomposition (``None``: one full matrix per relation).
        dropout: dropout on the input features and after each layer.
        aggr: neighbourhood aggregation per relation (``"mean"``, ``"sum"``, ``"max"``).
        conv: ``"sparse"`` (:class:`SparseRGCNConv`: the same layer as ``RGCNConv``, computed
            with cached per-relation sparse matrices; the fast choice on CPU), ``"rgcn"``
            (:class:`torch_geometric.nn.RGCNConv`) or ``"fast"``
            (:class:`~torch_geometric.nn.FastRGCNConv`, one weight matrix gathered per edge:
            only for small graphs, it needs ``num_edges * hidden_dim**2`` floats).

    Shapes:
        - x: ``(num_nodes, in_dim)``
        - edge_index: ``(2, num_edges)``
        - edge_type: ``(num_edges,)``, values in ``[0, num_relations)``
        - output: ``(num_nodes, out_dim)``
    """

    name = "rgcn"

    def __init__(
        self,
        in_dim: int,
        num_relations: int,
        hidden_dim: int = 128,
        out_dim: int | None = None,
        num_layers: int = 2,
        num_bases: int | None = 4,
        dropout: float = 0.1,
        aggr: str = "mean",
        conv: Literal["sparse", "rgcn", "fast"] = "sparse",
    ) -> None:
        super().__init__()
        from torch_geometric.nn import FastRGCNConv, RGCNConv

        if in_dim < 1 or hidden_dim < 1 or num_relations < 1 or num_layers < 0:
            raise ValueError(
                f"bad sizes: in_dim={in_dim}, hidden_dim={hidden_dim}, num_relations={num_relations}, "
                f"num_layers={num_layers}"
            )
        if conv not in ("sparse", "rgcn", "fast"):
            raise ValueError(f"unknown conv {conv!r}: expected 'sparse', 'rgcn' or 'fast'")
        if num_bases is not None and not 1 <= num_bases <= num_relations:
            num_bases = min(max(1, num_bases), num_relations)
        self.in_dim = in_dim
        self.num_relations = num_relations
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim or hidden_dim
        self.num_layers = num_layers
        self.num_bases = num_bases
        self.dropout = dropout
        self.aggr = aggr
        self.conv = conv
        conv_cls = {"sparse": SparseRGCNConv, "rgcn": RGCNConv, "fast": FastRGCNConv}[conv]
        self.input = nn.Linear(in_dim, hidden_dim)
        self.convs = nn.ModuleList(
            conv_cls(hidden_dim, hidden_dim, num_relations, num_bases=num_bases, aggr=aggr)
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.output = nn.Linear(hidden_dim, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every learnable parameter."""
        self.input.reset_parameters()
        for conv, norm in zip(self.convs, self.norms, strict=True):
            conv.reset_parameters()
            norm.reset_parameters()
        self.out_norm.reset_parameters()
        self.output.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor | None = None) -> Tensor:
        """Node embeddings (see the class docstring for shapes).

        Args:
            x: input node features.
            edge_index: edges ``src -> dst`` (messages flow from ``src`` to ``dst``).
            edge_type: relation id per edge (required).

        Returns:
            The node embeddings.

        Raises:
            ValueError: ``edge_type`` is missing or does not match ``edge_index``.
        """
        if edge_type is None:
            raise ValueError("RGCNEncoder needs edge_type (one relation id per edge)")
        if edge_type.numel() != edge_index.size(1):
            raise ValueError(f"{edge_type.numel()} edge types for {edge_index.size(1)} edges")
        h = self.input(F.dropout(x, self.dropout, self.training))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            msg = conv(norm(h), edge_index, edge_type)
            h = h + F.dropout(F.gelu(msg), self.dropout, self.training)
        return self.output(self.out_norm(h))

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments (JSON-ready)."""
        return {
            "name": self.name,
            "in_dim": self.in_dim,
            "num_relations": self.num_relations,
            "hidden_dim": self.hidden_dim,
            "out_dim": self.out_dim,
            "num_layers": self.num_layers,
            "num_bases": self.num_bases,
            "dropout": self.dropout,
            "aggr": self.aggr,
            "conv": self.conv,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RGCNEncoder:
        """Rebuild from :meth:`get_config` (the ``name`` key is ignored)."""
        kwargs = {k: v for k, v in config.items() if k != "name"}
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}, "
            f"relations={self.num_relations}, layers={self.num_layers}, bases={self.num_bases}"
        )
