"""The text of each node of the knowledge graph, as fed to a text encoder.

One function decides what a node "says", so every model that embeds nodes (the SNOMED CT link
predictor, the coder's graph encoder) embeds the same strings and shares one embedding cache:

* ICD-10-CM / ICD-9-CM codes: the title, then the synonyms and inclusion terms (``includes``
  notes), then the titles of the direct parents, e.g.
  ``"Type 2 diabetes mellitus without complications; parent: Type 2 diabetes mellitus"``.
  A parent that is a chapter or block loses its ``(A00-B99)`` range; chapters are not used as
  parents (their titles are too broad to help).
* DOID / MONDO concepts: the label, then the synonyms (``"type 2 diabetes mellitus; NIDDM; ..."``).
* SNOMED CT ids: ``""`` (the graph carries identifiers only, never SNOMED descriptions).
* Any other node (MeSH, OMIM): its title and synonyms when it has them, else ``""``.

Only titles, synonyms, tabular-list notes and ``is_a`` edges are read: never cross-references,
GEMs or other links. So node texts carry no information about the links a model is asked to
predict, and a held-out code's text is the same whether or not its links are in the graph.

:func:`node_names` gives the separate names of a node (label and each synonym), for matching a
query against every name of a concept.

Example:
    >>> from ontologies.base import Concept, Relation
    >>> from kg.graph import KnowledgeGraph
    >>> kg = KnowledgeGraph()
    >>> kg.add_concept(Concept("ICD10CM:E11", "ICD10CM", "Type 2 diabetes mellitus", kind="category"))
    >>> kg.add_concept(Concept("ICD10CM:E11.9", "ICD10CM", "Type 2 diabetes mellitus without "
    ...                        "complications", kind="code", billable=True))
    >>> kg.add_relation(Relation("ICD10CM:E11.9", "ICD10CM:E11", "is_a", "icd10cm"))
    >>> node_text(kg, "ICD10CM:E11.9")
    'Type 2 diabetes mellitus without complications; parent: Type 2 diabetes mellitus'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph

__all__ = ["TEXTS_VERSION", "node_names", "node_text", "node_texts", "texts_key_parts"]

#: Version of the text recipe; part of every embedding-cache key built from these texts.
TEXTS_VERSION = 1

_CODE_SYSTEMS = frozenset({"ICD10CM", "ICD9CM"})
_CONCEPT_SYSTEMS = frozenset({"DOID", "MONDO"})
_RANGE = re.compile(r"\s*\([A-Z0-9.]+-[A-Z0-9.]+\)\s*$")
_SEP = "; "


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _dedupe(texts: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for text in texts:
        text = _clean(text)
        low = text.lower()
        if text and low not in seen:
            seen.add(low)
            out.append(text)
    return out


def _inclusion_terms(data: dict[str, Any]) -> list[str]:
    notes = (data.get("attrs") or {}).get("notes") or {}
    terms = notes.get("includes") or notes.get("inclusionTerm") or []
    return [t for t in terms if isinstance(t, str)]


def node_names(kg: KnowledgeGraph, node_id: str, max_synonyms: int | None = None) -> list[str]:
    """The names of a node: its title (label), then its synonyms, without repeats.

    Args:
        kg: the graph.
        node_id: a system-qualified node id of the graph.
        max_synonyms: keep at most this many synonyms (all when ``None``).

    Returns:
        The names (empty for a SNOMED CT id or a node without a title).
    """
    data = kg.graph._node[node_id]
    if data["system"] == "SCTID":
        return []
    synonyms = list(data.get("synonyms") or ())
    if data["system"] in _CODE_SYSTEMS:
        synonyms += _inclusion_terms(data)
    names = _dedupe([data.get("title") or "", *synonyms])
    if max_synonyms is not None:
        names = names[: 1 + max_synonyms]
    return names


def node_text(
    kg: KnowledgeGraph,
    node_id: str,
    *,
    max_synonyms: int = 8,
    parents: bool = True,
) -> str:
    """The text of one node (see the module docstring for the recipe).

    Args:
        kg: the graph.
        node_id: a system-qualified node id of the graph.
        max_synonyms: at most this many synonyms / inclusion terms.
        parents: append the direct parents' titles (ICD codes only).

    Returns:
        The text; ``""`` for SNOMED CT ids and nodes without a title.
    """
    graph = kg.graph
    data = graph._node[node_id]
    system = data["system"]
    names = node_names(kg, node_id, max_synonyms=max_synonyms)
    if not names:
        return ""
    text = _SEP.join(names)
    if parents and system in _CODE_SYSTEMS:
        titles: list[str] = []
        for parent, keydict in graph._succ[node_id].items():
            if "is_a" not in keydict:
                continue
            pdata = graph._node[parent]
            if pdata.get("kind") == "chapter" or not pdata.get("title"):
                continue
            titles.append(_RANGE.sub("", pdata["title"]))
        titles = [t for t in _dedupe(titles) if t.lower() != names[0].lower()]
        if titles:
            text += _SEP + "parent: " + _SEP.join(titles)
    return text


def node_texts(
    kg: KnowledgeGraph,
    ids: Sequence[str] | None = None,
    *,
    systems: Iterable[str] | None = None,
    max_synonyms: int = 8,
    parents: bool = True,
) -> tuple[list[str], list[str]]:
    """The texts of many nodes.

    Args:
        kg: the graph.
        ids: these nodes, in this order; default: every node of ``systems`` sorted by
            (system, id), the order of :meth:`kg.pyg.NodeIndex.from_kg`.
        systems: the systems to take when ``ids`` is ``None`` (all when ``None``).
        max_synonyms: see :func:`node_text`.
        parents: see :func:`node_text`.

    Returns:
        ``(ids, texts)``, one text per id.
    """
    if ids is None:
        wanted = None if systems is None else set(systems)
        ids = sorted(
            (n for n, d in kg.graph._node.items() if wanted is None or d["system"] in wanted),
            key=lambda n: (n.partition(":")[0], n),
        )
    ids = list(ids)
    return ids, [node_text(kg, n, max_synonyms=max_synonyms, parents=parents) for n in ids]


def texts_key_parts(kg: KnowledgeGraph, **extra: Any) -> dict[str, Any]:
    """Embedding-cache key parts for texts made here from ``kg``.

    The texts themselves are hashed by the cache; these parts add the recipe version and the
    names and versions of the sources the graph was built from (from its manifest when loaded
    from disk, else its build report; file paths are left out so a copy of the same data in
    another folder hits the same cache entry).

    Args:
        kg: the graph.
        **extra: more JSON-ready facts to put in the key (e.g. ``kind="node_text"``).

    Returns:
        A JSON-ready dict.
    """
    manifest = kg.manifest or {}
    sources = manifest.get("sources") or kg.build_report.get("sources") or []
    versions = {
        str(src.get("name")): str(src.get("version"))
        for src in sources
        if isinstance(src, dict) and src.get("name")
    }
    blob = json.dumps(versions, sort_keys=True)
    return {
        "texts_version": TEXTS_VERSION,
        "kg_sources_sha256": hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16],
        **extra,
    }
