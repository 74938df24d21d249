"""KnowledgeGraph: resolving codes, hierarchy, neighbours, search, SNOMED CT links, merging."""

from __future__ import annotations

import logging

import networkx as nx
import pytest

from kg.errors import UnknownCodeError
from kg.graph import KnowledgeGraph
from ontologies.base import Concept, Relation
from ontologies.codes import InvalidCodeError

# ---------------------------------------------------------------------- resolve


@pytest.mark.parametrize(
    ("code", "system", "expected"),
    [
        ("E11.9", None, "ICD10CM:E11.9"),
        ("e119", None, "ICD10CM:E11.9"),
        (" E11.9 ", None, "ICD10CM:E11.9"),
        ("ICD10CM:E11.9", None, "ICD10CM:E11.9"),
        ("icd-10-cm:e11.9", None, "ICD10CM:E11.9"),
        ("25000", "ICD9", "ICD9CM:250.00"),
        ("ICD9CM:250.00", None, "ICD9CM:250.00"),
        ("44054006", "SCTID", "SCTID:44054006"),
        ("SNOMEDCT_US_2025_09_01:44054006", None, "SCTID:44054006"),
        ("DOID_9352", None, "DOID:9352"),
        ("E08-E13", None, "ICD10CM:E08-E13"),
    ],
)
def test_resolve_any_spelling(kg: KnowledgeGraph, code: str, system: str | None, expected: str) -> None:
    assert kg.resolve(code, system=system) == expected


def test_resolve_unknown_code_suggests_nearest(kg: KnowledgeGraph) -> None:
    with pytest.raises(UnknownCodeError) as info:
        kg.resolve("E11.99")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.code == "ICD10CM:E11.99"
    assert err.suggestions[:2] == ["ICD10CM:E11.9", "ICD10CM:E11.69"]
    assert len(err.suggestions) == 5
    assert all(s in kg for s in err.suggestions)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(
        "unknown code 'ICD10CM:E11.99': nearest valid codes: ICD10CM:E11.9, ICD10CM:E11.69, "
    )


def test_resolve_suggests_within_the_same_system(kg: KnowledgeGraph) -> None:
    with pytest.raises(UnknownCodeError) as info:
        kg.resolve("250.02", system="ICD9CM")
    assert info.value.suggestions[0] in {"ICD9CM:250.00", "ICD9CM:250.01", "ICD9CM:250.0"}
    assert all(s.startswith("ICD9CM:") for s in info.value.suggestions)


def test_resolve_malformed_code_raises_invalid_code_error(kg: KnowledgeGraph) -> None:
    with pytest.raises(InvalidCodeError):
        kg.resolve("XYZ")
    with pytest.raises(InvalidCodeError):
        kg.resolve("44054007", system="SCTID")  # bad Verhoeff check digit
    with pytest.raises(InvalidCodeError):
        kg.resolve("")


def test_unknown_code_error_without_suggestions() -> None:
    kg = KnowledgeGraph()
    with pytest.raises(UnknownCodeError, match=r"^unknown code 'ICD10CM:E11.9': no similar code"):
        kg.resolve("E11.9")


def test_contains_and_len(kg: KnowledgeGraph) -> None:
    assert "ICD10CM:E11.9" in kg
    assert "e11.9" in kg
    assert "E11.99" not in kg
    assert "not a code" not in kg
    assert 42 not in kg
    assert len(kg) == kg.graph.number_of_nodes() == 51
    assert kg.number_of_edges() == kg.graph.number_of_edges()
    assert repr(kg) == f"KnowledgeGraph(nodes=51, edges={kg.number_of_edges()})"


# ---------------------------------------------------------------------- lookup and hierarchy


def test_lookup_returns_a_detached_concept(kg: KnowledgeGraph) -> None:
    concept = kg.lookup("j45909")
    assert concept == Concept(
        id="ICD10CM:J45.909",
        system="ICD10CM",
        title="Unspecified asthma, uncomplicated",
        synonyms=["Asthma NOS"],
        kind="code",
        billable=True,
        attrs={},
        source="icd10cm",
    )
    concept.synonyms.append("changed")
    concept.attrs["x"] = 1
    assert kg.graph.nodes["ICD10CM:J45.909"]["synonyms"] == ["Asthma NOS"]
    assert kg.graph.nodes["ICD10CM:J45.909"]["attrs"] == {}


def test_parents_children_ancestors_descendants(kg: KnowledgeGraph) -> None:
    assert kg.parents("E11.21") == ["ICD10CM:E11.2"]
    assert kg.children("E11.2") == ["ICD10CM:E11.21", "ICD10CM:E11.22", "ICD10CM:E11.29"]
    assert kg.ancestors("E11.21") == ["ICD10CM:E11.2", "ICD10CM:E11", "ICD10CM:E08-E13", "ICD10CM:4"]
    assert kg.ancestors("4") == []
    desc = kg.descendants("E11")
    assert desc[:4] == ["ICD10CM:E11.0", "ICD10CM:E11.2", "ICD10CM:E11.6", "ICD10CM:E11.9"]
    assert set(desc) == {c for c in kg.graph if c.startswith("ICD10CM:E11.")}
    assert kg.children("E11.9") == []
    assert kg.ancestors("DOID:9352") == ["DOID:9351"]


def test_neighbors_hops_relations_direction(kg: KnowledgeGraph) -> None:
    assert kg.neighbors("E11.9") == {"ICD10CM:E11": 1, "ICD9CM:250.00": 1}
    two = kg.neighbors("E11.9", hops=2)
    assert two["ICD10CM:E11"] == 1
    assert two["ICD10CM:E10"] == 2  # E11 excludes1 E10
    assert two["DOID:9352"] == 2  # DOID:9352 xref E11
    assert "ICD10CM:E11.9" not in two
    assert kg.neighbors("E11.9", hops=3, relations={"is_a"}, direction="out") == {
        "ICD10CM:E11": 1,
        "ICD10CM:E08-E13": 2,
        "ICD10CM:4": 3,
    }
    assert kg.neighbors("E11", relations=["is_a"], direction="in") == {
        "ICD10CM:E11.0": 1,
        "ICD10CM:E11.2": 1,
        "ICD10CM:E11.6": 1,
        "ICD10CM:E11.9": 1,
    }
    with pytest.raises(ValueError, match="direction"):
        kg.neighbors("E11", direction="sideways")  # type: ignore[arg-type]


def test_edges_of(kg: KnowledgeGraph) -> None:
    out = kg.edges_of("E11", relations={"excludes1", "use_additional"})
    assert {(r.dst, r.relation) for r in out} == {
        ("ICD10CM:E10", "excludes1"),
        ("ICD10CM:Z79.4", "use_additional"),
    }
    excl = next(r for r in out if r.relation == "excludes1")
    assert excl.src == "ICD10CM:E11"
    assert excl.source == "icd10cm"
    assert excl.attrs == {"text": "type 1 diabetes mellitus (E10.-)"}
    incoming = kg.edges_of("E11", relations=["xref"], direction="in")
    assert sorted(r.src for r in incoming) == ["DOID:9352", "MONDO:0005148"]
    assert all(r.dst == "ICD10CM:E11" for r in incoming)
    both = kg.edges_of("E11.9", direction="both")
    assert {(r.src, r.dst, r.relation) for r in both} == {
        ("ICD10CM:E11.9", "ICD10CM:E11", "is_a"),
        ("ICD10CM:E11.9", "ICD9CM:250.00", "gem_equivalent"),
        ("ICD9CM:250.00", "ICD10CM:E11.9", "gem_equivalent"),
    }
    excl.attrs["text"] = "changed"
    assert kg.edges_of("E11", relations={"excludes1"})[0].attrs["text"] == "type 1 diabetes mellitus (E10.-)"


def test_inherited_notes_nearest_first(kg: KnowledgeGraph) -> None:
    notes = kg.inherited_notes("E11.21")
    assert [(r.src, r.relation, r.dst) for r in notes] == [
        ("ICD10CM:E11.2", "code_also", "ICD10CM:E10"),
        ("ICD10CM:E11", "excludes1", "ICD10CM:E10"),
        ("ICD10CM:E11", "use_additional", "ICD10CM:Z79.4"),
    ]
    assert [r.relation for r in kg.inherited_notes("E11.21", relations={"excludes1"})] == ["excludes1"]


# ---------------------------------------------------------------------- search


def test_search_exact_phrase_beats_all_words_beats_partial(kg: KnowledgeGraph) -> None:
    hits = kg.search("asthma")
    ids = [h[0] for h in hits]
    assert set(ids[:3]) == {"ICD10CM:J45", "DOID:2841", "MONDO:0004979"}
    assert all(score == 1.0 for _, _, score in hits[:3])
    assert all(score < 1.0 for _, _, score in hits[3:])
    scores = [s for _, _, s in hits]
    assert scores == sorted(scores, reverse=True)

    hits = kg.search("diabetes kidney type")  # every word, not as a phrase
    assert hits[0][0] == "ICD10CM:E11.2"
    full = [h for h in hits if 0.5 <= h[2] < 0.8]
    partial = [h for h in hits if h[2] < 0.4]
    assert {h[0] for h in full} == {"ICD10CM:E11.2", "ICD10CM:E11.22", "ICD10CM:E11.29"}
    assert partial, "codes with only some of the words rank below"
    assert hits.index(full[-1]) < hits.index(partial[0])


def test_search_matches_synonyms_case_insensitively(kg: KnowledgeGraph) -> None:
    node_id, matched, score = kg.search("HIGH BLOOD PRESSURE")[0]
    assert (node_id, matched, score) == ("ICD10CM:I10", "High blood pressure", 1.0)
    assert kg.search("niddm")[0][:2] == ("DOID:9352", "NIDDM")
    assert kg.search("intercapillary glomerulosclerosis")[0][0] == "ICD10CM:E11.21"


def test_search_prefix_of_the_last_word(kg: KnowledgeGraph) -> None:
    ids = [h[0] for h in kg.search("hypert")]
    assert "ICD10CM:I10" in ids
    assert "DOID:10763" in ids


def test_search_system_filter_and_limit(kg: KnowledgeGraph) -> None:
    hits = kg.search("diabetes", system="icd9")
    assert hits
    assert all(h[0].startswith("ICD9CM:") for h in hits)
    assert len(kg.search("diabetes", limit=3)) == 3
    assert kg.search("diabetes", limit=0) == []
    assert kg.search("   ") == []
    assert kg.search("zzzz qqqq") == []


def test_search_by_code(kg: KnowledgeGraph) -> None:
    assert kg.search("e119")[0] == ("ICD10CM:E11.9", "Type 2 diabetes mellitus without complications", 1.0)


def test_search_index_is_rebuilt_after_a_change(kg: KnowledgeGraph) -> None:
    assert kg.search("zebra fever") == []
    kg.add_concept(Concept("DOID:99999", "DOID", "zebra fever"))
    assert kg.search("zebra fever")[0][0] == "DOID:99999"


# ---------------------------------------------------------------------- SNOMED CT


def test_to_snomed_with_provenance(kg: KnowledgeGraph) -> None:
    assert kg.to_snomed("E11") == [
        {
            "sctid": "SCTID:44054006",
            "via": "DOID:9352",
            "via_label": "type 2 diabetes mellitus",
            "icd_match": "dbxref",
            "snomed_match": "dbxref",
            "source": "doid",
        },
        {
            "sctid": "SCTID:44054006",
            "via": "MONDO:0005148",
            "via_label": "type 2 diabetes mellitus",
            "icd_match": "exact",
            "snomed_match": "exact",
            "source": "mondo",
        },
    ]
    assert [(d["sctid"], d["via"]) for d in kg.to_snomed("E08-E13")] == [("SCTID:73211009", "DOID:9351")]
    assert [(d["sctid"], d["via"]) for d in kg.to_snomed("250.00", system="ICD9CM")] == [
        ("SCTID:44054006", "DOID:9352")
    ]


def test_to_snomed_needs_exact_or_dbxref_on_both_sides(kg: KnowledgeGraph) -> None:
    # MONDO:0005044's xref to I10 is broad; DOID:2841's xref to SNOMED is broad
    assert [(d["sctid"], d["via"]) for d in kg.to_snomed("I10")] == [("SCTID:38341003", "DOID:10763")]
    assert [(d["sctid"], d["via"]) for d in kg.to_snomed("J45")] == [("SCTID:195967001", "MONDO:0004979")]
    assert kg.to_snomed("E11.9") == []  # links are not inherited
    assert kg.to_snomed("DOID:9352") == []


def test_from_snomed(kg: KnowledgeGraph) -> None:
    links = kg.from_snomed("44054006")
    assert [(d["code"], d["via"]) for d in links] == [
        ("ICD10CM:E11", "DOID:9352"),
        ("ICD10CM:E11", "MONDO:0005148"),
        ("ICD9CM:250.00", "DOID:9352"),
    ]
    assert links[0]["title"] == "Type 2 diabetes mellitus"
    assert set(links[0]) == {"code", "title", "via", "via_label", "icd_match", "snomed_match", "source"}
    assert [d["code"] for d in kg.from_snomed("SCTID:38341003")] == ["ICD10CM:I10", "ICD9CM:401"]
    assert kg.from_snomed("59621000") == []
    with pytest.raises(UnknownCodeError):
        kg.from_snomed("421326000")


def test_snomed_nodes_never_have_a_title(kg: KnowledgeGraph) -> None:
    assert all(d["title"] == "" for _, d in kg.graph.nodes(data=True) if d["system"] == "SCTID")


# ---------------------------------------------------------------------- stats and iteration


def test_stats(kg: KnowledgeGraph) -> None:
    stats = kg.stats()
    assert stats["nodes"] == 51
    assert stats["edges"] == kg.graph.number_of_edges() == 63
    assert stats["nodes_by_system"] == {
        "DOID": 5, "ICD10CM": 28, "ICD9CM": 7, "MESH": 1, "MONDO": 3, "OMIM": 1, "SCTID": 6,
    }  # fmt: skip
    assert stats["nodes_by_kind"]["chapter"] == 4
    assert stats["edges_by_relation"] == {
        "code_also": 1, "equivalent": 3, "excludes1": 1, "gem_equivalent": 5, "is_a": 30,
        "use_additional": 1, "xref": 22,
    }  # fmt: skip
    # E11, E10, I10, J45 (the block E08-E13 has a link too, but a range is not a code)
    assert stats["icd10cm_with_snomed"] == 4
    assert stats["icd10cm_billable"] == 12


def test_iter_concepts_and_relations_rebuild_the_same_graph(kg: KnowledgeGraph) -> None:
    copy = KnowledgeGraph()
    copy.add_concepts(kg.iter_concepts())
    dropped, _ = copy.add_relations(kg.iter_relations())
    assert not dropped
    assert set(copy.graph.edges(keys=True)) == set(kg.graph.edges(keys=True))
    assert copy.stats() == kg.stats()
    assert copy.lookup("DOID:9352").synonyms == kg.lookup("DOID:9352").synonyms


# ---------------------------------------------------------------------- merging


def test_add_concept_merges_duplicates(kg: KnowledgeGraph) -> None:
    node = kg.graph.nodes["DOID:9352"]
    assert node["title"] == "type 2 diabetes mellitus"  # the first non-empty title wins
    # the later title becomes a synonym; synonyms are unioned in order
    assert node["synonyms"] == ["NIDDM", "type II diabetes mellitus", "type 2 diabetes", "T2DM"]
    assert node["sources"] == ["doid", "mondo"]
    assert node["attrs"] == {"from_mondo": True}

    g = KnowledgeGraph()
    g.add_concept(Concept("ICD10CM:E11", "ICD10CM", "", source="a"))
    g.add_concept(Concept("ICD10CM:E11", "ICD10CM", "Type 2", ["x"], "category", True, {"k": 1}, "b"))
    g.add_concept(Concept("ICD10CM:E11", "ICD10CM", "Other", ["x", "y"], "code", False, {"k": 2}, "b"))
    data = g.graph.nodes["ICD10CM:E11"]
    assert data == {
        "system": "ICD10CM",
        "title": "Type 2",
        "synonyms": ["x", "Other", "y"],
        "kind": "category",
        "billable": True,
        "attrs": {"k": 1},
        "sources": ["a", "b"],
    }


def test_add_concept_checks_the_id_prefix() -> None:
    with pytest.raises(ValueError, match="does not start with its system"):
        KnowledgeGraph().add_concept(Concept("E11.9", "ICD10CM"))
    with pytest.raises(ValueError, match="does not start with its system"):
        KnowledgeGraph().add_concept(Concept("ICD10CMX:E11.9", "ICD10CM"))


def test_snomed_title_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    g = KnowledgeGraph()
    with caplog.at_level(logging.WARNING, logger="kg.graph"):
        g.add_concept(Concept("SCTID:44054006", "SCTID", "Diabetes mellitus type 2 (disorder)"))
    assert g.graph.nodes["SCTID:44054006"]["title"] == ""
    assert "SCTID:44054006" in caplog.text
    assert "title" in caplog.text


def test_add_relation_merges_provenance(kg: KnowledgeGraph) -> None:
    # DO and Mondo both give DOID:9352 is_a DOID:9351: one edge, both sources
    data = kg.graph.edges["DOID:9352", "DOID:9351", "is_a"]
    assert data["relation"] == "is_a"
    assert data["source"] == "doid"
    assert data["attrs"] == {"sources": ["doid", "mondo"], "file": "mondo.sssom.tsv"}
    assert kg.graph.number_of_edges("DOID:9352", "DOID:9351") == 1

    g = KnowledgeGraph()
    for c in ("ICD10CM:E11", "ICD10CM:E10"):
        g.add_concept(Concept(c, "ICD10CM"))
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "a", {"text": "t"}))
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "a", {"text": "u", "extra": 1}))
    assert g.graph.edges["ICD10CM:E11", "ICD10CM:E10", "excludes1"]["attrs"] == {"text": "t", "extra": 1}
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "b"))
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "c"))
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "b"))
    assert g.graph.edges["ICD10CM:E11", "ICD10CM:E10", "excludes1"]["attrs"]["sources"] == ["a", "b", "c"]
    g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "code_also", "a"))
    assert g.graph.number_of_edges("ICD10CM:E11", "ICD10CM:E10") == 2


def test_add_relation_needs_both_ends() -> None:
    g = KnowledgeGraph()
    g.add_concept(Concept("ICD10CM:E11", "ICD10CM"))
    with pytest.raises(UnknownCodeError):
        g.add_relation(Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1"))
    dropped, examples = g.add_relations([Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", "x")])
    assert dropped == {("x", "excludes1"): 1}
    assert examples == {("x", "excludes1"): ["ICD10CM:E11 -> ICD10CM:E10"]}
    assert g.graph.number_of_nodes() == 1


def test_bulk_insert_equals_the_networkx_api(kg: KnowledgeGraph) -> None:
    """The fast fill of the adjacency dicts gives the graph networkx's own methods give."""
    ref = nx.MultiDiGraph()
    ref.add_nodes_from(kg.graph.nodes(data=True))
    ref.add_edges_from(kg.graph.edges(keys=True, data=True))
    assert nx.utils.graphs_equal(ref, kg.graph)
    assert sorted(ref.in_edges(keys=True)) == sorted(kg.graph.in_edges(keys=True))
    assert dict(ref.in_degree()) == dict(kg.graph.in_degree())
    assert ref.number_of_edges() == kg.graph.number_of_edges()
    # the graph stays usable through the public API
    assert kg.to_snomed("E11")
    kg.graph.remove_node("ICD10CM:E11")
    kg.clear_caches()
    assert "ICD10CM:E11" not in kg
    assert kg.stats()["icd10cm_with_snomed"] == 3
    assert "ICD10CM:E11" not in kg.graph.pred["ICD10CM:E08-E13"]
    assert kg.graph.number_of_edges() == ref.number_of_edges() - ref.degree("ICD10CM:E11")
