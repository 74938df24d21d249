"""build_kg: concepts before relations, dropped relations counted, provenance, GEM no-map."""

from __future__ import annotations

import logging

import pytest

from kg import build_kg
from kg.build import show_progress
from kg.graph import KnowledgeGraph
from ontologies.base import Concept, OntologySource, Relation
from ontologies.registry import ontology_registry

from .conftest import FakeDO, FakeGEM, FakeICD9CM, FakeICD10CM, FakeMondo, FakeSource, fake_sources


def test_build_report_counts_dropped_relations_per_source_and_relation(kg: KnowledgeGraph) -> None:
    assert kg.build_report["dropped_relations"] == {
        "icd10cm": {"excludes1": 2},
        "icd9cm": {"is_a": 1},
        "gem": {"gem_equivalent": 1},
        "doid": {"xref": 1},
        "mondo": {"xref": 1},
    }
    assert kg.build_report["dropped_examples"]["icd9cm"] == {"is_a": ["ICD9CM:493.90 -> ICD9CM:493.9"]}
    assert "ICD10CM:O24.1" not in kg.graph
    assert not kg.graph.has_edge("ICD10CM:E11", "ICD10CM:O24.1")


def test_build_report_sources_and_notes(kg: KnowledgeGraph) -> None:
    sources = kg.build_report["sources"]
    assert [s["name"] for s in sources] == ["icd10cm", "icd9cm", "gem", "doid", "mondo"]
    assert sources[0] == {
        "name": "icd10cm",
        "version": "2026",
        "files": [{"path": "/data/icd10cm.txt", "sha256": "0" * 64, "size": 123}],
        "notes": ["fake icd10cm source"],
    }
    notes = kg.build_report["notes"]
    assert "icd10cm: fake icd10cm source" in notes
    assert any("ICD9CM:V99.99" in n for n in notes)  # a no-map code that is not a node
    assert kg.build_report["build_seconds"] >= 0


def test_relations_may_point_at_nodes_of_a_later_source() -> None:
    """GEM edges come before the DO/Mondo concepts in source order but are kept."""
    kg = build_kg([FakeGEM(), FakeMondo(), FakeICD10CM(), FakeICD9CM(), FakeDO()], progress=False)
    assert kg.graph.has_edge("ICD9CM:250.00", "ICD10CM:E11.9", "gem_equivalent")
    assert kg.graph.has_edge("MONDO:0005148", "DOID:9352", "equivalent")
    assert kg.stats() == build_kg(fake_sources(), progress=False).stats()


def test_provenance_on_nodes_and_edges(kg: KnowledgeGraph) -> None:
    assert kg.graph.nodes["ICD10CM:E11.9"]["sources"] == ["icd10cm"]
    assert kg.graph.nodes["SCTID:44054006"]["sources"] == ["doid", "mondo"]
    edge = kg.graph.edges["ICD9CM:493.90", "ICD10CM:J45.909", "gem_equivalent"]
    assert edge == {
        "relation": "gem_equivalent",
        "source": "gem",
        "attrs": {"file": "2018_I9gem.txt", "approximate": True},
    }
    assert kg.graph.edges["DOID:9352", "ICD10CM:E11", "xref"]["attrs"]["match"] == "dbxref"


def test_gem_no_map_codes_are_marked(kg: KnowledgeGraph) -> None:
    assert kg.graph.nodes["ICD10CM:Z79.4"]["attrs"] == {"gem_no_map": True}
    assert "gem_no_map" not in kg.graph.nodes["ICD10CM:E11.9"]["attrs"]


def test_sources_by_registry_name(monkeypatch: pytest.MonkeyPatch) -> None:
    classes = ontology_registry._classes  # the registry's own dict, restored after the test
    monkeypatch.setitem(classes, "fake-icd10cm", FakeICD10CM)
    monkeypatch.setitem(classes, "fake-icd9cm", FakeICD9CM)
    kg = build_kg(["fake-icd10cm", "fake-icd9cm", FakeGEM()], progress=False)
    assert kg.stats()["nodes_by_system"] == {"ICD10CM": 28, "ICD9CM": 7}
    assert kg.graph.has_edge("ICD9CM:250.00", "ICD10CM:E11.9")


def test_unknown_source_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown ontology source 'nope'"):
        build_kg(["nope"], progress=False)


def test_concept_without_source_gets_the_source_name() -> None:
    class Bare(FakeSource):
        name = "bare"
        concept_list = [Concept("DOID:1", "DOID", "a"), Concept("DOID:2", "DOID", "b")]
        relation_list = [Relation("DOID:2", "DOID:1", "is_a")]

    kg = build_kg([Bare()], progress=False)
    assert kg.graph.nodes["DOID:1"]["sources"] == ["bare"]
    assert kg.graph.edges["DOID:2", "DOID:1", "is_a"]["source"] == "bare"
    assert kg.build_report["dropped_relations"] == {}


def test_sources_are_read_lazily_once() -> None:
    calls: list[str] = []

    class Counting(FakeICD10CM):
        def concepts(self):  # type: ignore[no-untyped-def]
            calls.append("concepts")
            return super().concepts()

        def relations(self):  # type: ignore[no-untyped-def]
            calls.append("relations")
            return super().relations()

    build_kg([Counting()], progress=False)
    assert calls == ["concepts", "relations"]


def test_dropped_relations_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kg.build"):
        build_kg(fake_sources(), progress=False)
    assert "icd10cm: dropped 2 excludes1 relation(s)" in caplog.text
    assert "ICD10CM:E11 -> ICD10CM:O24.1" in caplog.text


def test_progress_bars(capsys: pytest.CaptureFixture[str]) -> None:
    build_kg(fake_sources(), progress=False)
    assert capsys.readouterr().err == ""
    build_kg(fake_sources(), progress=True)
    assert "icd10cm: concepts" in capsys.readouterr().err
    assert show_progress(True) is True
    assert show_progress(False) is False
    assert show_progress(None) is False  # stderr is captured, not a terminal


def test_empty_build() -> None:
    kg = build_kg([], progress=False)
    assert len(kg) == 0
    assert kg.stats()["edges"] == 0
    assert kg.build_report["sources"] == []


def test_source_contract_is_the_base_class() -> None:
    assert all(isinstance(s, OntologySource) for s in fake_sources())
