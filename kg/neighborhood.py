"""The part of the knowledge graph around one or more codes, as a view to draw.

:func:`neighborhood` picks the nodes and edges that ``kgcode viz`` draws and ``GET
/codes/{code}/neighborhood`` returns; it is pure graph logic (no drawing, no pyvis; see
:mod:`kg.viz` for the page).

* **One code**: every node within ``hops`` edges of it, following the chosen relations in
  either direction, and the edges of those relations between the nodes kept.
* **Several codes**: their shared neighbourhood, the nodes on the shortest paths that join each
  pair of them (at most ``max_path`` edges, either direction), then their direct ``is_a``
  parents and children while there is room. Pairs that no such path joins are reported.

A view larger than ``max_nodes`` is cut by a rule stated in words in ``cut["rule"]`` (the page
shows it, with "n of N nodes shown"): never silently.

SNOMED CT nodes (``SCTID:...``) carry an identifier only: their ``title`` is always empty and
``via`` lists the DO/Mondo concepts whose ``xref`` names them.

Example:
    >>> from ontologies.base import Concept, Relation
    >>> from kg.graph import KnowledgeGraph
    >>> kg = KnowledgeGraph()
    >>> for code, title in [("E11", "Type 2 diabetes mellitus"), ("E11.9", "without complications")]:
    ...     kg.add_concept(Concept(f"ICD10CM:{code}", "ICD10CM", title))
    >>> kg.add_relation(Relation("ICD10CM:E11.9", "ICD10CM:E11", "is_a", "icd10cm"))
    >>> nb = neighborhood(kg, ["E11.9"], hops=1)
    >>> [(n["id"], n["hop"]) for n in nb.nodes]
    [('ICD10CM:E11.9', 0), ('ICD10CM:E11', 1)]
    >>> [(e["src"], e["relation"], e["dst"]) for e in nb.edges]
    [('ICD10CM:E11.9', 'is_a', 'ICD10CM:E11')]
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

from ontologies.base import RELATIONS

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph

__all__ = [
    "CROSS_LINKS",
    "HIERARCHY",
    "Neighborhood",
    "check_relations",
    "neighborhood",
]

logger = logging.getLogger(__name__)

#: The hierarchy relation: at equal distance its neighbours are kept before cross-links.
HIERARCHY = "is_a"

#: Every other relation (notes, GEMs, cross-references, equivalences).
CROSS_LINKS: tuple[str, ...] = tuple(r for r in RELATIONS if r != HIERARCHY)

#: Several codes: paths do not pass through a node linked to more nodes than this (a chapter,
#: or ``T88.7`` whose Excludes1 names most of the classification), since such a hub puts almost
#: any two codes a few edges apart.
HUB_DEGREE = 200

#: How many DO/Mondo concepts a SNOMED CT node's ``via`` lists at most.
_MAX_VIA = 8

_CROSS_WORDS = "excludes1/2, code first, use additional, code also, GEM, xref, equivalent"

Adjacency = dict[str, dict[str, dict[str, Any]]]


@dataclass
class Neighborhood:
    """A view of part of the KG: what to draw, and what was left out.

    Attributes:
        centers: the ids of the codes asked for, in the order given (duplicates dropped).
        nodes: one dict per node kept, centres first: ``id``, ``system``, ``title`` (empty for
            SNOMED CT ids), ``synonyms``, ``kind``, ``billable``, ``sources``, ``hop`` (edges
            from the nearest centre; ``None`` for an end of a predicted link the graph does
            not reach), ``is_center``, ``via`` (SNOMED CT ids: the DO/Mondo concepts whose
            ``xref`` names it; empty otherwise).
        edges: one dict per edge between kept nodes: ``src``, ``dst``, ``relation``,
            ``source``, ``attrs`` (provenance, note text), ``predicted`` (``True`` for the
            ``extra_edges`` given) and ``score`` (theirs; ``None`` for edges of the graph).
        cut: what was left out and why: ``rule`` (in words), ``applied``, ``max_nodes``,
            ``shown``, ``total``, ``dropped``, ``dropped_by_hop``, ``summary`` (one line),
            ``notes`` (e.g. "... are not connected within 4 hops") and, for several codes,
            ``max_path`` and ``unconnected`` (pairs of centres no path joins).
        total_nodes_before_cut: how many nodes the view had before the cut.
        hops: the ``hops`` asked for.
        relations: the relations followed.
    """

    centers: list[str]
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    cut: dict[str, Any]
    total_nodes_before_cut: int
    hops: int = 2
    relations: list[str] = field(default_factory=lambda: list(RELATIONS))

    def node_ids(self) -> list[str]:
        """The ids of the nodes kept, in order."""
        return [n["id"] for n in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the view."""
        return asdict(self)


def check_relations(relations: Iterable[str] | None) -> list[str]:
    """Validate relation names.

    Args:
        relations: relation names (``None``: all of them).

    Returns:
        The names, in the order of :data:`ontologies.base.RELATIONS`, without duplicates.

    Raises:
        ValueError: a name is not a relation of the KG (the message lists the valid ones).
    """
    if relations is None:
        return list(RELATIONS)
    wanted = [r.strip() for r in relations if r and r.strip()]
    unknown = sorted({r for r in wanted if r not in RELATIONS})
    if unknown:
        raise ValueError(f"unknown relation(s): {', '.join(unknown)} (valid: {', '.join(RELATIONS)})")
    if not wanted:
        raise ValueError(f"no relation given (valid: {', '.join(RELATIONS)})")
    chosen = set(wanted)
    return [r for r in RELATIONS if r in chosen]


def _neighbours(
    succ: Adjacency, pred: Adjacency, node: str, rels: frozenset[str]
) -> Iterator[tuple[str, bool]]:
    """``(neighbour, joined by is_a)`` for each neighbour through ``rels``, either direction."""
    hier = HIERARCHY in rels
    for adj in (succ, pred):
        for nbr, keys in adj[node].items():
            if nbr != node and not rels.isdisjoint(keys):
                yield nbr, hier and HIERARCHY in keys


def _bfs(
    succ: Adjacency,
    pred: Adjacency,
    start: str,
    rels: frozenset[str],
    limit: int,
    blocked: Collection[str] = (),
) -> tuple[dict[str, int], set[str]]:
    """Distances from ``start`` up to ``limit``, and the nodes joined by is_a to a nearer node.

    Nodes in ``blocked`` are reached but not gone through.
    """
    dist = {start: 0}
    hier: set[str] = set()
    frontier = [start]
    depth = 0
    while frontier and depth < limit:
        level: list[str] = []
        for u in frontier:
            if u in blocked and u != start:
                continue
            for v, by_is_a in _neighbours(succ, pred, u, rels):
                dv = dist.get(v)
                if dv is None:
                    dist[v] = depth + 1
                    level.append(v)
                    if by_is_a:
                        hier.add(v)
                elif by_is_a and dv == depth + 1:
                    hier.add(v)
        frontier = level
        depth += 1
    return dist, hier


def _one_path(
    succ: Adjacency, pred: Adjacency, a: str, b: str, dist_a: dict[str, int], dist_b: dict[str, int],
    rels: frozenset[str], blocked: Collection[str],
) -> list[str]:
    """One shortest path from ``a`` to ``b``: at each step the smallest id that stays on one."""
    total = dist_a[b]
    path = [a]
    node = a
    for step in range(1, total + 1):
        node = min(
            v
            for v, _ in _neighbours(succ, pred, node, rels)
            if dist_a.get(v) == step and dist_b.get(v) == total - step and (v == b or v not in blocked)
        )
        path.append(node)
    return path


def _components(nodes: Collection[str], edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A representative per node of the connected components (union-find)."""
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {n: find(n) for n in nodes}


def _node_record(
    nodes: Mapping[str, dict[str, Any]], pred: Adjacency, node_id: str, hop: int | None,
    is_center: bool, kept: Collection[str],
) -> dict[str, Any]:
    data = nodes[node_id]
    system = data.get("system") or node_id.partition(":")[0]
    snomed = system == "SCTID"
    via: list[str] = []
    if snomed:
        namers = sorted(u for u, keys in pred[node_id].items() if "xref" in keys)
        via = ([u for u in namers if u in kept] + [u for u in namers if u not in kept])[:_MAX_VIA]
    return {
        "id": node_id,
        "system": system,
        # SNOMED CT ids carry an identifier only, never a description.
        "title": "" if snomed else str(data.get("title") or ""),
        "synonyms": [] if snomed else [str(s) for s in data.get("synonyms") or ()],
        "kind": str(data.get("kind") or "concept"),
        "billable": bool(data.get("billable")),
        "sources": list(data.get("sources") or ()),
        "hop": hop,
        "is_center": is_center,
        "via": via,
    }


def _predicted(kg: KnowledgeGraph, extra_edges: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, edge in enumerate(extra_edges or ()):
        try:
            src, dst = edge["src"], edge["dst"]
        except KeyError as exc:
            raise ValueError(f"extra edge {i} lacks {exc.args[0]!r} (it needs src, dst, score)") from None
        score = edge.get("score")
        out.append(
            {
                "src": kg.resolve(str(src)),
                "dst": kg.resolve(str(dst)),
                "relation": str(edge.get("relation") or "predicted"),
                "source": str(edge.get("source") or "predicted"),
                "attrs": dict(edge.get("attrs") or {}),
                "predicted": True,
                "score": None if score is None else float(score),
            }
        )
    return out


def _single_rule(max_nodes: int, centre: str, pinned: bool, outer_edges: bool) -> str:
    keep = f"The centre ({centre})" + (" and the ends of predicted links are" if pinned else " is")
    edges = (
        "only edges between kept nodes are drawn"
        if outer_edges
        else "only edges between kept nodes are drawn, and none between two nodes of the outermost "
        "ring shown (they lead no nearer to the centre)"
    )
    return (
        f"At most {max_nodes} nodes: nearest first (fewest edges from the centre, either "
        f"direction); at equal distance, nodes joined by is_a (hierarchy) to a nearer node before "
        f"those joined only by cross-links ({_CROSS_WORDS}); then by id. {keep} always kept; "
        f"{edges}."
    )


def _shared_rule(max_nodes: int, max_path: int, hier: bool, pinned: bool, hub_degree: int | None) -> str:
    context = " then their direct is_a parents and children (by id) while there is room;" if hier else ""
    keep = "The centres" + (" and the ends of predicted links" if pinned else "")
    hubs = (
        f" Paths do not pass through hubs linked to more than {hub_degree} nodes (chapters, T88.7)."
        if hub_degree is not None
        else ""
    )
    return (
        f"Shared neighbourhood: the nodes on the shortest paths (at most {max_path} edges, either "
        f"direction) between each pair of centres, closest pairs first (one path per pair instead of "
        f"all of them when all do not fit);{context} at most {max_nodes} nodes.{hubs} {keep} are "
        f"always kept; only edges between kept nodes are drawn."
    )


def neighborhood(
    kg: KnowledgeGraph,
    codes: list[str] | str,
    *,
    hops: int = 2,
    relations: Iterable[str] | None = None,
    max_nodes: int = 150,
    extra_edges: Iterable[Mapping[str, Any]] | None = None,
    max_path: int | None = None,
    hub_degree: int | None = HUB_DEGREE,
    outer_edges: bool = False,
    system: str | None = None,
) -> Neighborhood:
    """The view around one code, or the shared neighbourhood of several.

    Args:
        kg: the knowledge graph.
        codes: one code or several, in any spelling (``E11.9``, ``ICD9CM:250.00``).
        hops: one code: the largest distance (in edges, either direction) of a node shown.
        relations: the relations to follow and draw (default: all of them).
        max_nodes: the most nodes shown (centres and ends of predicted links are kept even past
            it); see the module docstring and ``cut["rule"]`` for which are kept.
        extra_edges: predicted links to draw (dashed, with their score): dicts with ``src``,
            ``dst``, ``relation`` (default ``predicted``), ``score`` and optionally ``source``
            and ``attrs``. Their ends are always kept.
        max_path: several codes: the longest path that joins two of them (default ``2 * hops``).
        hub_degree: several codes: paths do not pass through a node (other than a centre) linked
            to more nodes than this (see :data:`HUB_DEGREE`); ``None`` lets them.
        outer_edges: one code: also draw the edges between two nodes of the outermost ring shown
            (left out by default: they make a dense tangle and lead no nearer to the centre;
            ``cut["edges_left_out"]`` counts them).
        system: the system of bare codes (default ICD-10-CM).

    Returns:
        The :class:`Neighborhood`.

    Raises:
        ValueError: no code, ``hops`` or ``max_path`` below 0, ``max_nodes`` below 1, an
            unknown relation, or an extra edge without ``src``/``dst``.
        ontologies.InvalidCodeError: a code is malformed.
        kg.UnknownCodeError: a code is not in the KG (with suggestions).
    """
    if isinstance(codes, str):
        codes = [codes]
    if not codes:
        raise ValueError("no code given")
    if hops < 0:
        raise ValueError(f"hops must be 0 or more, not {hops}")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be 1 or more, not {max_nodes}")
    rel_list = check_relations(relations)
    rels = frozenset(rel_list)
    centres = list(dict.fromkeys(kg.resolve(code, system) for code in codes))
    predicted = _predicted(kg, extra_edges)
    pinned = list(dict.fromkeys(end for e in predicted for end in (e["src"], e["dst"]) if end not in centres))

    g = kg.graph
    succ: Adjacency = g._succ
    pred: Adjacency = g._pred
    cut: dict[str, Any] = {"max_nodes": max_nodes, "notes": []}

    if len(centres) == 1:
        centre = centres[0]
        dist, hier = _bfs(succ, pred, centre, rels, hops)
        ranked = sorted(
            (n for n in dist if n != centre and n not in pinned),
            key=lambda n: (dist[n], n not in hier, n),
        )
        room = max(0, max_nodes - 1 - len(pinned))
        kept = [centre, *pinned, *ranked[:room]]
        dropped = ranked[room:]
        hop_of: dict[str, int | None] = {**dict.fromkeys(pinned), **dist}
        total = len(hop_of)
        cut["rule"] = _single_rule(max_nodes, centre, bool(pinned), outer_edges)
        where = f"within {hops} hop{'s' if hops != 1 else ''}"
    else:
        limit = 2 * hops if max_path is None else max_path
        if limit < 0:
            raise ValueError(f"max_path must be 0 or more, not {limit}")
        kept, total, hop_of, dropped = _shared(kg, centres, pinned, rels, limit, max_nodes, hub_degree, cut)
        cut["rule"] = _shared_rule(max_nodes, limit, HIERARCHY in rels, bool(pinned), hub_degree)
        cut["max_path"] = limit
        where = "in the shared neighbourhood"

    kept_set = set(kept)
    outer = None
    if len(centres) == 1 and not outer_edges:
        outer = max((h for n in kept if (h := hop_of.get(n)) is not None), default=0) or None
    left_out = 0
    edges: list[dict[str, Any]] = []
    for src in kept:
        for dst, keydict in succ[src].items():
            if dst not in kept_set:
                continue
            ring = outer is not None and hop_of.get(src) == outer == hop_of.get(dst)
            for rel, data in keydict.items():
                if rel not in rels:
                    continue
                if ring:
                    left_out += 1
                else:
                    edges.append(
                        {
                            "src": src,
                            "dst": dst,
                            "relation": rel,
                            "source": str(data.get("source") or ""),
                            "attrs": dict(data.get("attrs") or {}),
                            "predicted": False,
                            "score": None,
                        }
                    )
    edges.sort(key=lambda e: (e["src"], e["dst"], RELATIONS.index(e["relation"])))
    edges += predicted

    cut["edges_left_out"] = left_out
    if left_out:
        cut["notes"].append(f"{left_out:,} edges between nodes of the outermost ring (hop {outer}) not drawn")
    if len(centres) > 1:
        _report_unconnected(cut, kept, edges)

    centre_set = set(centres)
    nodes = [_node_record(g._node, pred, n, hop_of.get(n), n in centre_set, kept_set) for n in kept]
    by_hop: dict[int, int] = {}
    for n in dropped:
        h = hop_of.get(n)
        h = -1 if h is None else h
        by_hop[h] = by_hop.get(h, 0) + 1
    n_dropped = total - len(kept)
    cut.update(
        applied=n_dropped > 0,
        shown=len(kept),
        total=total,
        dropped=n_dropped,
        dropped_by_hop=dict(sorted(by_hop.items())),
    )
    if n_dropped > 0:
        how = "nearest first, hierarchy before cross-links" if len(centres) == 1 else "closest pairs first"
        cut["summary"] = f"{len(kept):,} of {total:,} nodes {where} shown ({how})"
    else:
        cut["summary"] = f"all {total:,} nodes {where} shown"
    logger.debug("neighbourhood of %s: %s", ", ".join(centres), cut["summary"])
    return Neighborhood(
        centers=centres,
        nodes=nodes,
        edges=edges,
        cut=cut,
        total_nodes_before_cut=total,
        hops=hops,
        relations=rel_list,
    )


def _shared(
    kg: KnowledgeGraph,
    centres: list[str],
    pinned: list[str],
    rels: frozenset[str],
    limit: int,
    max_nodes: int,
    hub_degree: int | None,
    cut: dict[str, Any],
) -> tuple[list[str], int, dict[str, int | None], list[str]]:
    """Kept nodes, total before the cut, hops and dropped nodes of a shared neighbourhood."""
    succ: Adjacency = kg.graph._succ
    pred: Adjacency = kg.graph._pred
    blocked: set[str] = set()
    if hub_degree is not None:
        blocked = {n for n, nbrs in succ.items() if len(nbrs) + len(pred[n]) > hub_degree}
        blocked.difference_update(centres)
    dists = {c: _bfs(succ, pred, c, rels, limit, blocked)[0] for c in centres}
    order = {c: i for i, c in enumerate(centres)}
    joined: list[tuple[int, str, str]] = []
    unconnected: list[list[str]] = []
    for a, b in combinations(centres, 2):
        d = dists[a].get(b)
        if d is None:
            unconnected.append([a, b])
        else:
            joined.append((d, a, b))
    joined.sort(key=lambda t: (t[0], order[t[1]], order[t[2]]))

    kept: list[str] = list(dict.fromkeys([*centres, *pinned]))
    kept_set = set(kept)
    wanted: set[str] = set(kept)
    dropped_pairs: list[str] = []
    for d, a, b in joined:
        da, db = dists[a], dists[b]
        small, large = (da, db) if len(da) <= len(db) else (db, da)
        on_paths = {
            v for v, x in small.items() if (y := large.get(v)) is not None and x + y == d and v not in blocked
        }
        wanted |= on_paths
        new = sorted(on_paths - kept_set, key=lambda v: (min(da[v], db[v]), v))
        if len(kept) + len(new) > max_nodes:
            path = _one_path(succ, pred, a, b, da, db, rels, blocked)
            new = [v for v in path if v not in kept_set]
            if len(kept) + len(new) > max_nodes:
                dropped_pairs.append(f"{a} - {b} ({d} edges)")
                continue
            cut["notes"].append(f"{a} - {b}: one of the shortest paths shown ({d} edges)")
        kept += new
        kept_set.update(new)

    context: list[str] = []
    if HIERARCHY in rels:
        for c in centres:
            context += kg.parents(c) + kg.children(c)
    context = [v for v in dict.fromkeys(context) if v not in kept_set]
    wanted.update(context)
    room = max(0, max_nodes - len(kept))
    kept += context[:room]

    hop_of: dict[str, int | None] = {}
    for v in wanted:
        hops = [dist[v] for dist in dists.values() if v in dist]
        hop_of[v] = min(hops) if hops else (1 if v in context else None)
    if dropped_pairs:
        cut["notes"].append("paths left out (over max_nodes): " + "; ".join(dropped_pairs))
    cut["unconnected"] = unconnected
    dropped = sorted(wanted - set(kept), key=lambda v: (hop_of[v] if hop_of[v] is not None else -1, v))
    return kept, len(wanted), hop_of, dropped


def _report_unconnected(cut: dict[str, Any], kept: list[str], edges: list[dict[str, Any]]) -> None:
    limit = cut["max_path"]
    comp = _components(kept, ((e["src"], e["dst"]) for e in edges))
    for a, b in cut["unconnected"]:
        text = f"{a} and {b} are not connected within {limit} hops"
        if comp[a] == comp[b]:
            text += " (the view joins them through the other codes)"
        cut["notes"].append(text)
