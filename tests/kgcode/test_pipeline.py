"""The default KG, built from the complete real code systems (real-data tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kg import KnowledgeGraph, load_kg
from kgcode.pipeline import BuildResult, build_default_kg
from ontologies import standardize

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def full(real_build: BuildResult) -> BuildResult:
    """ICD-10-CM + ICD-9-CM + GEMs + DO + Mondo, as `kgcode kg build` makes it (shared, read-only)."""
    return real_build


def test_every_icd10cm_code_of_the_package_is_in_the_kg(full: BuildResult) -> None:
    import simple_icd_10_cm

    expected = {standardize(code) for code in simple_icd_10_cm.get_all_codes(with_dots=True)}
    ids = {n for n, d in full.kg.graph.nodes(data=True) if d["system"] == "ICD10CM"}
    # a block holding one category (B20) is named B20-B20 so it does not collide with the category
    singles = {i for i in ids if "-" in i and i.split(":")[1].split("-")[0] == i.split(":")[1].split("-")[1]}
    as_package = (ids - singles) | {f"ICD10CM:{i.split(':')[1].split('-')[0]}" for i in singles}
    assert as_package == expected
    assert len(ids) == len(simple_icd_10_cm.get_all_codes())


def test_a15_8_has_its_four_inclusion_terms(full: BuildResult) -> None:
    concept = full.kg.lookup("A15.8")
    assert sorted(concept.synonyms) == [
        "Mediastinal tuberculosis",
        "Nasopharyngeal tuberculosis",
        "Tuberculosis of nose",
        "Tuberculosis of sinus [any nasal]",
    ]


def test_notes_and_gems_are_relations(full: BuildResult) -> None:
    kg: KnowledgeGraph = full.kg
    stats = kg.stats()
    for relation in ("excludes1", "excludes2", "code_first", "use_additional", "code_also"):
        assert stats["edges_by_relation"][relation] > 500, relation
    assert stats["edges_by_relation"]["gem_equivalent"] > 90_000
    e11 = {r.dst for r in kg.edges_of("E11", relations=["excludes1"])}
    assert {"ICD10CM:E10", "ICD10CM:E13", "ICD10CM:O24.4"} <= e11
    gem = {(r.src, r.dst) for r in kg.edges_of("E11.9", relations=["gem_equivalent"], direction="both")}
    assert ("ICD10CM:E11.9", "ICD9CM:250.00") in gem
    assert kg.lookup("ICD9CM:250.00").title.startswith("Diabetes mellitus without mention of complication")
    assert kg.parents("S72.001A") == ["ICD10CM:S72.001"]


def test_snomed_links_from_do_and_mondo(full: BuildResult) -> None:
    stats = full.kg.stats()
    assert stats["icd10cm_with_snomed"] >= 2800
    links = full.kg.to_snomed("E11")
    assert {(link["sctid"], link["via"]) for link in links} >= {
        ("SCTID:44054006", "DOID:9352"), ("SCTID:44054006", "MONDO:0005148")}
    assert all(link["sctid"].startswith("SCTID:") and link["via"].split(":")[0] in ("DOID", "MONDO")
               for link in links)
    back = full.kg.from_snomed(links[0]["sctid"])
    assert any(hit["code"] == "ICD10CM:E11" for hit in back)
    # identifiers only: no SNOMED CT node carries a description
    assert all(not d["title"] for n, d in full.kg.graph.nodes(data=True) if d["system"] == "SCTID")


def test_full_kg_round_trips_through_its_folder(full: BuildResult, tmp_path: Path) -> None:
    full.kg.save(tmp_path / "kg")
    loaded = load_kg(tmp_path / "kg")
    assert loaded.stats() == full.kg.stats()
    assert loaded.manifest["counts"]["nodes"] == len(full.kg)


def test_without_do_and_mondo_the_build_says_what_was_left_out(tmp_path: Path) -> None:
    result = build_default_kg(tmp_path, progress=False)
    assert any("Disease Ontology left out" in line for line in result.left_out)
    assert any("Mondo left out" in line for line in result.left_out)
    stats = result.kg.stats()
    assert "DOID" not in stats["nodes_by_system"] and stats["icd10cm_with_snomed"] == 0
    assert stats["nodes_by_system"]["ICD9CM"] > 15_000
