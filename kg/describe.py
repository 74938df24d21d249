"""One code's record: what ``kgcode kg show`` prints and ``GET /codes/{code}`` returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph

__all__ = ["NOTE_RELATIONS", "describe"]

#: Relations that come from the tabular's instructional notes.
NOTE_RELATIONS: tuple[str, ...] = ("excludes1", "excludes2", "code_first", "use_additional", "code_also")


def _brief(kg: KnowledgeGraph, node_id: str) -> dict[str, Any]:
    data = kg.graph.nodes[node_id]
    return {"id": node_id, "title": data.get("title", "")}


def describe(kg: KnowledgeGraph, code: str, *, system: str | None = None) -> dict[str, Any]:
    """Everything a coder wants to see about one code.

    Instructional notes (excludes, code first, use additional, code also) are listed for the
    code itself and, as the tabular means them, inherited from its ancestors (``from`` says
    which ancestor carries the note).

    Args:
        kg: the knowledge graph.
        code: the code in any spelling (``e119``, ``ICD9CM:250.00``).
        system: the system of a bare code (default ICD-10-CM).

    Returns:
        A JSON-ready dict: id, system, title, kind, billable, synonyms, parents, children,
        ancestors, one list per note relation, ``gem`` (both directions, with flags),
        ``snomed`` (with DO/Mondo provenance) and ``xrefs`` (DO/Mondo concepts naming it).

    Raises:
        ontologies.InvalidCodeError: the code is malformed.
        kg.UnknownCodeError: the code is not in the KG (with suggestions).
    """
    node_id = kg.resolve(code, system)
    data = kg.graph.nodes[node_id]
    record: dict[str, Any] = {
        "id": node_id,
        "system": data.get("system", ""),
        "title": data.get("title", ""),
        "kind": data.get("kind", ""),
        "billable": bool(data.get("billable", False)),
        "synonyms": list(data.get("synonyms") or []),
        "parents": [_brief(kg, p) for p in kg.parents(node_id)],
        "children": [_brief(kg, c) for c in kg.children(node_id)],
        "ancestors": [_brief(kg, a) for a in kg.ancestors(node_id)],
    }
    carriers = [node_id, *kg.ancestors(node_id)]
    for relation in NOTE_RELATIONS:
        items: list[dict[str, Any]] = []
        for carrier in carriers:
            for rel in kg.edges_of(carrier, relations=[relation], direction="out"):
                item = _brief(kg, rel.dst)
                item["from"] = carrier
                if rel.attrs.get("text"):
                    item["note"] = rel.attrs["text"]
                items.append(item)
        record[relation] = items
    gem: list[dict[str, Any]] = []
    for rel in kg.edges_of(node_id, relations=["gem_equivalent"], direction="both"):
        other = rel.dst if rel.src == node_id else rel.src
        flags = {k: rel.attrs[k] for k in ("approximate", "combination", "scenario", "choice_list")
                 if k in rel.attrs}
        gem.append({**_brief(kg, other), "direction": rel.attrs.get("direction", ""), **flags})
    record["gem"] = gem
    if data.get("attrs", {}).get("gem_no_map"):
        record["gem_no_map"] = True
    record["snomed"] = kg.to_snomed(node_id) if record["system"] in ("ICD10CM", "ICD9CM") else []
    record["xrefs"] = [
        {**_brief(kg, rel.src), "match": rel.attrs.get("match", ""), "source": rel.source}
        for rel in kg.edges_of(node_id, relations=["xref"], direction="in")
    ]
    return record
