"""Building the knowledge graph from ontology sources.

Every source's concepts are loaded first, then every source's relations, so a relation may
point at a node another source defines. Relations with an end that no source defined are
dropped, counted per source and relation, logged and kept in ``kg.build_report``.

Example:
    >>> from kg import build_kg
    >>> kg = build_kg(["icd10cm", "icd9cm", "gem"])  # doctest: +SKIP
    >>> kg.build_report["dropped_relations"]  # doctest: +SKIP
    {'gem': {'gem_equivalent': 12}}
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any, TypeVar

from tqdm.auto import tqdm

from kg.graph import KnowledgeGraph
from ontologies.base import OntologySource
from ontologies.registry import resolve_source

__all__ = ["build_kg", "show_progress"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or (``None``) only when stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


class _Counted(Iterator[T]):
    """An iterator that counts what it yields."""

    def __init__(self, items: Iterable[T]) -> None:
        self._it = iter(items)
        self.n = 0

    def __iter__(self) -> _Counted[T]:
        return self

    def __next__(self) -> T:
        item = next(self._it)
        self.n += 1
        return item


def build_kg(sources: Iterable[OntologySource | str], *, progress: bool | None = None) -> KnowledgeGraph:
    """Build the knowledge graph from ontology sources.

    Args:
        sources: source instances or registry names (``"icd10cm"``, ``"gem"`` ...), built with
            their default arguments.
        progress: show a progress bar per source (``None``: only when stderr is a terminal).

    Returns:
        The graph. Its ``build_report`` holds ``dropped_relations`` ({source: {relation: n}}),
        ``dropped_examples`` (up to three ``"src -> dst"`` per source and relation),
        ``sources`` (each source's :class:`~ontologies.base.SourceInfo` as a dict), ``notes``
        and ``build_seconds``. Nodes a source lists in ``no_map_codes()`` (the GEMs' codes
        with no equivalent) get ``attrs["gem_no_map"] = True``.

    Raises:
        KeyError: a source name is not registered.
        SourceFormatError: a source file is malformed.
    """
    start = time.perf_counter()
    resolved = [resolve_source(s) for s in sources]
    show = show_progress(progress)
    kg = KnowledgeGraph()
    notes: list[str] = []

    for src in resolved:
        t0 = time.perf_counter()
        counted = _Counted(src.concepts())
        bar = tqdm(counted, desc=f"{src.name}: concepts", unit=" concepts", disable=not show, leave=False)
        new = kg.add_concepts(bar, source=src.name)
        bar.close()
        logger.info(
            "%s: %d concepts (%d new nodes) in %.2f s", src.name, counted.n, new, time.perf_counter() - t0
        )

    dropped_report: dict[str, dict[str, int]] = {}
    examples_report: dict[str, dict[str, list[str]]] = {}
    for src in resolved:
        t0 = time.perf_counter()
        counted_rel = _Counted(src.relations())
        bar = tqdm(
            counted_rel, desc=f"{src.name}: relations", unit=" relations", disable=not show, leave=False
        )
        dropped, examples = kg.add_relations(bar, source=src.name)
        bar.close()
        per_relation: dict[str, int] = {}
        for (_, relation), n in dropped.items():
            per_relation[relation] = per_relation.get(relation, 0) + n
        for (_, relation), ex in examples.items():
            examples_report.setdefault(src.name, {}).setdefault(relation, []).extend(ex)
        if per_relation:
            dropped_report[src.name] = dict(sorted(per_relation.items()))
            for relation, n in sorted(per_relation.items()):
                logger.info(
                    "%s: dropped %d %s relation(s) with an end not in the graph, e.g. %s",
                    src.name,
                    n,
                    relation,
                    ", ".join(examples_report[src.name][relation][:3]),
                )
        logger.info(
            "%s: %d relations (%d dropped) in %.2f s",
            src.name,
            counted_rel.n,
            sum(per_relation.values()),
            time.perf_counter() - t0,
        )

    for src in resolved:
        no_map = getattr(src, "no_map_codes", None)
        if callable(no_map):
            notes += _mark_no_map(kg, src.name, no_map())

    infos: list[dict[str, Any]] = []
    for src in resolved:
        info = src.info()
        infos.append(asdict(info))
        notes += [f"{info.name}: {note}" for note in info.notes]

    seconds = time.perf_counter() - start
    kg.build_report = {
        "dropped_relations": dropped_report,
        "dropped_examples": examples_report,
        "sources": infos,
        "notes": notes,
        "build_seconds": round(seconds, 3),
    }
    logger.info(
        "built KG in %.1f s: %d nodes, %d edges",
        seconds,
        kg.number_of_nodes(),
        kg.number_of_edges(),
    )
    return kg


def _mark_no_map(kg: KnowledgeGraph, source: str, codes: Iterable[str]) -> list[str]:
    nodes = kg.graph._node
    marked = 0
    missing: list[str] = []
    for code in codes:
        node_id = code if code in nodes else None
        if node_id is None:
            try:  # a system-qualified id in another spelling; a bare code's system is unknown
                node_id = kg.resolve(code) if ":" in code else None
            except ValueError:
                node_id = None
        if node_id is None:
            missing.append(code)
            continue
        nodes[node_id]["attrs"]["gem_no_map"] = True
        marked += 1
    logger.info("%s: %d code(s) marked gem_no_map", source, marked)
    if not missing:
        return []
    line = f"{source}: {len(missing)} no-map code(s) not in the graph, e.g. {', '.join(missing[:3])}"
    logger.info(line)
    return [line]
