"""The typed multi-relational knowledge graph of the code systems and its query API.

:class:`KnowledgeGraph` wraps a :class:`networkx.MultiDiGraph` (attribute ``graph``):

* a node per concept, keyed by its system-qualified id (``ICD10CM:E11.9``), with attributes
  ``system``, ``title``, ``synonyms`` (list), ``kind``, ``billable``, ``attrs`` (dict) and
  ``sources`` (names of the sources that defined it);
* at most one edge per ``(src, dst, relation)``, keyed by the relation name, with data
  ``relation``, ``source`` (the first source that gave it) and ``attrs`` (provenance; when more
  than one source gave the edge, ``attrs["sources"]`` lists them all).

Every method that takes a code accepts any spelling (``e119``, ``E11.9``, ``ICD10CM:E11.9``):
codes are normalised with :func:`ontologies.codes.standardize`; ``system=`` names the system of a
bare code (``ICD10CM`` when not given).

Example:
    >>> from ontologies.base import Concept, Relation
    >>> kg = KnowledgeGraph()
    >>> kg.add_concept(Concept("ICD10CM:E11", "ICD10CM", "Type 2 diabetes mellitus", kind="category"))
    >>> kg.add_concept(Concept("ICD10CM:E11.9", "ICD10CM", "Type 2 diabetes mellitus without "
    ...                        "complications", kind="code", billable=True))
    >>> kg.add_relation(Relation("ICD10CM:E11.9", "ICD10CM:E11", "is_a", "icd10cm"))
    >>> kg.resolve("e119")
    'ICD10CM:E11.9'
    >>> kg.ancestors("E11.9")
    ['ICD10CM:E11']
    >>> kg.search("type 2 diabetes", limit=1)[0][0]
    'ICD10CM:E11'
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import gc
import heapq
import logging
import re
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import networkx as nx

from kg.errors import UnknownCodeError
from ontologies.base import Concept, Relation
from ontologies.codes import canonical_system, standardize

__all__ = ["NOTE_RELATIONS", "SNOMED_MATCHES", "KnowledgeGraph"]

logger = logging.getLogger(__name__)

#: Relations that come from the notes of the ICD-10-CM tabular list (they apply to the codes below).
NOTE_RELATIONS: tuple[str, ...] = ("excludes1", "excludes2", "code_first", "use_additional", "code_also")

#: ``xref`` match types that link an ICD code to a SNOMED CT id through a DO/Mondo concept.
SNOMED_MATCHES: frozenset[str] = frozenset({"exact", "dbxref"})

_ICD_SYSTEMS = frozenset({"ICD10CM", "ICD9CM"})
_VIA_SYSTEMS = frozenset({"DOID", "MONDO"})
_TOKEN = re.compile(r"[a-z0-9]+")
_N_SUGGESTIONS = 5

Direction = Literal["out", "in", "both"]


@contextlib.contextmanager
def gc_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while many small dicts are created.

    Building or loading a graph allocates millions of containers; without the pause the
    collector rescans the growing heap again and again and doubles the time. Reference
    cycles made meanwhile (e.g. by a loader whose generator is consumed inside the pause) are
    freed by the first collection after it. Nested pauses are no-ops.

    Args:
        freeze: on success, move every object alive now to the collector's permanent
            generation (:func:`gc.freeze`) before re-enabling it. Used after loading a KG:
            its millions of long-lived dicts are then never rescanned (the first full
            collection would otherwise cost about 0.5 s), as CPython's docs advise for large
            long-lived state.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    ok = False
    try:
        yield
        ok = True
    finally:
        if ok and freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _flat(code: str) -> str:
    return code.replace(".", "").upper()


class _SearchIndex:
    """Inverted token index over titles and synonyms (one entry per text)."""

    __slots__ = ("node", "text", "norm", "ntok", "postings", "vocab")

    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        self.node: list[str] = []
        self.text: list[str] = []
        self.norm: list[str] = []
        self.ntok: list[int] = []
        postings: defaultdict[str, list[int]] = defaultdict(list)
        for node_id, data in nodes.items():
            seen: set[str] = set()
            title = data.get("title") or ""
            for text in (title, *(data.get("synonyms") or ())):
                toks = _tokens(text)
                if not toks:
                    continue
                norm = " ".join(toks)
                if norm in seen:
                    continue
                seen.add(norm)
                i = len(self.node)
                self.node.append(node_id)
                self.text.append(text)
                self.norm.append(norm)
                self.ntok.append(len(toks))
                for tok in set(toks):
                    postings[tok].append(i)
        self.postings: dict[str, list[int]] = dict(postings)
        self.vocab: list[str] = sorted(self.postings)

    def matches(self, token: str, expand: bool) -> tuple[set[int], set[int]]:
        """Entries with ``token`` exactly, and those with a word that starts with it."""
        exact = set(self.postings.get(token, ()))
        if not expand or len(token) < 3:
            return exact, exact
        prefixed = set(exact)
        lo = bisect.bisect_left(self.vocab, token)
        hi = bisect.bisect_left(self.vocab, token + "\uffff")
        for word in self.vocab[lo:hi]:
            if word != token:
                prefixed.update(self.postings[word])
        return exact, prefixed


class _SnomedIndex:
    """ICD <-> DO/Mondo <-> SNOMED CT links, built in one pass over the ``xref`` edges."""

    __slots__ = ("icd_to_via", "via_to_icd", "via_to_sct", "sct_to_via")

    def __init__(self, graph: nx.MultiDiGraph) -> None:
        nodes = graph._node
        self.icd_to_via: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self.via_to_icd: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self.via_to_sct: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self.sct_to_via: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for via, nbrs in graph._succ.items():
            if nodes[via]["system"] not in _VIA_SYSTEMS:
                continue
            fallback = nodes[via]["system"].lower()
            for target, keydict in nbrs.items():
                data = keydict.get("xref")
                if data is None:
                    continue
                match = str(data["attrs"].get("match", "")).lower()
                if match not in SNOMED_MATCHES:
                    continue
                system = nodes[target]["system"]
                source = data.get("source") or fallback
                if system == "SCTID":
                    self.via_to_sct[via].append((target, match, source))
                    self.sct_to_via[target].append((via, match, source))
                elif system in _ICD_SYSTEMS:
                    self.icd_to_via[target].append((via, match, source))
                    self.via_to_icd[via].append((target, match, source))

    def icd_with_snomed(self, system: str, nodes: dict[str, dict[str, Any]]) -> int:
        """Codes of ``system`` with a SNOMED CT link; chapters and blocks (ranges) not counted."""
        return sum(
            1
            for icd, vias in self.icd_to_via.items()
            if icd.startswith(system + ":")
            and nodes.get(icd, {}).get("kind") not in ("chapter", "block")
            and any(via in self.via_to_sct for via, _, _ in vias)
        )


class KnowledgeGraph:
    """The typed multi-relational graph of ICD-10-CM, ICD-9-CM, GEMs, DO, Mondo and SNOMED CT ids.

    Attributes:
        graph: the underlying :class:`networkx.MultiDiGraph` (see the module docstring).
        build_report: what the build did: ``dropped_relations`` ({source: {relation: n}}),
            ``sources`` (each source's :class:`~ontologies.base.SourceInfo` as a dict), ``notes``.
        manifest: the manifest of the folder the graph was loaded from, or ``None``.

    Args:
        graph: an existing graph in the layout above, used as is (not copied). After changing
            ``graph`` directly, call :meth:`clear_caches`.
    """

    def __init__(self, graph: nx.MultiDiGraph | None = None) -> None:
        self.graph: nx.MultiDiGraph = graph if graph is not None else nx.MultiDiGraph()
        self.build_report: dict[str, Any] = {}
        self.manifest: dict[str, Any] | None = None
        self._invalidate()

    # ------------------------------------------------------------------ building

    def clear_caches(self) -> None:
        """Forget the lazy indexes (search, SNOMED CT links, code suggestions).

        :meth:`add_concept` and :meth:`add_relation` do this themselves; call it after changing
        :attr:`graph` directly.
        """
        self._invalidate()

    def _invalidate(self) -> None:
        self._search_index: _SearchIndex | None = None
        self._snomed_index: _SnomedIndex | None = None
        self._code_index: dict[str, tuple[list[str], list[str]]] | None = None

    def add_concept(self, concept: Concept) -> None:
        """Add one concept, merging it into the node of the same id if there is one.

        Merging keeps the first non-empty title (a different title of a later source becomes a
        synonym), unions synonyms and sources in order, adds attrs the node lacks, and takes
        ``kind`` and ``billable`` from the first source that sets them (not ``concept`` / True).
        SNOMED CT nodes never keep a title (a warning is logged when one comes with a title).

        Args:
            concept: the concept.
        """
        self.add_concepts((concept,))

    def add_concepts(self, concepts: Iterable[Concept], source: str | None = None) -> int:
        """Add many concepts at once (see :meth:`add_concept` for how duplicates merge).

        Args:
            concepts: the concepts.
            source: source name for concepts whose ``source`` is empty.

        Returns:
            The number of new nodes.

        Raises:
            ValueError: a concept's id does not start with its system (``ICD10CM:``).
        """
        nodes = self.graph._node
        pending: dict[str, dict[str, Any]] = {}
        titled_snomed: list[str] = []
        with gc_paused():
            for c in concepts:
                if not c.id.startswith(c.system) or c.id[len(c.system) : len(c.system) + 1] != ":":
                    raise ValueError(f"concept id {c.id!r} does not start with its system {c.system + ':'!r}")
                name = c.source or source or ""
                if c.system == "SCTID" and c.title:
                    titled_snomed.append(c.id)
                old = pending.get(c.id)
                if old is None:
                    old = nodes.get(c.id)
                if old is None:
                    pending[c.id] = {
                        "system": c.system,
                        "title": "" if c.system == "SCTID" else (c.title or ""),
                        "synonyms": list(dict.fromkeys(c.synonyms)),
                        "kind": c.kind or "concept",
                        "billable": bool(c.billable),
                        "attrs": dict(c.attrs),
                        "sources": [name] if name else [],
                    }
                else:
                    _merge_node(old, c, name)
            self._bulk_insert(pending.items(), ())
        if titled_snomed:
            logger.warning(
                "dropped the title of %d SNOMED CT concept(s) (SNOMED CT nodes carry an id only), e.g. %s",
                len(titled_snomed),
                ", ".join(titled_snomed[:3]),
            )
        self._invalidate()
        return len(pending)

    def add_relation(self, relation: Relation) -> None:
        """Add one edge; the same ``(src, dst, relation)`` again merges into the existing edge.

        A second source of the same edge is recorded in ``attrs["sources"]``; attrs the edge
        lacks are added, those it has are kept.

        Args:
            relation: the relation; both ends must be nodes already.

        Raises:
            UnknownCodeError: an end is not a node of the graph.
        """
        for end in (relation.src, relation.dst):
            if end not in self.graph._node:
                raise UnknownCodeError(end, self._suggest(end))
        self.add_relations((relation,))

    def add_relations(
        self, relations: Iterable[Relation], source: str | None = None
    ) -> tuple[Counter[tuple[str, str]], dict[tuple[str, str], list[str]]]:
        """Add many relations at once, dropping those with an end that is not a node.

        Args:
            relations: the relations.
            source: source name for relations whose ``source`` is empty.

        Returns:
            ``(dropped, examples)``: the number of dropped relations per ``(source, relation)``,
            and up to three of them per key as ``"src -> dst"``.
        """
        nodes = self.graph._node
        succ = self.graph._succ
        pending: dict[tuple[str, str, str], dict[str, Any]] = {}
        dropped: Counter[tuple[str, str]] = Counter()
        examples: dict[tuple[str, str], list[str]] = {}
        with gc_paused():
            for r in relations:
                name = r.source or source or ""
                if r.src not in nodes or r.dst not in nodes:
                    key2 = (name, r.relation)
                    dropped[key2] += 1
                    if dropped[key2] <= 3:
                        examples.setdefault(key2, []).append(f"{r.src} -> {r.dst}")
                    continue
                key = (r.src, r.dst, r.relation)
                data = pending.get(key)
                if data is None:
                    keydict = succ[r.src].get(r.dst)
                    data = keydict.get(r.relation) if keydict is not None else None
                if data is None:
                    pending[key] = {"relation": r.relation, "source": name, "attrs": dict(r.attrs)}
                else:
                    _merge_edge(data, r, name)
            self._bulk_insert((), ((u, v, k, d) for (u, v, k), d in pending.items()))
        self._invalidate()
        return dropped, examples

    def _bulk_insert(
        self,
        nodes: Iterable[tuple[str, dict[str, Any]]],
        edges: Iterable[tuple[str, str, str, dict[str, Any]]],
    ) -> tuple[int, int]:
        """Insert new nodes and new edges (ends present, key absent) without per-item checks.

        For a plain :class:`networkx.MultiDiGraph` this fills its adjacency dicts directly (the
        layout networkx has used since 2.0; ``tests/kg/test_graph.py`` checks that the result
        equals what ``add_nodes_from``/``add_edges_from`` give), which is several times faster
        than the public methods for a few hundred thousand edges.
        """
        g = self.graph
        if type(g) is not nx.MultiDiGraph or not hasattr(g, "_succ"):  # pragma: no cover
            nodes, edges = list(nodes), list(edges)
            g.add_nodes_from(nodes)
            g.add_edges_from(edges)
            return len(nodes), len(edges)
        node, succ, pred = g._node, g._succ, g._pred
        n_nodes = n_edges = 0
        with gc_paused():
            for n, data in nodes:
                node[n] = data
                succ[n] = {}
                pred[n] = {}
                n_nodes += 1
            for u, v, key, data in edges:
                succ_u = succ[u]
                keydict = succ_u.get(v)
                if keydict is None:
                    keydict = succ_u[v] = {}
                    pred[v][u] = keydict
                keydict[key] = data
                n_edges += 1
        cache = getattr(g, "__networkx_cache__", None)
        if cache:
            cache.clear()
        return n_nodes, n_edges

    # ------------------------------------------------------------------ codes

    def resolve(self, code: str, system: str | None = None) -> str:
        """The node id of a code written in any spelling.

        Args:
            code: the code (``e119``, ``E11.9``, ``ICD10CM:E11.9``, ``SCTID:44054006``).
            system: the system of a bare code (any alias; ``ICD10CM`` when not given).

        Returns:
            The system-qualified id of a node of the graph.

        Raises:
            InvalidCodeError: the code is malformed for its system.
            UnknownCodeError: the code is well formed but not in the graph; it carries up to
                five nearby ids.
        """
        if system is None and isinstance(code, str) and code in self.graph._node:
            return code
        cid = standardize(code, system)
        if cid in self.graph._node:
            return cid
        raise UnknownCodeError(cid, self._suggest(cid))

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and self._find(code) is not None

    def _find(self, code: str, system: str | None = None) -> str | None:
        """The node id of a code, or ``None`` (malformed or unknown; no suggestions computed)."""
        if system is None and code in self.graph._node:
            return code
        try:
            cid = standardize(code, system)
        except ValueError:
            return None
        return cid if cid in self.graph._node else None

    def __len__(self) -> int:
        return len(self.graph._node)

    def number_of_nodes(self) -> int:
        """Number of nodes."""
        return len(self.graph._node)

    def number_of_edges(self) -> int:
        """Number of edges (faster than ``graph.number_of_edges()``, which sums degrees)."""
        return sum(len(keydict) for nbrs in self.graph._succ.values() for keydict in nbrs.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nodes={self.number_of_nodes():,}, edges={self.number_of_edges():,})"

    def _codes_of(self, system: str) -> tuple[list[str], list[str]]:
        if self._code_index is None:
            by_system: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
            with gc_paused():
                for node_id, data in self.graph._node.items():
                    system_name = data["system"]
                    by_system[system_name].append((_flat(node_id[len(system_name) + 1 :]), node_id))
                index = {}
                for system_name, pairs in by_system.items():
                    pairs.sort()
                    index[system_name] = ([k for k, _ in pairs], [i for _, i in pairs])
            self._code_index = index
        return self._code_index.get(system, ([], []))

    def _suggest(self, cid: str, n: int = _N_SUGGESTIONS) -> list[str]:
        """Up to ``n`` ids near ``cid``: longest shared prefix in the same system, then difflib."""
        system, _, code = cid.partition(":")
        keys, ids = self._codes_of(system)
        if not ids:
            return []
        query = _flat(code)
        pos = bisect.bisect_left(keys, query)
        shared: dict[int, int] = {}  # row -> length of the shared prefix
        for length in range(len(query), 0, -1):
            prefix = query[:length]
            lo = bisect.bisect_left(keys, prefix)
            hi = bisect.bisect_left(keys, prefix + "\uffff")
            lo, hi = max(lo, pos - 2000), min(hi, pos + 2000)
            for row in range(lo, hi):
                shared.setdefault(row, length)
            if len(shared) >= n:
                break

        def rank(row: int) -> tuple[int, float, int, str]:
            ratio = difflib.SequenceMatcher(None, cid, ids[row]).ratio()
            return (-shared[row], -ratio, abs(row - pos), ids[row])

        out = [ids[row] for row in sorted(shared, key=rank)[:n]]
        if len(out) < n:
            chosen = set(out)
            more = difflib.get_close_matches(cid, ids, n=n + len(out), cutoff=0.6)
            out += [i for i in more if i not in chosen][: n - len(out)]
        return out

    def lookup(self, code: str, system: str | None = None) -> Concept:
        """The concept of a code.

        Args:
            code: the code in any spelling.
            system: the system of a bare code.

        Returns:
            A new :class:`~ontologies.base.Concept` (changing it does not change the graph);
            ``source`` is the first source that defined the node.

        Raises:
            InvalidCodeError: the code is malformed.
            UnknownCodeError: the code is not in the graph.
        """
        node_id = self.resolve(code, system)
        return _concept(node_id, self.graph._node[node_id])

    def parents(self, code: str, system: str | None = None) -> list[str]:
        """Direct ``is_a`` parents, sorted."""
        node_id = self.resolve(code, system)
        return sorted(v for v, keys in self.graph._succ[node_id].items() if "is_a" in keys)

    def children(self, code: str, system: str | None = None) -> list[str]:
        """Direct ``is_a`` children, sorted."""
        node_id = self.resolve(code, system)
        return sorted(u for u, keys in self.graph._pred[node_id].items() if "is_a" in keys)

    def ancestors(self, code: str, system: str | None = None) -> list[str]:
        """Every ``is_a`` ancestor, nearest first (breadth-first; ties sorted)."""
        return self._closure(self.resolve(code, system), self.graph._succ)

    def descendants(self, code: str, system: str | None = None) -> list[str]:
        """Every ``is_a`` descendant, nearest first (breadth-first; ties sorted)."""
        return self._closure(self.resolve(code, system), self.graph._pred)

    @staticmethod
    def _closure(start: str, adj: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
        seen = {start}
        out: list[str] = []
        frontier = [start]
        while frontier:
            level: list[str] = []
            for node_id in frontier:
                for nbr in sorted(v for v, keys in adj[node_id].items() if "is_a" in keys):
                    if nbr not in seen:
                        seen.add(nbr)
                        level.append(nbr)
            out += level
            frontier = level
        return out

    def neighbors(
        self,
        code: str,
        hops: int = 1,
        relations: Collection[str] | None = None,
        direction: Direction = "both",
        system: str | None = None,
    ) -> dict[str, int]:
        """Nodes within ``hops`` edges of a code.

        Args:
            code: the code in any spelling.
            hops: the largest distance.
            relations: follow only these relations (all when ``None``).
            direction: follow edges ``out`` of a node, ``in`` to it, or ``both``.
            system: the system of a bare code.

        Returns:
            ``{id: distance}`` for every node reached, not counting the start.
        """
        start = self.resolve(code, system)
        adjs = self._adjs(direction)
        wanted = set(relations) if relations is not None else None
        dist = {start: 0}
        queue = deque([start])
        while queue:
            node_id = queue.popleft()
            d = dist[node_id]
            if d >= hops:
                continue
            for adj in adjs:
                for nbr, keys in adj[node_id].items():
                    if nbr in dist or (wanted is not None and wanted.isdisjoint(keys)):
                        continue
                    dist[nbr] = d + 1
                    queue.append(nbr)
        del dist[start]
        return dist

    def _adjs(self, direction: str) -> list[dict[str, dict[str, dict[str, Any]]]]:
        if direction == "out":
            return [self.graph._succ]
        if direction == "in":
            return [self.graph._pred]
        if direction == "both":
            return [self.graph._succ, self.graph._pred]
        raise ValueError(f"direction must be 'out', 'in' or 'both', not {direction!r}")

    def edges_of(
        self,
        code: str,
        relations: Collection[str] | None = None,
        direction: Direction = "out",
        system: str | None = None,
    ) -> list[Relation]:
        """The edges of a code, out-edges first.

        Args:
            code: the code in any spelling.
            relations: only these relations (all when ``None``).
            direction: ``out`` (the code is ``src``), ``in`` (it is ``dst``) or ``both``.
            system: the system of a bare code.

        Returns:
            New :class:`~ontologies.base.Relation` objects with a copy of the edge attrs.
        """
        node_id = self.resolve(code, system)
        wanted = set(relations) if relations is not None else None
        out: list[Relation] = []
        for adj in self._adjs(direction):
            outgoing = adj is self.graph._succ
            for nbr, keydict in adj[node_id].items():
                for rel, data in keydict.items():
                    if wanted is not None and rel not in wanted:
                        continue
                    src, dst = (node_id, nbr) if outgoing else (nbr, node_id)
                    out.append(Relation(src, dst, rel, data.get("source", ""), dict(data.get("attrs") or {})))
        return out

    def inherited_notes(
        self, code: str, relations: Collection[str] = NOTE_RELATIONS, system: str | None = None
    ) -> list[Relation]:
        """Tabular-list notes that apply to a code: its own, then its ancestors' (nearest first).

        In ICD-10-CM an Excludes1 or Code First note at a category applies to every code below
        it; the ``src`` of each relation returned says which code carries the note.

        Args:
            code: the code in any spelling.
            relations: the note relations to collect.
            system: the system of a bare code.

        Returns:
            The relations, the code's own first.
        """
        node_id = self.resolve(code, system)
        out: list[Relation] = []
        for holder in (node_id, *self.ancestors(node_id)):
            out += self.edges_of(holder, relations=relations, direction="out")
        return out

    # ------------------------------------------------------------------ search

    def search(self, text: str, limit: int = 20, system: str | None = None) -> list[tuple[str, str, float]]:
        """Find nodes by title or synonym, case-insensitively.

        An exact title/synonym (score 1.0) ranks above one that contains the phrase (0.8-0.98),
        above one that has every word (0.5-0.75; a query word may also match the start of a
        longer word), above one with only some words (below 0.4). A query that is a code of
        the graph (``E11.9``) returns that node first. The token index is built on first use.

        Args:
            text: the query.
            limit: the most results.
            system: only nodes of this system (any alias).

        Returns:
            ``(id, matched text, score)`` per node, best first (ties: shorter text, then id).
        """
        if limit <= 0:
            return []
        system = canonical_system(system) if system else None
        nodes = self.graph._node
        best: dict[str, tuple[float, str]] = {}
        query = text.strip()
        if query and " " not in query and len(query) >= 3 and any(ch.isdigit() for ch in query):
            node_id = self._find(query, system)
            if node_id is not None:
                best[node_id] = (1.0 + 1e-6, nodes[node_id]["title"])
        q_toks = list(dict.fromkeys(_tokens(query)))
        if q_toks:
            self._score_text(q_toks, limit, system, best)
        ranked = heapq.nsmallest(limit, best.items(), key=lambda kv: (-kv[1][0], len(kv[1][1]), kv[0]))
        return [(node_id, matched, min(score, 1.0)) for node_id, (score, matched) in ranked[:limit]]

    def _score_text(
        self, q_toks: list[str], limit: int, system: str | None, best: dict[str, tuple[float, str]]
    ) -> None:
        if self._search_index is None:
            with gc_paused():
                self._search_index = _SearchIndex(self.graph._node)
        index = self._search_index
        nodes = self.graph._node
        q_norm = " ".join(q_toks)
        n_q = len(q_toks)
        exact_sets: list[set[int]] = []
        match_sets: list[set[int]] = []
        for i, tok in enumerate(q_toks):
            exact, matched = index.matches(tok, expand=i == n_q - 1 or tok not in index.postings)
            exact_sets.append(exact)
            match_sets.append(matched)

        def offer(entry: int, score: float) -> None:
            node_id = index.node[entry]
            if system is not None and nodes[node_id]["system"] != system:
                return
            old = best.get(node_id)
            text = index.text[entry]
            if old is None or score > old[0] or (score == old[0] and len(text) < len(old[1])):
                best[node_id] = (score, text)

        # Within a tier the score falls with the length of the text, so when a tier has many
        # entries only the shortest few (enough for ``limit`` nodes) are scored.
        cap = max(50, 20 * limit)
        norms, ntoks = index.norm, index.ntok

        def shortest(entries: Collection[int]) -> Collection[int]:
            if system is not None:
                entries = [e for e in entries if nodes[index.node[e]]["system"] == system]
            return entries if len(entries) <= cap else heapq.nsmallest(cap, entries, key=ntoks.__getitem__)

        ordered = sorted(match_sets, key=len)
        full = set(ordered[0]).intersection(*ordered[1:]) if ordered else set()
        padded = f" {q_norm} "
        phrase = [e for e in full if padded in f" {norms[e]} "]
        for entry in shortest(phrase):
            norm = norms[entry]
            if norm == q_norm:
                offer(entry, 1.0)
            else:
                start = 0.03 if norm.startswith(q_norm) else 0.0
                offer(entry, 0.8 + 0.15 * len(q_norm) / len(norm) + start)
        if len(phrase) < len(full):
            phrase_set = set(phrase)
            for entry in shortest([e for e in full if e not in phrase_set]):
                prefix_only = sum(1 for s in exact_sets if entry not in s)
                offer(entry, 0.5 + 0.25 * min(1.0, n_q / ntoks[entry]) - 0.05 * prefix_only / n_q)
        if n_q < 2 or len(best) >= limit:
            return
        counts: Counter[int] = Counter()
        for matched in match_sets:
            counts.update(matched)
        by_hits: defaultdict[int, list[int]] = defaultdict(list)
        for entry, hits in counts.items():
            if hits < n_q:
                by_hits[hits].append(entry)
        # More query words always rank higher (the coverage bonus is below one word's step),
        # so stop after the level that fills the limit.
        for hits in sorted(by_hits, reverse=True):
            step = 0.25 * hits / n_q
            for entry in shortest(by_hits[hits]):
                offer(entry, 0.1 + step + 0.2 / n_q * min(1.0, hits / ntoks[entry]))
            if len(best) >= limit:
                break

    # ------------------------------------------------------------------ SNOMED CT

    def _snomed(self) -> _SnomedIndex:
        if self._snomed_index is None:
            with gc_paused():
                self._snomed_index = _SnomedIndex(self.graph)
        return self._snomed_index

    def to_snomed(self, code: str, system: str | None = None) -> list[dict[str, str]]:
        """SNOMED CT ids of an ICD-10-CM or ICD-9-CM code, through DO/Mondo cross-references.

        A code ``C`` links to ``S`` when one DO or Mondo concept ``X`` has an ``xref`` to ``C``
        and one to ``S``, both with match ``exact`` or ``dbxref``.

        Args:
            code: the ICD code in any spelling.
            system: the system of a bare code.

        Returns:
            One dict per ``(S, X)``: ``sctid`` (``SCTID:...``), ``via`` (``X``), ``via_label``
            (X's title), ``icd_match``, ``snomed_match``, ``source`` (the source of X's xref to
            ``C``: ``doid`` or ``mondo``); sorted by SNOMED CT id, then ``via``.
        """
        node_id = self.resolve(code, system)
        index = self._snomed()
        nodes = self.graph._node
        out: dict[tuple[str, str], dict[str, str]] = {}
        for via, icd_match, source in index.icd_to_via.get(node_id, ()):
            for sct, sct_match, _ in index.via_to_sct.get(via, ()):
                out.setdefault(
                    (sct, via),
                    {
                        "sctid": sct,
                        "via": via,
                        "via_label": nodes[via]["title"],
                        "icd_match": icd_match,
                        "snomed_match": sct_match,
                        "source": source,
                    },
                )
        return [out[k] for k in sorted(out, key=lambda k: (int(k[0].partition(":")[2]), k[1]))]

    def from_snomed(self, sctid: str) -> list[dict[str, str]]:
        """ICD-10-CM and ICD-9-CM codes of a SNOMED CT id (the reverse of :meth:`to_snomed`).

        Args:
            sctid: the SNOMED CT id (``44054006`` or ``SCTID:44054006``).

        Returns:
            One dict per ``(code, X)``: ``code``, ``title``, ``via``, ``via_label``,
            ``icd_match``, ``snomed_match``, ``source``; sorted by code, then ``via``.
        """
        node_id = self.resolve(sctid, "SCTID")
        index = self._snomed()
        nodes = self.graph._node
        out: dict[tuple[str, str], dict[str, str]] = {}
        for via, sct_match, _ in index.sct_to_via.get(node_id, ()):
            for icd, icd_match, source in index.via_to_icd.get(via, ()):
                out.setdefault(
                    (icd, via),
                    {
                        "code": icd,
                        "title": nodes[icd]["title"],
                        "via": via,
                        "via_label": nodes[via]["title"],
                        "icd_match": icd_match,
                        "snomed_match": sct_match,
                        "source": source,
                    },
                )
        return [out[k] for k in sorted(out)]

    # ------------------------------------------------------------------ whole graph

    def stats(self) -> dict[str, Any]:
        """Counts of the graph.

        Returns:
            ``nodes``, ``edges``, ``nodes_by_system``, ``nodes_by_kind``, ``edges_by_relation``,
            ``icd10cm_with_snomed`` (ICD-10-CM codes, chapters and blocks not counted, with at
            least one SNOMED CT link, see :meth:`to_snomed`) and ``icd10cm_billable``.
        """
        with gc_paused():
            by_system: dict[str, int] = {}
            by_kind: dict[str, int] = {}
            billable = 0
            for data in self.graph._node.values():
                system, kind = data["system"], data["kind"]
                by_system[system] = by_system.get(system, 0) + 1
                by_kind[kind] = by_kind.get(kind, 0) + 1
                if data["billable"] and system == "ICD10CM":
                    billable += 1
            by_relation: dict[str, int] = {}
            for nbrs in self.graph._succ.values():
                for keydict in nbrs.values():
                    for rel in keydict:
                        by_relation[rel] = by_relation.get(rel, 0) + 1
        return {
            "nodes": len(self.graph._node),
            "edges": sum(by_relation.values()),
            "nodes_by_system": dict(sorted(by_system.items())),
            "nodes_by_kind": dict(sorted(by_kind.items())),
            "edges_by_relation": dict(sorted(by_relation.items())),
            "icd10cm_with_snomed": self._snomed().icd_with_snomed("ICD10CM", self.graph._node),
            "icd10cm_billable": billable,
        }

    def iter_concepts(self) -> Iterator[Concept]:
        """Every node as a new :class:`~ontologies.base.Concept`, in insertion order."""
        for node_id, data in self.graph._node.items():
            yield _concept(node_id, data)

    def iter_relations(self) -> Iterator[Relation]:
        """Every edge as a new :class:`~ontologies.base.Relation`, grouped by ``src``."""
        for src, nbrs in self.graph._succ.items():
            for dst, keydict in nbrs.items():
                for rel, data in keydict.items():
                    yield Relation(src, dst, rel, data.get("source", ""), dict(data.get("attrs") or {}))

    # ------------------------------------------------------------------ disk

    def save(self, path: str | Path) -> Path:
        """Save to a KG folder (see :func:`kg.store.save_kg`)."""
        from kg.store import save_kg

        return save_kg(self, path)

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeGraph:
        """Load a KG folder (see :func:`kg.store.load_kg`)."""
        from kg.store import load_kg

        return load_kg(path)


def _concept(node_id: str, data: dict[str, Any]) -> Concept:
    sources = data.get("sources") or ()
    return Concept(
        id=node_id,
        system=data["system"],
        title=data.get("title") or "",
        synonyms=list(data.get("synonyms") or ()),
        kind=data.get("kind") or "concept",
        billable=bool(data.get("billable")),
        attrs=dict(data.get("attrs") or {}),
        source=sources[0] if sources else "",
    )


def _merge_node(old: dict[str, Any], c: Concept, source: str) -> None:
    synonyms = old["synonyms"]
    new_synonyms = list(c.synonyms)
    if c.title and c.system != "SCTID":
        if not old["title"]:
            old["title"] = c.title
        elif c.title.lower() != old["title"].lower():
            new_synonyms.insert(0, c.title)
    if new_synonyms:
        seen = set(synonyms)
        for syn in new_synonyms:
            if syn not in seen:
                seen.add(syn)
                synonyms.append(syn)
    if old["kind"] == "concept" and c.kind and c.kind != "concept":
        old["kind"] = c.kind
    if c.billable:
        old["billable"] = True
    attrs = old["attrs"]
    for key, value in c.attrs.items():
        if attrs.get(key) in (None, "", [], {}):
            attrs[key] = value
    if source and source not in old["sources"]:
        old["sources"].append(source)


def _merge_edge(data: dict[str, Any], r: Relation, source: str) -> None:
    attrs = data["attrs"]
    if (source and source != data["source"]) or "sources" in attrs:
        sources = attrs.setdefault("sources", [data["source"]] if data["source"] else [])
        if source and source not in sources:
            sources.append(source)
    for key, value in r.attrs.items():
        if attrs.get(key) in (None, "", [], {}):
            attrs[key] = value
