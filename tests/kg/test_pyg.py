"""PyG export: shapes, edge types, the node index and its stability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kg import KGFormatError, KnowledgeGraph, NodeIndex, to_hetero_data, to_homogeneous
from kg.pyg import relation_vocabulary
from ontologies.base import RELATIONS, Concept, Relation
from ontologies.codes import SYSTEMS

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")


def _edge_set(kg: KnowledgeGraph) -> set[tuple[str, str, str]]:
    return set(kg.graph.edges(keys=True))


def test_importing_kg_does_not_import_torch() -> None:
    code = "import sys, kg; assert 'torch' not in sys.modules and 'torch_geometric' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- node index


def test_node_index_is_sorted_by_system_then_id(kg: KnowledgeGraph) -> None:
    index = NodeIndex.from_kg(kg)
    assert len(index) == len(kg)
    assert index.ids == sorted(kg.graph, key=lambda n: (n.split(":")[0], n))
    assert index.systems == ["DOID", "ICD10CM", "ICD9CM", "MESH", "MONDO", "OMIM", "SCTID"]
    assert index.id_at(0) == "DOID:10763"
    assert index.num_nodes("ICD10CM") == 28
    assert index.type_ids("SCTID")[0] == "SCTID:195967001"
    assert index.local_row("ICD10CM:10") == 0
    assert index.row("ICD10CM:10") == 5  # after the five DOID ids
    for node_id in kg.graph:
        assert index.id_at(index.row(node_id)) == node_id
        assert index.id_at(index.local_row(node_id), node_id.split(":")[0]) == node_id
    assert index.rows(["DOID:10763", "ICD10CM:10"]) == [0, 5]
    assert "ICD10CM:E11" in index and "ICD10CM:E99" not in index
    assert NodeIndex.from_kg(kg) == index


def test_node_index_rejects_duplicates_and_bare_ids() -> None:
    with pytest.raises(ValueError, match="twice"):
        NodeIndex(["DOID:1", "DOID:1"])
    with pytest.raises(ValueError, match="system-qualified"):
        NodeIndex(["E11"])


def test_node_index_save_load(kg: KnowledgeGraph, tmp_path: Path) -> None:
    index = NodeIndex.from_kg(kg)
    file = index.save(tmp_path / "node_index.json")
    assert NodeIndex.load(file) == index
    assert [p.name for p in tmp_path.iterdir()] == ["node_index.json"]  # no temp file left
    file.write_text('{"format": "kgcode-node-index", "format_version": 9, "ids": []}')
    with pytest.raises(KGFormatError, match="version 9"):
        NodeIndex.load(file)
    file.write_text('{"ids": []}')
    with pytest.raises(KGFormatError, match="not a node index"):
        NodeIndex.load(file)


def test_extend_keeps_existing_rows() -> None:
    index = NodeIndex(["DOID:2", "ICD10CM:E11", "ICD10CM:E12"])
    bigger = index.extend(["ICD10CM:E10", "DOID:1", "ICD10CM:E11"])
    assert bigger.ids == ["DOID:2", "ICD10CM:E11", "ICD10CM:E12", "DOID:1", "ICD10CM:E10"]
    assert bigger.local_row("ICD10CM:E12") == 1
    assert bigger.local_row("ICD10CM:E10") == 2
    assert bigger.local_row("DOID:1") == 1
    assert index.extend(["DOID:2"]) is index
    assert len(index) == 3  # not changed


# ---------------------------------------------------------------------- homogeneous


def test_to_homogeneous_shapes_and_types(kg: KnowledgeGraph) -> None:
    data, index = to_homogeneous(kg)
    n, e = len(kg), kg.graph.number_of_edges()
    assert data.num_nodes == n
    assert data.edge_index.shape == (2, e)
    assert data.edge_index.dtype == torch.long
    assert data.edge_type.shape == (e,)
    assert data.edge_type.dtype == torch.long
    assert data.node_type.shape == (n,)
    assert data.node_type.dtype == torch.long
    assert data.relation_names[: len(RELATIONS)] == list(RELATIONS)
    assert data.system_names == list(SYSTEMS)
    assert int(data.edge_index.max()) < n
    # every edge comes back through the index, with its relation
    ids = index.ids
    got = {
        (ids[s], ids[d], data.relation_names[t])
        for (s, d), t in zip(data.edge_index.t().tolist(), data.edge_type.tolist(), strict=True)
    }
    assert got == _edge_set(kg)
    for node_id in kg.graph:
        assert data.system_names[int(data.node_type[index.row(node_id)])] == node_id.split(":")[0]
    # sorted by type, then source, then target
    keys = list(zip(data.edge_type.tolist(), *data.edge_index.tolist(), strict=True))
    assert keys == sorted(keys)


def test_to_homogeneous_reverse(kg: KnowledgeGraph) -> None:
    data, index = to_homogeneous(kg, reverse=True)
    e = kg.graph.number_of_edges()
    assert data.edge_index.shape == (2, 2 * e)
    assert len(data.relation_names) == 2 * len(RELATIONS)
    assert data.relation_names[len(RELATIONS)] == "rev_is_a"
    ids = index.ids
    triples = {
        (ids[s], ids[d], data.relation_names[t])
        for (s, d), t in zip(data.edge_index.t().tolist(), data.edge_type.tolist(), strict=True)
    }
    for src, dst, rel in _edge_set(kg):
        assert (src, dst, rel) in triples
        assert (dst, src, "rev_" + rel) in triples


def test_relation_ids_do_not_depend_on_the_graph(kg: KnowledgeGraph) -> None:
    small = KnowledgeGraph()
    small.add_concepts([Concept("DOID:1", "DOID"), Concept("DOID:2", "DOID")])
    small.add_relation(Relation("DOID:2", "DOID:1", "equivalent"))
    data, _ = to_homogeneous(small)
    assert data.relation_names == to_homogeneous(kg)[0].relation_names
    assert data.edge_type.tolist() == [RELATIONS.index("equivalent")]
    small.add_relation(Relation("DOID:1", "DOID:2", "see_also"))  # a relation of an OWL source
    assert relation_vocabulary(small) == [*RELATIONS, "see_also"]
    assert relation_vocabulary(small, reverse=True)[-1] == "rev_see_also"


def test_index_stability_when_a_node_is_added(kg: KnowledgeGraph) -> None:
    before, index = to_homogeneous(kg)
    kg.add_concept(Concept("DOID:1", "DOID", "disease"))  # sorts before every other DOID
    kg.add_relation(Relation("DOID:9351", "DOID:1", "is_a"))
    after, index2 = to_homogeneous(kg, node_index=index)
    assert index2.ids[: len(index)] == index.ids  # every old node keeps its row
    assert index2.row("DOID:1") == len(index)
    assert after.num_nodes == before.num_nodes + 1
    assert after.edge_index.shape[1] == before.edge_index.shape[1] + 1
    ids = index2.ids
    assert ("DOID:9351", "DOID:1") in {(ids[s], ids[d]) for s, d in after.edge_index.t().tolist()}
    # without the index, the canonical order moves rows
    fresh = NodeIndex.from_kg(kg)
    assert fresh.row("DOID:1") == 0
    # hetero rows are stable too
    hetero, _ = to_hetero_data(kg, node_index=index)
    assert hetero["DOID"].num_nodes == index.num_nodes("DOID") + 1
    assert index2.local_row("DOID:1") == index.num_nodes("DOID")


def test_index_with_ids_not_in_the_graph(kg: KnowledgeGraph) -> None:
    index = NodeIndex.from_kg(kg).extend(["DOID:424242"])
    data, same = to_homogeneous(kg, node_index=index)
    assert same is index
    assert data.num_nodes == len(kg) + 1


# ---------------------------------------------------------------------- heterogeneous


def test_to_hetero_data(kg: KnowledgeGraph) -> None:
    data, index = to_hetero_data(kg)
    assert sorted(data.node_types) == sorted(index.systems)
    for system in index.systems:
        assert data[system].num_nodes == index.num_nodes(system)
    expected_types = {(s.split(":")[0], r, d.split(":")[0]) for s, d, r in _edge_set(kg)}
    assert set(data.edge_types) == expected_types
    assert ("ICD10CM", "is_a", "ICD10CM") in data.edge_types
    assert ("ICD9CM", "gem_equivalent", "ICD10CM") in data.edge_types
    assert ("DOID", "xref", "SCTID") in data.edge_types
    assert ("MONDO", "equivalent", "DOID") in data.edge_types
    got = set()
    for s_sys, rel, d_sys in data.edge_types:
        ei = data[s_sys, rel, d_sys].edge_index
        assert ei.dtype == torch.long and ei.shape[0] == 2
        assert int(ei[0].max()) < index.num_nodes(s_sys)
        assert int(ei[1].max()) < index.num_nodes(d_sys)
        pairs = ei.t().tolist()
        assert pairs == sorted(pairs)
        got |= {(index.id_at(s, s_sys), index.id_at(d, d_sys), rel) for s, d in pairs}
    assert got == _edge_set(kg)
    assert sum(data[et].edge_index.shape[1] for et in data.edge_types) == kg.graph.number_of_edges()
    data.validate()


def test_to_hetero_data_reverse(kg: KnowledgeGraph) -> None:
    data, _ = to_hetero_data(kg, reverse=True)
    forward = [et for et in data.edge_types if not et[1].startswith("rev_")]
    assert len(data.edge_types) == 2 * len(forward)
    for s_sys, rel, d_sys in forward:
        fwd = data[s_sys, rel, d_sys].edge_index
        rev = data[d_sys, "rev_" + rel, s_sys].edge_index
        assert sorted(map(tuple, fwd.flip(0).t().tolist())) == sorted(map(tuple, rev.t().tolist()))
    data.validate()


def test_empty_graph_exports() -> None:
    data, index = to_homogeneous(KnowledgeGraph())
    assert data.num_nodes == 0 and data.edge_index.shape == (2, 0) and len(index) == 0
    hetero, _ = to_hetero_data(KnowledgeGraph())
    assert hetero.edge_types == []
