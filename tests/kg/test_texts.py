"""Node texts for the text encoder (``kg.texts``), on the fake KG of ``conftest.py``."""

from __future__ import annotations

from kg.graph import KnowledgeGraph
from kg.texts import TEXTS_VERSION, node_names, node_text, node_texts, texts_key_parts
from ontologies.base import Concept, Relation


def test_icd_code_text_has_title_synonyms_and_parent(kg: KnowledgeGraph) -> None:
    assert node_text(kg, "ICD10CM:E11.9") == (
        "Type 2 diabetes mellitus without complications; parent: Type 2 diabetes mellitus"
    )
    assert node_text(kg, "ICD10CM:E11.21") == (
        "Type 2 diabetes mellitus with diabetic nephropathy; "
        "Type 2 diabetes mellitus with intercapillary glomerulosclerosis; "
        "parent: Type 2 diabetes mellitus with kidney complications"
    )
    # a block parent loses its range; a chapter is never a parent
    assert node_text(kg, "ICD10CM:E11") == (
        "Type 2 diabetes mellitus; Insulin resistant diabetes mellitus; parent: Diabetes mellitus"
    )
    assert "Endocrine" not in node_text(kg, "ICD10CM:E08-E13")
    assert node_text(kg, "ICD10CM:E11.9", parents=False) == "Type 2 diabetes mellitus without complications"


def test_concept_text_is_label_and_synonyms(kg: KnowledgeGraph) -> None:
    text = node_text(kg, "DOID:9352")
    assert text.startswith("type 2 diabetes mellitus; ")
    assert "NIDDM" in text and "parent" not in text
    assert node_names(kg, "DOID:9352")[0] == "type 2 diabetes mellitus"
    assert node_text(kg, "DOID:9352", max_synonyms=0) == "type 2 diabetes mellitus"


def test_snomed_ids_have_no_text(kg: KnowledgeGraph) -> None:
    assert node_text(kg, "SCTID:44054006") == ""
    assert node_names(kg, "SCTID:44054006") == []


def test_names_dedupe_case_insensitively_and_add_inclusion_terms() -> None:
    kg = KnowledgeGraph()
    kg.add_concept(
        Concept(
            "ICD10CM:J45",
            "ICD10CM",
            "Asthma",
            synonyms=["asthma", "Asthma  NOS"],
            kind="category",
            attrs={"notes": {"includes": ["allergic (predominantly) asthma"]}},
        )
    )
    assert node_names(kg, "ICD10CM:J45") == ["Asthma", "Asthma NOS", "allergic (predominantly) asthma"]


def test_texts_never_read_links(kg: KnowledgeGraph) -> None:
    ids, before = node_texts(kg, systems=["ICD10CM", "DOID", "MONDO"])
    assert ids == sorted(ids, key=lambda n: (n.partition(":")[0], n))
    kg.add_relation(Relation("DOID:9744", "ICD10CM:E11.9", "xref", attrs={"match": "exact"}))
    kg.add_relation(Relation("ICD9CM:250.00", "ICD10CM:E11.21", "gem_equivalent"))
    assert node_texts(kg, ids)[1] == before


def test_key_parts_name_recipe_and_source_versions(kg: KnowledgeGraph) -> None:
    parts = texts_key_parts(kg, kind="node_text/ICD10CM")
    assert parts["texts_version"] == TEXTS_VERSION and parts["kind"] == "node_text/ICD10CM"
    other = KnowledgeGraph()
    assert texts_key_parts(other)["kg_sources_sha256"] != parts["kg_sources_sha256"]
    kg.manifest = {"sources": [{"name": s["name"], "version": s["version"], "files": [{"path": "/elsewhere"}]}
                               for s in kg.build_report["sources"]]}  # fmt: skip
    assert texts_key_parts(kg, kind="node_text/ICD10CM") == parts  # file paths do not matter
