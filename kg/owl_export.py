"""Export the knowledge graph (or part of it) as an OWL ontology, with owlready2.

Mapping (read back by :class:`ontologies.owl.OWLSource`):

* each concept -> an ``owl:Class`` ``<iri>#SYSTEM_CODE`` (fragment scheme:
  :func:`ontologies.owl.id_to_fragment`: ``ICD10CM:E11.9`` -> ``ICD10CM_E11.9``, the code
  percent-encoded except ``A-Z a-z 0-9 _ . - ~``; reversed by splitting at the first ``_``);
* ``rdfs:label`` = title (none for SNOMED CT nodes, which carry an id only);
  ``oboInOwl:hasExactSynonym`` per synonym; ``kgcode_id`` = the system-qualified id;
  ``kgcode_kind`` = kind; ``kgcode_billable`` = ``true`` on billable codes;
* ``is_a`` -> ``rdfs:subClassOf`` (a class without a parent is a subclass of ``owl:Thing``);
* every other relation -> an annotation on the source class, one annotation property per
  relation name (``excludes1``, ``gem_equivalent``, ``xref`` ...) whose value is the target's id.

Relation ``attrs`` (note text, GEM flags, match type, file) are not exported, and edges that
differ only in ``attrs`` become one annotation value: the SQLite store (:mod:`kg.store`) is the
lossless format; OWL is for ontology tools (Protégé, reasoners, SPARQL).

Cost: owlready2 builds one Python class per concept. The 98,505 ICD-10-CM concepts (131,855
relations) export in about 20 s with about 0.6 GB of extra memory, to a 53 MiB RDF/XML file.

Example:
    >>> from kg.owl_export import export_owl
    >>> counts = export_owl(kg.iter_concepts(), kg.iter_relations(), "kg.owl")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import types
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import owlready2

from ontologies.base import RELATIONS, Concept, Relation
from ontologies.codes import canonical_system
from ontologies.owl import (
    BILLABLE_PROPERTY,
    ID_PROPERTY,
    KIND_PROPERTY,
    OBO_IN_OWL,
    id_to_fragment,
)

__all__ = ["DEFAULT_IRI", "export_owl"]

_LOG = logging.getLogger(__name__)

#: Ontology IRI of an exported KG.
DEFAULT_IRI = "http://kgcode.org/kg.owl"

# Characters XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _XML_INVALID.sub("", text).strip()


def export_owl(
    concepts: Iterable[Concept],
    relations: Iterable[Relation],
    path: str | Path,
    *,
    iri: str = DEFAULT_IRI,
    systems: set[str] | None = None,
    format: str = "rdfxml",
) -> dict[str, Any]:
    """Write concepts and relations as an OWL ontology, atomically.

    Each iterable is read once (``kg.iter_concepts()``, ``kg.iter_relations()`` fit); the
    relations are kept per node until every class exists, and classes are created parents
    first. A relation is dropped (and counted) when either end is not an exported concept
    (filtered out by ``systems`` or absent); an ``is_a`` edge that would close a cycle is
    dropped with a warning (OWL allows it, owlready2's Python classes cannot hold it).

    The file is written to a temporary file in the target's folder and renamed over the
    target, so a failure midway leaves any previous file intact.

    Args:
        concepts: the nodes to export (duplicated ids: the first wins).
        relations: the edges to export.
        path: the output file.
        iri: the ontology IRI; classes are ``<iri>#SYSTEM_CODE``.
        systems: systems to export (any alias, e.g. ``{"ICD10CM", "DOID"}``); all when None.
        format: ``"rdfxml"`` (default) or ``"ntriples"``.

    Returns:
        Counts: ``classes``, ``subclass_of`` (is_a edges written), ``annotations`` (per
        relation name), ``skipped_concepts`` (other systems), ``duplicate_concepts``,
        ``dropped_relations`` (per relation name), ``cycles_dropped``, ``seconds``, ``path``.

    Raises:
        ValueError: a concept id is not system-qualified, or an unknown format.
        InvalidCodeError: an unknown system name in ``systems``.
    """
    if format not in ("rdfxml", "ntriples"):
        raise ValueError(f"unknown OWL format {format!r}: expected 'rdfxml' or 'ntriples'")
    t0 = time.perf_counter()
    wanted = {canonical_system(s) for s in systems} if systems is not None else None
    target = Path(path)

    nodes: dict[str, Concept] = {}
    skipped = duplicates = 0
    for concept in concepts:
        if wanted is not None and concept.system not in wanted:
            skipped += 1
        elif concept.id in nodes:
            duplicates += 1
        else:
            id_to_fragment(concept.id)  # fail early on an id the scheme cannot name
            nodes[concept.id] = concept

    parents: dict[str, list[str]] = {}
    notes: dict[str, dict[str, list[str]]] = {}
    dropped: Counter[str] = Counter()
    for rel in relations:
        if rel.src not in nodes or rel.dst not in nodes or rel.relation not in RELATIONS:
            dropped[rel.relation] += 1
        elif rel.relation == "is_a":
            ps = parents.setdefault(rel.src, [])
            if rel.dst == rel.src:
                dropped["is_a"] += 1
            elif rel.dst not in ps:
                ps.append(rel.dst)
        else:
            values = notes.setdefault(rel.src, {}).setdefault(rel.relation, [])
            if rel.dst not in values:
                values.append(rel.dst)
    unknown = sorted(r for r in dropped if r not in RELATIONS)
    if unknown:
        _LOG.warning("OWL export: relations of unknown type dropped: %s", ", ".join(unknown))
    _LOG.info(
        "OWL export: %d concepts, %d with parents, %d with annotated relations (read in %.1fs)",
        len(nodes),
        len(parents),
        len(notes),
        time.perf_counter() - t0,
    )

    cycles = _drop_cycles(nodes, parents)
    counts: dict[str, Any] = {
        "path": str(target),
        "classes": 0,
        "subclass_of": 0,
        "annotations": Counter(),
        "skipped_concepts": skipped,
        "duplicate_concepts": duplicates,
        "dropped_relations": dict(dropped),
        "cycles_dropped": cycles,
    }

    world = owlready2.World()  # isolated: nothing leaks into owlready2's default world
    try:
        onto = world.get_ontology(iri)
        with onto:
            with onto.get_namespace(OBO_IN_OWL):
                synonym_prop = types.new_class("hasExactSynonym", (owlready2.AnnotationProperty,))
            id_prop = types.new_class(ID_PROPERTY, (owlready2.AnnotationProperty,))
            kind_prop = types.new_class(KIND_PROPERTY, (owlready2.AnnotationProperty,))
            billable_prop = types.new_class(BILLABLE_PROPERTY, (owlready2.AnnotationProperty,))
            rel_props: dict[str, Any] = {}
            classes: dict[str, Any] = {}
            for cid in _parents_first(nodes, parents):
                concept = nodes[cid]
                bases = tuple(classes[p] for p in parents.get(cid, ())) or (owlready2.Thing,)
                cls = types.new_class(id_to_fragment(cid), bases)
                classes[cid] = cls
                counts["subclass_of"] += len(parents.get(cid, ()))
                id_prop[cls] = [cid]
                if concept.kind:
                    kind_prop[cls] = [concept.kind]
                if concept.billable:
                    billable_prop[cls] = [True]
                if concept.system != "SCTID":  # SNOMED CT: id only, never a description
                    title = _clean(concept.title or "")
                    if title:
                        owlready2.label[cls] = [title]
                    synonyms = list(dict.fromkeys(s for s in map(_clean, concept.synonyms) if s))
                    if synonyms:
                        synonym_prop[cls] = synonyms
                for relation, targets in notes.pop(cid, {}).items():
                    prop = rel_props.get(relation)
                    if prop is None:
                        prop = rel_props[relation] = types.new_class(
                            relation, (owlready2.AnnotationProperty,)
                        )
                    prop[cls] = targets
                    counts["annotations"][relation] += len(targets)
        counts["classes"] = len(classes)
        t_build = time.perf_counter() - t0
        _LOG.info("OWL export: %d classes built in %.1fs; writing %s", len(classes), t_build, target)
        _atomic_save(onto, target, format)
    finally:
        world.close()
    counts["annotations"] = dict(counts["annotations"])
    counts["seconds"] = round(time.perf_counter() - t0, 3)
    _LOG.info(
        "OWL export: wrote %s (%d classes, %d subClassOf, %d annotations) in %.1fs",
        target,
        counts["classes"],
        counts["subclass_of"],
        sum(counts["annotations"].values()),
        counts["seconds"],
    )
    return counts


def _drop_cycles(nodes: dict[str, Concept], parents: dict[str, list[str]]) -> int:
    """Remove ``is_a`` edges that close a cycle (depth-first, in node order); return how many."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    dropped = 0
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(list(parents.get(root, ()))))]
        while stack:
            node, it = stack[-1]
            for parent in it:
                mark = state.get(parent)
                if mark == 1:
                    parents[node].remove(parent)
                    dropped += 1
                    _LOG.warning("OWL export: is_a %s -> %s closes a cycle; dropped", node, parent)
                elif mark is None:
                    state[parent] = 1
                    stack.append((parent, iter(list(parents.get(parent, ())))))
                    break
            else:
                state[node] = 2
                stack.pop()
    return dropped


def _parents_first(nodes: dict[str, Concept], parents: dict[str, list[str]]) -> Iterable[str]:
    """Node ids ordered so that every parent comes before its children (graph is acyclic)."""
    done: set[str] = set()
    for root in nodes:
        if root in done:
            continue
        stack = [(root, iter(parents.get(root, ())))]
        while stack:
            node, it = stack[-1]
            for parent in it:
                if parent not in done:
                    stack.append((parent, iter(parents.get(parent, ()))))
                    break
            else:
                stack.pop()
                if node not in done:
                    done.add(node)
                    yield node


def _atomic_save(onto: Any, target: Path, format: str) -> None:
    """Save ``onto`` to a temporary file beside ``target``, then rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            onto.save(file=fh, format=format)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
