"""PyTorch Geometric export of the knowledge graph, with a stable node index.

:class:`NodeIndex` maps node ids to rows: one global row (for the homogeneous export) and one
row within the node's system (for the heterogeneous export). The order is deterministic (sorted
by system, then id) and can be saved; pass a saved index back to the export functions and every
node keeps its row, so a trained GNN keeps its embeddings when nodes are added (new nodes get
new rows at the end).

Node types of the heterogeneous export are the code systems present (``ICD10CM``, ``ICD9CM``,
``DOID``, ``MONDO``, ``SCTID``, ``MESH``, ``OMIM``); edge types are ``(src_system, relation,
dst_system)``. With ``reverse=True`` each edge type also gets its reverse, named
``rev_<relation>`` (as :class:`torch_geometric.transforms.ToUndirected` names them), since
message passing wants both directions.

``torch`` and ``torch_geometric`` are imported inside the export functions only: importing this
module (and :mod:`kg`) stays light.

Example:
    >>> data, index = to_homogeneous(kg, reverse=True)  # doctest: +SKIP
    >>> index.save("model/node_index.json")  # doctest: +SKIP
    >>> index = NodeIndex.load("model/node_index.json")  # doctest: +SKIP
    >>> data, index = to_homogeneous(kg2, node_index=index)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kg.errors import KGFormatError
from ontologies.base import RELATIONS
from ontologies.codes import SYSTEMS

if TYPE_CHECKING:
    from torch_geometric.data import Data, HeteroData

    from kg.graph import KnowledgeGraph

__all__ = ["REVERSE_PREFIX", "NodeIndex", "relation_vocabulary", "to_hetero_data", "to_homogeneous"]

logger = logging.getLogger(__name__)

#: Prefix of the reverse relation names added by ``reverse=True``.
REVERSE_PREFIX = "rev_"


def _system_of(node_id: str) -> str:
    system, sep, _ = node_id.partition(":")
    if not sep:
        raise ValueError(f"{node_id!r} is not a system-qualified id such as ICD10CM:E11.9")
    return system


class NodeIndex:
    """A stable mapping between node ids and tensor rows.

    Global rows (homogeneous export) follow the order of ``ids``; per-system rows
    (heterogeneous export) follow the same order restricted to one system.

    Args:
        ids: system-qualified node ids in row order, without duplicates.

    Raises:
        ValueError: an id is repeated or has no system prefix.

    Example:
        >>> index = NodeIndex(["DOID:9352", "ICD10CM:E11", "ICD10CM:E11.9"])
        >>> index.row("ICD10CM:E11.9"), index.local_row("ICD10CM:E11.9")
        (2, 1)
        >>> index.extend(["ICD10CM:E10"]).row("ICD10CM:E10")
        3
    """

    FORMAT = "kgcode-node-index"
    FORMAT_VERSION = 1

    def __init__(self, ids: Iterable[str]) -> None:
        self._ids: list[str] = list(ids)
        self._row: dict[str, int] = dict(zip(self._ids, range(len(self._ids)), strict=True))
        if len(self._row) != len(self._ids):
            seen: set[str] = set()
            for node_id in self._ids:
                if node_id in seen:
                    raise ValueError(f"node id {node_id!r} appears twice in the node index")
                seen.add(node_id)
        self._by_system: dict[str, list[str]] = {}
        for node_id in self._ids:
            system, sep, _ = node_id.partition(":")
            members = self._by_system.get(system)
            if members is None:
                if not sep:
                    raise ValueError(f"{node_id!r} is not a system-qualified id such as ICD10CM:E11.9")
                members = self._by_system[system] = []
            members.append(node_id)
        self._local: dict[str, int] = {}
        for members in self._by_system.values():
            self._local.update(zip(members, range(len(members)), strict=True))

    @classmethod
    def from_kg(cls, kg: KnowledgeGraph) -> NodeIndex:
        """The canonical index of a graph: every node, sorted by system, then id."""
        return cls(sorted(kg.graph._node, key=lambda n: (_system_of(n), n)))

    def extend(self, ids: Iterable[str]) -> NodeIndex:
        """A new index with the ids not yet indexed appended (sorted by system, then id).

        Existing ids keep their global and per-system rows.
        """
        new = sorted({i for i in ids if i not in self._row}, key=lambda n: (_system_of(n), n))
        return NodeIndex([*self._ids, *new]) if new else self

    @property
    def ids(self) -> list[str]:
        """All ids in global row order (a copy)."""
        return list(self._ids)

    @property
    def systems(self) -> list[str]:
        """The systems indexed, in the order of their first row."""
        return list(self._by_system)

    def type_ids(self, system: str) -> list[str]:
        """The ids of one system in per-system row order (a copy; empty when none)."""
        return list(self._by_system.get(system, ()))

    def num_nodes(self, system: str | None = None) -> int:
        """Number of rows, overall or of one system."""
        return len(self._ids) if system is None else len(self._by_system.get(system, ()))

    def row(self, node_id: str) -> int:
        """Global row of an id (``KeyError`` when not indexed)."""
        return self._row[node_id]

    def rows(self, node_ids: Iterable[str]) -> list[int]:
        """Global rows of many ids."""
        row = self._row
        return [row[n] for n in node_ids]

    def local_row(self, node_id: str) -> int:
        """Row of an id among the ids of its system (``KeyError`` when not indexed)."""
        return self._local[node_id]

    def id_at(self, row: int, system: str | None = None) -> str:
        """The id at a global row, or at a per-system row when ``system`` is given."""
        return self._ids[row] if system is None else self._by_system[system][row]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._row

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeIndex) and self._ids == other._ids

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        per = ", ".join(f"{s}={len(v)}" for s, v in self._by_system.items())
        return f"NodeIndex({len(self._ids)} ids: {per})"

    def save(self, path: str | Path) -> Path:
        """Write the index as JSON (``{"format", "format_version", "ids"}``), atomically.

        Args:
            path: the JSON file.

        Returns:
            The file.
        """
        from kg.store import write_json_atomic

        path = Path(path)
        write_json_atomic(
            path, {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, "ids": self._ids}
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> NodeIndex:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            KGFormatError: the file is not a node index of this format version.
        """
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KGFormatError(path, f"not a readable JSON node index: {exc}") from None
        if not isinstance(obj, dict) or obj.get("format") != cls.FORMAT:
            raise KGFormatError(path, f"not a node index (format {cls.FORMAT!r} expected)")
        if obj.get("format_version") != cls.FORMAT_VERSION:
            raise KGFormatError(
                path,
                f"node index format version {obj.get('format_version')}, this kgcode reads "
                f"version {cls.FORMAT_VERSION}",
            )
        try:
            return cls(obj["ids"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KGFormatError(path, f"bad node index: {exc}") from None


def relation_vocabulary(kg: KnowledgeGraph, reverse: bool = False) -> list[str]:
    """Relation names in id order: :data:`ontologies.base.RELATIONS`, then any others sorted.

    The built-in relations always come first and in the same order, so relation ids do not
    change between graphs; with ``reverse`` the ``rev_`` names follow, in the same order.
    """
    present: set[str] = set()
    for nbrs in kg.graph._succ.values():
        for keydict in nbrs.values():
            present.update(keydict)
    return _vocabulary(present, reverse)


def _vocabulary(present: Iterable[str], reverse: bool) -> list[str]:
    names = [*RELATIONS, *sorted(set(present).difference(RELATIONS))]
    if reverse:
        names += [REVERSE_PREFIX + r for r in names]
    return names


def _index_for(kg: KnowledgeGraph, node_index: NodeIndex | None) -> NodeIndex:
    if node_index is None:
        return NodeIndex.from_kg(kg)
    missing = [n for n in kg.graph._node if n not in node_index]
    if missing:
        logger.info("node index: %d node(s) not indexed yet get new rows at the end", len(missing))
        node_index = node_index.extend(missing)
    stale = len(node_index) - len(kg.graph._node)
    if stale > 0:
        logger.warning("node index: %d indexed id(s) are not in the graph (rows without edges)", stale)
    return node_index


def _edge_rows(kg: KnowledgeGraph, row: dict[str, int]) -> tuple[list[int], list[int], list[int], list[str]]:
    """One pass over the edges: source rows, target rows, relation codes and the relation names."""
    from kg.graph import gc_paused

    codes: dict[str, int] = {}
    src_rows: list[int] = []
    dst_rows: list[int] = []
    types: list[int] = []
    with gc_paused():
        for src, nbrs in kg.graph._succ.items():
            r_src = row[src]
            for dst, keydict in nbrs.items():
                r_dst = row[dst]
                for rel in keydict:
                    code = codes.get(rel)
                    if code is None:
                        code = codes[rel] = len(codes)
                    src_rows.append(r_src)
                    dst_rows.append(r_dst)
                    types.append(code)
    return src_rows, dst_rows, types, list(codes)


def to_homogeneous(
    kg: KnowledgeGraph, node_index: NodeIndex | None = None, *, reverse: bool = False
) -> tuple[Data, NodeIndex]:
    """The graph as one homogeneous :class:`torch_geometric.data.Data` with typed edges.

    Args:
        kg: the graph.
        node_index: rows to use (e.g. the one a GNN was trained with); nodes it lacks get new
            rows at the end. Default: :meth:`NodeIndex.from_kg`.
        reverse: also add every edge reversed, with relation ``rev_<relation>``.

    Returns:
        ``(data, index)``: ``data`` has ``edge_index``, ``edge_type``, ``node_type``,
        ``num_nodes`` and the vocabularies ``relation_names`` (``edge_type`` ids: the
        built-in relations first, always in the same order) and ``system_names``
        (``node_type`` ids); ``index`` maps ids to rows (the one passed, or an extension of
        it). Edges are sorted by type, then source row, then target row.

    Shapes:
        - edge_index: ``(2, num_edges)``, long (``[src_row, dst_row]``)
        - edge_type: ``(num_edges,)``, long, index into ``relation_names``
        - node_type: ``(num_nodes,)``, long, index into ``system_names``
    """
    import numpy as np
    import torch
    from torch_geometric.data import Data

    index = _index_for(kg, node_index)
    src_rows, dst_rows, codes, present = _edge_rows(kg, index._row)
    relation_names = _vocabulary(present, reverse)
    rel_id = {r: i for i, r in enumerate(relation_names)}
    n_forward = len(relation_names) // 2 if reverse else len(relation_names)
    lookup = np.array([rel_id[r] for r in present] or [0], dtype=np.int64)
    src = np.array(src_rows, dtype=np.int64)
    dst = np.array(dst_rows, dtype=np.int64)
    etype = lookup[np.array(codes, dtype=np.int64)]
    if reverse:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        etype = np.concatenate([etype, etype + n_forward])
    order = np.lexsort((dst, src, etype))

    system_names = [*SYSTEMS, *sorted(set(index.systems).difference(SYSTEMS))]
    node_type = np.empty(len(index), dtype=np.int64)
    for i, system in enumerate(system_names):
        for node_id in index._by_system.get(system, ()):
            node_type[index._row[node_id]] = i
    data = Data(
        edge_index=torch.from_numpy(np.stack([src[order], dst[order]])),
        edge_type=torch.from_numpy(etype[order]),
        node_type=torch.from_numpy(node_type),
        num_nodes=len(index),
    )
    data.relation_names = relation_names
    data.system_names = system_names
    return data, index


def to_hetero_data(
    kg: KnowledgeGraph, node_index: NodeIndex | None = None, *, reverse: bool = False
) -> tuple[HeteroData, NodeIndex]:
    """The graph as a :class:`torch_geometric.data.HeteroData`: one node type per code system.

    Args:
        kg: the graph.
        node_index: rows to use (per-system rows are taken from it); nodes it lacks get new
            rows at the end. Default: :meth:`NodeIndex.from_kg`.
        reverse: also add every edge type reversed, as ``(dst_system, "rev_<relation>",
            src_system)``.

    Returns:
        ``(data, index)``: node types are the systems with at least one indexed node (each
        with ``num_nodes``); edge types ``(src_system, relation, dst_system)``, sorted, with
        ``edge_index`` in per-system rows, sorted by source row, then target row.

    Shapes:
        - data[system].num_nodes: ``index.num_nodes(system)``
        - data[(src_system, relation, dst_system)].edge_index: ``(2, num_edges_of_type)``, long
    """
    import numpy as np
    import torch
    from torch_geometric.data import HeteroData

    from kg.graph import gc_paused

    index = _index_for(kg, node_index)
    local = index._local
    nodes = kg.graph._node
    groups: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}
    with gc_paused():
        for src, nbrs in kg.graph._succ.items():
            s_sys = nodes[src]["system"]
            r_src = local[src]
            for dst, keydict in nbrs.items():
                d_sys = nodes[dst]["system"]
                r_dst = local[dst]
                for rel in keydict:
                    pair = groups.get((s_sys, rel, d_sys))
                    if pair is None:
                        pair = groups[s_sys, rel, d_sys] = ([], [])
                    pair[0].append(r_src)
                    pair[1].append(r_dst)

    data = HeteroData()
    for system in index.systems:
        data[system].num_nodes = index.num_nodes(system)
    for (s_sys, rel, d_sys), (srcs, dsts) in sorted(groups.items()):
        s = np.array(srcs, dtype=np.int64)
        d = np.array(dsts, dtype=np.int64)
        order = np.lexsort((d, s))
        data[s_sys, rel, d_sys].edge_index = torch.from_numpy(np.stack([s[order], d[order]]))
        if reverse:
            order = np.lexsort((s, d))
            data[d_sys, REVERSE_PREFIX + rel, s_sys].edge_index = torch.from_numpy(
                np.stack([d[order], s[order]])
            )
    return data, index
