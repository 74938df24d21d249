"""Which nodes and edges a neighbourhood view holds, and the rule that cuts a large one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from kg.build import build_kg
from kg.errors import UnknownCodeError
from kg.graph import KnowledgeGraph
from kg.neighborhood import CROSS_LINKS, Neighborhood, check_relations, neighborhood
from ontologies import InvalidCodeError, resolve_source
from ontologies.base import RELATIONS, Concept, Relation


@pytest.fixture(scope="module")
def fkg(fixtures_dir: Path) -> KnowledgeGraph:
    """The fixture KG: mini ICD-10-CM tabular XML, tiny DO and Mondo (do not change it)."""
    sources = [
        resolve_source("icd10cm", xml_path=fixtures_dir / "icd10cm_mini.xml"),
        resolve_source("doid", data_dir=fixtures_dir),
        resolve_source("mondo", data_dir=fixtures_dir),
    ]
    return build_kg(sources, progress=False)


def _ids(nb: Neighborhood) -> set[str]:
    return set(nb.node_ids())


def _triples(nb: Neighborhood) -> set[tuple[str, str, str]]:
    return {(e["src"], e["relation"], e["dst"]) for e in nb.edges}


def _chain(names: list[str], extra: Sequence[tuple[str, str, str]] = ()) -> KnowledgeGraph:
    """A handmade graph of DOID concepts: is_a along ``names``, plus ``extra`` (src, rel, dst)."""
    kg = KnowledgeGraph()
    ids = set(names) | {x for s, _, d in extra for x in (s, d)}
    for n in sorted(ids):
        kg.add_concept(Concept(n, "DOID", f"concept {n}"))
    for child, parent in zip(names, names[1:], strict=False):
        kg.add_relation(Relation(child, parent, "is_a", "test"))
    for s, rel, d in extra:
        kg.add_relation(Relation(s, d, rel, "test"))
    return kg


# ----------------------------------------------------------------------------- one code


def test_one_hop_is_the_code_and_its_direct_links(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["e119"], hops=1)
    assert nb.centers == ["ICD10CM:E11.9"]
    assert nb.node_ids() == ["ICD10CM:E11.9", "ICD10CM:E11"]
    assert [(n["hop"], n["is_center"]) for n in nb.nodes] == [(0, True), (1, False)]
    assert _triples(nb) == {("ICD10CM:E11.9", "is_a", "ICD10CM:E11")}
    edge = nb.edges[0]
    assert edge["predicted"] is False and edge["score"] is None and edge["source"] == "icd10cm"
    assert nb.nodes[0]["title"] == "Type 2 diabetes mellitus without complications"
    assert nb.cut["applied"] is False and nb.total_nodes_before_cut == 2


def test_two_hops_reach_siblings_notes_and_do_mondo(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11.9"], hops=2)
    hop = {n["id"]: n["hop"] for n in nb.nodes}
    assert hop["ICD10CM:E11"] == 1
    for two in ("ICD10CM:E08-E13", "ICD10CM:E11.6", "ICD10CM:E10", "ICD10CM:Z79.4", "DOID:9352",
                "MONDO:0005148"):
        assert hop[two] == 2, two
    assert "ICD10CM:E11.65" not in hop  # three hops away
    assert set(hop) == {"ICD10CM:E11.9", *fkg.neighbors("E11.9", hops=2)}
    triples = _triples(nb)
    assert ("ICD10CM:E11", "excludes1", "ICD10CM:E10") in triples
    assert ("ICD10CM:E11", "use_additional", "ICD10CM:Z79.4") in triples
    assert ("DOID:9352", "xref", "ICD10CM:E11") in triples
    assert all(e["src"] in hop and e["dst"] in hop for e in nb.edges)
    note = next(e for e in nb.edges if e["relation"] == "use_additional" and e["dst"] == "ICD10CM:Z79.4")
    assert "insulin" in note["attrs"]["text"]


def test_outer_ring_edges_are_left_out_and_counted(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11.9"], hops=2)
    full = neighborhood(fkg, ["E11.9"], hops=2, outer_edges=True)
    ring = ("ICD10CM:E10", "excludes1", "ICD10CM:E08")  # both two hops away
    assert ring in _triples(full) and ring not in _triples(nb)
    assert _ids(nb) == _ids(full)
    assert nb.cut["edges_left_out"] == len(full.edges) - len(nb.edges) > 0
    assert any("outermost ring" in note for note in nb.cut["notes"])
    assert "outermost ring" in nb.cut["rule"]
    assert full.cut["edges_left_out"] == 0 and "outermost" not in full.cut["rule"]


def test_relation_filter_follows_and_draws_only_those(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11"], hops=1, relations=["is_a"])
    assert _ids(nb) == {"ICD10CM:E11", "ICD10CM:E08-E13", "ICD10CM:E11.6", "ICD10CM:E11.9"}
    assert {e["relation"] for e in nb.edges} == {"is_a"}
    assert nb.relations == ["is_a"]
    notes = neighborhood(fkg, ["E11"], hops=1, relations=["excludes1", "use_additional"])
    assert "ICD10CM:E11.9" not in _ids(notes) and "ICD10CM:E10" in _ids(notes)
    assert {e["relation"] for e in notes.edges} <= {"excludes1", "use_additional"}


def test_unknown_relation_is_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown relation.*is_a.*equivalent"):
        check_relations(["is_a", "parent_of"])
    assert check_relations(None) == list(RELATIONS)
    assert check_relations(["xref", "is_a", "xref"]) == ["is_a", "xref"]


def _rank(nb_full: Neighborhood, kg: KnowledgeGraph) -> list[str]:
    """The cut order computed independently: hop, then is_a to a nearer node first, then id."""
    hop = {n["id"]: n["hop"] for n in nb_full.nodes}

    def by_is_a(node: str) -> bool:
        return any(
            hop.get(other) == hop[node] - 1
            for rel in kg.edges_of(node, relations=["is_a"], direction="both")
            for other in (rel.src, rel.dst)
        )

    return sorted((n for n in hop if hop[n] > 0), key=lambda n: (hop[n], not by_is_a(n), n))


@pytest.mark.parametrize("max_nodes", [2, 5, 8, 20])
def test_cut_keeps_nearest_first_and_hierarchy_before_cross_links(
    fkg: KnowledgeGraph, max_nodes: int
) -> None:
    full = neighborhood(fkg, ["E11"], hops=2, max_nodes=10_000)
    nb = neighborhood(fkg, ["E11"], hops=2, max_nodes=max_nodes)
    expected = ["ICD10CM:E11", *_rank(full, fkg)[: max_nodes - 1]]
    assert nb.node_ids() == expected
    assert nb.cut["applied"] is True
    assert nb.cut["shown"] == max_nodes and nb.cut["total"] == nb.total_nodes_before_cut == len(full.nodes)
    assert nb.cut["dropped"] == len(full.nodes) - max_nodes
    assert sum(nb.cut["dropped_by_hop"].values()) == nb.cut["dropped"]
    assert f"{max_nodes} of {len(full.nodes)} nodes" in nb.cut["summary"]
    rule = nb.cut["rule"]
    assert "nearest first" in rule and "is_a" in rule and "cross-links" in rule and "always kept" in rule
    kept = set(expected)
    assert all(e["src"] in kept and e["dst"] in kept for e in nb.edges)


def test_cut_at_five_takes_is_a_neighbours_before_notes_and_xrefs(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11"], hops=2, max_nodes=5)
    # E11's is_a neighbours (parent block, children) come before its excludes/xref neighbours.
    hier = {"ICD10CM:E08-E13", "ICD10CM:E11.6", "ICD10CM:E11.9"}
    assert hier <= _ids(nb)
    assert len(_ids(nb) - hier - {"ICD10CM:E11"}) == 1
    assert "DOID:9352" in _ids(nb)  # smallest id among the cross-linked neighbours


def test_centres_are_always_kept(fkg: KnowledgeGraph) -> None:
    assert neighborhood(fkg, ["E11"], max_nodes=1).node_ids() == ["ICD10CM:E11"]
    both = neighborhood(fkg, ["E11.9", "Z79.4"], max_nodes=1)
    assert both.node_ids()[:2] == ["ICD10CM:E11.9", "ICD10CM:Z79.4"]
    assert all(n["is_center"] for n in both.nodes[:2])


def test_the_view_is_deterministic_and_json_ready(fkg: KnowledgeGraph) -> None:
    a = neighborhood(fkg, ["E11"], hops=2, max_nodes=12)
    b = neighborhood(fkg, ["E11"], hops=2, max_nodes=12)
    assert a.to_dict() == b.to_dict()
    assert json.loads(json.dumps(a.to_dict()))["centers"] == ["ICD10CM:E11"]


def test_bad_input(fkg: KnowledgeGraph) -> None:
    with pytest.raises(UnknownCodeError):
        neighborhood(fkg, ["E11.99"])
    with pytest.raises(InvalidCodeError):
        neighborhood(fkg, ["E1#1"])
    with pytest.raises(ValueError, match="no code"):
        neighborhood(fkg, [])
    with pytest.raises(ValueError, match="hops"):
        neighborhood(fkg, ["E11"], hops=-1)
    with pytest.raises(ValueError, match="max_nodes"):
        neighborhood(fkg, ["E11"], max_nodes=0)
    with pytest.raises(ValueError, match="unknown relation"):
        neighborhood(fkg, ["E11"], relations=["nope"])


# ----------------------------------------------------------------------------- SNOMED CT


def test_snomed_nodes_are_identifiers_only_with_their_do_mondo_source(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11"], hops=2)
    sct = next(n for n in nb.nodes if n["id"] == "SCTID:44054006")
    assert sct["system"] == "SCTID" and sct["hop"] == 2
    assert sct["title"] == "" and sct["synonyms"] == []
    assert set(sct["via"]) == {"DOID:9352", "MONDO:0005148"}
    assert ("DOID:9352", "xref", "SCTID:44054006") in _triples(nb)
    assert all(n["via"] == [] for n in nb.nodes if n["system"] != "SCTID")


def test_a_snomed_description_never_reaches_the_view(fkg: KnowledgeGraph) -> None:
    kg = KnowledgeGraph(fkg.graph.copy())
    kg.graph.nodes["SCTID:44054006"]["title"] = "Diabetes mellitus type 2 (disorder)"
    kg.graph.nodes["SCTID:44054006"]["synonyms"] = ["T2DM (disorder)"]
    nb = neighborhood(kg, ["SCTID:44054006"], hops=1)
    assert nb.nodes[0]["title"] == "" and nb.nodes[0]["synonyms"] == []
    assert "disorder" not in json.dumps(nb.to_dict())


# ----------------------------------------------------------------------------- predicted links


def test_extra_edges_are_predicted_with_score_and_their_ends_kept(fkg: KnowledgeGraph) -> None:
    extra = [{"src": "E11.9", "dst": "SCTID:44054006", "relation": "xref", "score": 0.87}]
    nb = neighborhood(fkg, ["E11.9"], hops=1, max_nodes=1, extra_edges=extra)
    assert nb.node_ids() == ["ICD10CM:E11.9", "SCTID:44054006"]
    sct = nb.nodes[1]
    assert sct["hop"] is None and sct["title"] == ""
    (edge,) = [e for e in nb.edges if e["predicted"]]
    assert edge == {
        "src": "ICD10CM:E11.9",
        "dst": "SCTID:44054006",
        "relation": "xref",
        "source": "predicted",
        "attrs": {},
        "predicted": True,
        "score": 0.87,
    }
    assert "predicted links" in nb.cut["rule"]
    # a predicted link between nodes the graph already shows keeps their hops
    again = neighborhood(fkg, ["E11.9"], hops=1, extra_edges=[{"src": "E11.9", "dst": "E11", "score": 0.5}])
    assert {n["id"]: n["hop"] for n in again.nodes} == {"ICD10CM:E11.9": 0, "ICD10CM:E11": 1}
    assert [e["relation"] for e in again.edges if e["predicted"]] == ["predicted"]


def test_extra_edges_with_unknown_ends_or_missing_keys_fail(fkg: KnowledgeGraph) -> None:
    with pytest.raises(UnknownCodeError):
        neighborhood(fkg, ["E11.9"], extra_edges=[{"src": "E11.9", "dst": "E11.99", "score": 1}])
    with pytest.raises(ValueError, match="dst"):
        neighborhood(fkg, ["E11.9"], extra_edges=[{"src": "E11.9", "score": 1}])


# ----------------------------------------------------------------------------- several codes


def test_shared_neighbourhood_holds_the_path_between_the_codes(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11.9", "Z79.4"])
    assert nb.centers == ["ICD10CM:E11.9", "ICD10CM:Z79.4"]
    triples = _triples(nb)
    assert ("ICD10CM:E11.9", "is_a", "ICD10CM:E11") in triples
    assert ("ICD10CM:E11", "use_additional", "ICD10CM:Z79.4") in triples
    assert "ICD10CM:Z79" in _ids(nb)  # the centres' is_a context
    assert nb.cut["unconnected"] == [] and nb.cut["max_path"] == 4
    hop = {n["id"]: n["hop"] for n in nb.nodes}
    assert hop["ICD10CM:E11.9"] == hop["ICD10CM:Z79.4"] == 0 and hop["ICD10CM:E11"] == 1
    assert "shortest paths" in nb.cut["rule"]


def test_unconnected_codes_are_reported(fkg: KnowledgeGraph) -> None:
    nb = neighborhood(fkg, ["E11.9", "S72.001"])
    assert nb.cut["unconnected"] == [["ICD10CM:E11.9", "ICD10CM:S72.001"]]
    assert "ICD10CM:E11.9 and ICD10CM:S72.001 are not connected within 4 hops" in nb.cut["notes"]
    assert {"ICD10CM:E11", "ICD10CM:S72.00"} <= _ids(nb)  # context still shown
    short = neighborhood(fkg, ["E11.9", "Z79.4"], max_path=1)
    assert short.cut["unconnected"] == [["ICD10CM:E11.9", "ICD10CM:Z79.4"]]
    assert "not connected within 1 hops" in short.cut["notes"][0]


def test_pairs_joined_only_through_another_centre_say_so() -> None:
    kg = _chain(["DOID:1", "DOID:2", "DOID:3", "DOID:4"])
    nb = neighborhood(kg, ["DOID:1", "DOID:2", "DOID:4"], max_path=2)
    assert _ids(nb) == {"DOID:1", "DOID:2", "DOID:3", "DOID:4"}
    assert nb.cut["unconnected"] == [["DOID:1", "DOID:4"]]
    assert nb.cut["notes"] == ["DOID:1 and DOID:4 are not connected within 2 hops "
                               "(the view joins them through the other codes)"]


def test_all_shortest_paths_then_one_when_they_do_not_fit() -> None:
    kg = _chain([], [("DOID:1", "xref", "DOID:7"), ("DOID:7", "xref", "DOID:2"),
                     ("DOID:1", "xref", "DOID:5"), ("DOID:5", "xref", "DOID:2"),
                     ("DOID:1", "xref", "DOID:6"), ("DOID:6", "xref", "DOID:8"),
                     ("DOID:8", "xref", "DOID:2")])
    both = neighborhood(kg, ["DOID:1", "DOID:2"])
    assert _ids(both) == {"DOID:1", "DOID:2", "DOID:5", "DOID:7"}  # not the longer path via 6 and 8
    one = neighborhood(kg, ["DOID:1", "DOID:2"], max_nodes=3)
    assert one.node_ids() == ["DOID:1", "DOID:2", "DOID:5"]  # the smallest id
    assert any("one of the shortest paths" in note for note in one.cut["notes"])
    assert one.cut["applied"] and one.cut["total"] == 4


def test_paths_avoid_hubs() -> None:
    spokes = [("DOID:100", "xref", f"DOID:{1000 + i}") for i in range(30)]
    kg = _chain([], [("DOID:1", "xref", "DOID:100"), ("DOID:2", "xref", "DOID:100"), *spokes])
    assert neighborhood(kg, ["DOID:1", "DOID:2"], hub_degree=20).cut["unconnected"] == [["DOID:1", "DOID:2"]]
    through = neighborhood(kg, ["DOID:1", "DOID:2"], hub_degree=None)
    assert through.cut["unconnected"] == [] and "DOID:100" in _ids(through)
    assert "hubs" in neighborhood(kg, ["DOID:1", "DOID:2"]).cut["rule"]
    # a hub that is itself a centre is gone through
    assert neighborhood(kg, ["DOID:1", "DOID:100"], hub_degree=20).cut["unconnected"] == []


def test_cross_links_are_every_relation_but_is_a() -> None:
    assert set(CROSS_LINKS) == set(RELATIONS) - {"is_a"}


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_real_shared_neighbourhood_of_diabetes_hypertension_ckd(real_kg: KnowledgeGraph) -> None:
    kg = real_kg
    nb = neighborhood(kg, ["E11.9", "I10", "N18.3"])
    ids = _ids(nb)
    assert {"ICD10CM:E11.9", "ICD10CM:I10", "ICD10CM:N18.3"} <= ids
    # E11.22 (T2DM with diabetic CKD) says "use additional code to identify the stage of CKD"
    assert ("ICD10CM:E11.22", "use_additional", "ICD10CM:N18.3") in _triples(nb)
    unconnected = {tuple(p) for p in nb.cut["unconnected"]}
    assert ("ICD10CM:E11.9", "ICD10CM:N18.3") not in unconnected
    assert ("ICD10CM:I10", "ICD10CM:N18.3") not in unconnected
    assert len(nb.nodes) <= 150
    # one code: a SNOMED CT id two hops away through Disease Ontology, identifier only
    e11 = neighborhood(kg, ["E11"], hops=2, relations=["xref", "is_a"], max_nodes=400)
    sct = [n for n in e11.nodes if n["system"] == "SCTID"]
    assert sct and all(n["title"] == "" and n["via"] for n in sct)
