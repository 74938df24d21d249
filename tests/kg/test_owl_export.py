"""export_owl: round trip through owlready2 and OWLSource, filters, cycles, atomic writes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import owlready2
import pytest

from kg.owl_export import export_owl
from ontologies.base import Concept, Relation
from ontologies.owl import OBO_IN_OWL, OWLSource

SCTID = "SCTID:1000004"  # made up; passes the Verhoeff check


def _c(
    cid: str, title: str, kind: str = "concept", *, synonyms: tuple[str, ...] = (), billable: bool = False
) -> Concept:
    return Concept(
        id=cid,
        system=cid.partition(":")[0],
        title=title,
        synonyms=list(synonyms),
        kind=kind,
        billable=billable,
        source="test",
    )


CONCEPTS = [
    _c("ICD10CM:4", "Endocrine, nutritional and metabolic diseases (E00-E89)", "chapter"),
    _c("ICD10CM:E08-E13", "Diabetes mellitus", "block"),
    _c("ICD10CM:E10", "Type 1 diabetes mellitus", "category"),
    _c("ICD10CM:E11", "Type 2 diabetes mellitus", "category", synonyms=("NIDDM",)),
    _c("ICD10CM:E10.9", "Type 1 diabetes mellitus without complications", "code", billable=True),
    _c(
        "ICD10CM:E11.9",
        "Type 2 diabetes mellitus without complications",
        "code",
        synonyms=("Type 2 diabetes NOS", "diabetes & obesity <test>"),
        billable=True,
    ),
    _c("ICD10CM:E11.65", "Type 2 diabetes mellitus with hyperglycemia", "code", billable=True),
    _c("ICD10CM:Z79.4", "Long term (current) use of insulin", "code", billable=True),
    _c("ICD9CM:250", "Diabetes mellitus", "category"),
    _c("ICD9CM:250.00", "Diabetes mellitus without mention of complication, type II", "code"),
    _c("DOID:9351", "diabetes mellitus"),
    _c("DOID:9352", "type 2 diabetes mellitus", synonyms=("type II diabetes mellitus",)),
    _c("MONDO:0005148", "type 2 diabetes mellitus"),
    _c(SCTID, "SNOMED DESCRIPTION MUST NOT BE EXPORTED", synonyms=("nor this",)),
    _c("ICD10CM:E11.6", "Type 2 diabetes mellitus with other specified complications", "category"),
]

RELATIONS = [
    Relation("ICD10CM:E08-E13", "ICD10CM:4", "is_a"),
    Relation("ICD10CM:E10", "ICD10CM:E08-E13", "is_a"),
    Relation("ICD10CM:E11", "ICD10CM:E08-E13", "is_a"),
    Relation("ICD10CM:E10.9", "ICD10CM:E10", "is_a"),
    Relation("ICD10CM:E11.9", "ICD10CM:E11", "is_a"),
    Relation("ICD10CM:E11.6", "ICD10CM:E11", "is_a"),
    Relation("ICD10CM:E11.65", "ICD10CM:E11.6", "is_a"),
    Relation("ICD9CM:250.00", "ICD9CM:250", "is_a"),
    Relation("DOID:9352", "DOID:9351", "is_a"),
    Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", attrs={"text": "type 1 diabetes (E10.-)"}),
    Relation("ICD10CM:E11", "ICD10CM:Z79.4", "use_additional"),
    Relation("ICD10CM:E11.9", "ICD9CM:250.00", "gem_equivalent", attrs={"approximate": False}),
    Relation("ICD9CM:250.00", "ICD10CM:E11.9", "gem_equivalent"),
    Relation("DOID:9352", "ICD10CM:E11", "xref", attrs={"match": "dbxref"}),
    Relation("DOID:9352", SCTID, "xref", attrs={"match": "dbxref"}),
    Relation("MONDO:0005148", "DOID:9352", "equivalent"),
]


def _triples(relations: Iterable[Relation]) -> set[tuple[str, str, str]]:
    return {(r.src, r.dst, r.relation) for r in relations}


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "out" / "kg.owl"
    counts = export_owl(iter(CONCEPTS), iter(RELATIONS), path)
    return path, counts


def test_counts(exported: tuple[Path, dict[str, Any]]) -> None:
    path, counts = exported
    assert counts["classes"] == len(CONCEPTS)
    assert counts["subclass_of"] == sum(r.relation == "is_a" for r in RELATIONS)
    assert counts["annotations"] == {
        "excludes1": 1,
        "use_additional": 1,
        "gem_equivalent": 2,
        "xref": 2,
        "equivalent": 1,
    }
    assert counts["dropped_relations"] == {}
    assert counts["path"] == str(path)
    assert counts["seconds"] >= 0


def test_reload_with_owlready2(exported: tuple[Path, dict[str, Any]]) -> None:
    path, _ = exported
    world = owlready2.World()
    try:
        onto = world.get_ontology(path.resolve().as_uri()).load()
        kid = world["http://kgcode.org/kg.owl#kgcode_id"]
        synonym = world[OBO_IN_OWL + "hasExactSynonym"]
        by_id = {kid[cls][0]: cls for cls in onto.classes()}
        assert set(by_id) == {c.id for c in CONCEPTS}
        assert by_id["ICD10CM:E11.9"].iri == "http://kgcode.org/kg.owl#ICD10CM_E11.9"
        assert by_id["ICD10CM:E08-E13"].name == "ICD10CM_E08-E13"
        # every is_a edge is a subClassOf; roots are subclasses of owl:Thing
        sub = {
            (kid[cls][0], kid[parent][0])
            for cls in by_id.values()
            for parent in cls.is_a
            if parent is not owlready2.Thing
        }
        assert sub == {(r.src, r.dst) for r in RELATIONS if r.relation == "is_a"}
        assert by_id["ICD10CM:4"].is_a == [owlready2.Thing]
        for c in CONCEPTS:
            cls = by_id[c.id]
            if c.system == "SCTID":
                assert list(cls.label) == [] and list(synonym[cls]) == []
            else:
                assert [str(v) for v in cls.label] == [c.title]
                assert sorted(map(str, synonym[cls])) == sorted(c.synonyms)
    finally:
        world.close()
    assert "http://kgcode.org/kg.owl#" not in owlready2.default_world.ontologies


def test_round_trip_through_owl_source(exported: tuple[Path, dict[str, Any]]) -> None:
    path, _ = exported
    src = OWLSource(path)
    got = {c.id: c for c in src.concepts()}
    assert set(got) == {c.id for c in CONCEPTS}
    for c in CONCEPTS:
        back = got[c.id]
        assert back.system == c.system
        assert (back.kind, back.billable) == (c.kind, c.billable)
        if c.system == "SCTID":
            assert (back.title, back.synonyms) == ("", [])
        else:
            assert back.title == c.title
            assert sorted(back.synonyms) == sorted(c.synonyms)
    assert _triples(src.relations()) == _triples(RELATIONS)
    assert src.info().version == "unversioned"
    assert src.skipped == {}


def test_ntriples_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "kg.nt"
    export_owl(CONCEPTS, RELATIONS, path, format="ntriples")
    assert path.read_bytes().lstrip().startswith(b"<")
    src = OWLSource(path)
    assert {c.id for c in src.concepts()} == {c.id for c in CONCEPTS}
    assert _triples(src.relations()) == _triples(RELATIONS)


def test_systems_filter(tmp_path: Path) -> None:
    path = tmp_path / "icd10.owl"
    counts = export_owl(CONCEPTS, RELATIONS, path, systems={"icd-10-cm"})
    icd10 = [c for c in CONCEPTS if c.system == "ICD10CM"]
    assert counts["classes"] == len(icd10)
    assert counts["skipped_concepts"] == len(CONCEPTS) - len(icd10)
    kept = [r for r in RELATIONS if r.src.startswith("ICD10CM:") and r.dst.startswith("ICD10CM:")]
    assert sum(counts["dropped_relations"].values()) == len(RELATIONS) - len(kept)
    src = OWLSource(path)
    assert {c.id for c in src.concepts()} == {c.id for c in icd10}
    assert _triples(src.relations()) == _triples(kept)


def test_cycles_dangling_and_duplicates(tmp_path: Path) -> None:
    concepts = [_c("DOID:1", "a"), _c("DOID:2", "b"), _c("DOID:3", "c"), _c("DOID:1", "dup")]
    relations = [
        Relation("DOID:1", "DOID:2", "is_a"),
        Relation("DOID:2", "DOID:3", "is_a"),
        Relation("DOID:3", "DOID:1", "is_a"),  # closes a cycle
        Relation("DOID:1", "DOID:1", "is_a"),  # self loop
        Relation("DOID:1", "DOID:999", "is_a"),  # target not exported
        Relation("DOID:1", "DOID:2", "no_such_relation"),
    ]
    counts = export_owl(concepts, relations, tmp_path / "c.owl")
    assert counts["classes"] == 3
    assert counts["duplicate_concepts"] == 1
    assert counts["cycles_dropped"] == 1
    assert counts["subclass_of"] == 2
    assert counts["dropped_relations"] == {"is_a": 2, "no_such_relation": 1}
    titles = {c.id: c.title for c in OWLSource(tmp_path / "c.owl").concepts()}
    assert titles == {"DOID:1": "a", "DOID:2": "b", "DOID:3": "c"}


def test_bad_id_and_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="system-qualified"):
        export_owl([Concept(id="E11.9", system="ICD10CM")], [], tmp_path / "x.owl")
    with pytest.raises(ValueError, match="format"):
        export_owl(CONCEPTS, RELATIONS, tmp_path / "x.owl", format="turtle")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "kg.owl"
    export_owl(CONCEPTS, RELATIONS, target)
    previous = target.read_bytes()

    def failing_save(self: Any, file: Any = None, format: str = "rdfxml", **kwargs: Any) -> None:
        file.write(b'<?xml version="1.0"?>\n<rdf:RDF half written')
        raise OSError("disk full")

    monkeypatch.setattr(owlready2.Ontology, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_owl(CONCEPTS[:3], [], target)
    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["kg.owl"]  # no temporary file left

    fresh = tmp_path / "new.owl"
    with pytest.raises(OSError, match="disk full"):
        export_owl(CONCEPTS, RELATIONS, fresh)
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["kg.owl"]
