"""The neighbourhood page: one self-contained HTML file with the legend, the cut rule and the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kg import viz
from kg.build import build_kg
from kg.graph import KnowledgeGraph
from kg.neighborhood import Neighborhood, neighborhood
from kg.viz import RELATION_COLORS, SYSTEM_COLORS, external_resources, neighborhood_json, render_html
from ontologies import resolve_source
from ontologies.base import Concept, Relation

# A <script src=...> or <link href=...> that reaches the network (http, https or protocol-relative).
_EXTERNAL = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def fkg(fixtures_dir: Path) -> KnowledgeGraph:
    """The fixture KG: mini ICD-10-CM tabular XML, tiny DO and Mondo."""
    sources = [
        resolve_source("icd10cm", xml_path=fixtures_dir / "icd10cm_mini.xml"),
        resolve_source("doid", data_dir=fixtures_dir),
        resolve_source("mondo", data_dir=fixtures_dir),
    ]
    return build_kg(sources, progress=False)


@pytest.fixture(scope="module")
def view(fkg: KnowledgeGraph) -> Neighborhood:
    """E11 two hops out, cut to 12 nodes, with one predicted link."""
    extra = [{"src": "E11", "dst": "SCTID:38341003", "relation": "xref", "score": 0.87}]
    return neighborhood(fkg, ["E11"], hops=2, max_nodes=12, extra_edges=extra)


@pytest.fixture(scope="module")
def page(view: Neighborhood, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = render_html(view, tmp_path_factory.mktemp("viz") / "sub" / "e11.html")
    return path.read_text(encoding="utf-8")


def _vis_array(page: str, name: str) -> list[dict]:
    match = re.search(rf"{name} = new vis\.DataSet\((\[.*?\])\);", page, re.DOTALL)
    assert match, f"no {name} DataSet in the page"
    return json.loads(match.group(1))


def test_page_is_self_contained(page: str) -> None:
    assert not _EXTERNAL.search(page)
    assert external_resources(page) == []
    assert "cdn.jsdelivr.net" not in page and "cdnjs.cloudflare.com" not in page  # pyvis's bootstrap
    assert "new vis.Network(" in page
    assert len(page) > 400_000  # vis-network's JavaScript and CSS are inlined


def test_page_draws_every_node_and_edge_of_the_view(page: str, view: Neighborhood) -> None:
    nodes = _vis_array(page, "nodes")
    edges = _vis_array(page, "edges")
    assert [n["id"] for n in nodes] == view.node_ids()
    assert len(edges) == len(view.edges)
    for node_id in view.node_ids():
        assert node_id in page
    by_id = {n["id"]: n for n in nodes}
    centre = by_id["ICD10CM:E11"]
    assert centre["shape"] == "diamond" and centre["size"] > by_id["ICD10CM:E11.9"]["size"]
    assert centre["color"]["border"] == "#000000"
    assert by_id["ICD10CM:E11.9"]["color"]["background"] == SYSTEM_COLORS["ICD10CM"]
    assert by_id["DOID:9352"]["color"]["background"] == SYSTEM_COLORS["DOID"]
    is_a = next(e for e in edges if e["relation"] == "is_a")
    assert is_a["color"]["color"] == RELATION_COLORS["is_a"] and is_a["label"] == "is_a"


def test_predicted_edges_are_dashed_with_their_score(page: str) -> None:
    edges = _vis_array(page, "edges")
    (pred,) = [e for e in edges if e.get("dashes")]
    assert pred["from"] == "ICD10CM:E11" and pred["to"] == "SCTID:38341003"
    assert pred["label"] == "xref 0.87"
    assert "score 0.870" in pred["title"]
    assert all(not e.get("dashes") for e in edges if e is not pred)
    assert "predicted link (dashed, score in the label)" in page


def test_legend_states_systems_relations_and_the_cut(page: str, view: Neighborhood) -> None:
    assert 'id="kg-legend"' in page
    for name in ("ICD-10-CM", "ICD-9-CM", "Disease Ontology", "Mondo", "SNOMED CT id", "other ("):
        assert name in page
    for rel in RELATION_COLORS:
        assert f"<code>{rel}</code>" in page
    assert f"12 of {view.total_nodes_before_cut} nodes shown" in page
    assert "nearest first" in page and "hierarchy" in page
    assert "<title>Neighbourhood of ICD10CM:E11</title>" in page


def test_tooltips_carry_title_synonyms_provenance_and_notes(page: str) -> None:
    nodes = {n["id"]: n for n in _vis_array(page, "nodes")}
    doid = nodes["DOID:9352"]["title"]
    assert "type 2 diabetes mellitus" in doid and "system: Disease Ontology" in doid and "from: doid" in doid
    assert "synonyms:" in doid
    sct = nodes["SCTID:38341003"]["title"]
    assert sct.startswith("SCTID:38341003\nSNOMED CT id (identifier only) via DOID:10763")
    assert nodes["SCTID:38341003"]["label"] == "SCTID:38341003"
    edges = _vis_array(page, "edges")
    note = next(e for e in edges if e["relation"] == "excludes1" and e["to"] == "ICD10CM:E10")
    assert "note: type 1 diabetes mellitus (E10.-)" in note["title"] and "source: icd10cm" in note["title"]


def test_page_settles_its_layout(page: str) -> None:
    options = json.loads(re.search(r"var options = (\{.*?\});\n", page, re.DOTALL).group(1))
    assert options["physics"]["solver"] == "barnesHut"
    assert options["physics"]["stabilization"]["enabled"] is True
    assert "stabilizationIterationsDone" in page and "physics: { enabled: false }" in page


def test_text_from_the_graph_is_escaped(tmp_path: Path) -> None:
    kg = KnowledgeGraph()
    kg.add_concept(Concept("DOID:1", "DOID", "<script>alert(1)</script> & co", synonyms=["<b>x</b>"]))
    kg.add_concept(Concept("DOID:2", "DOID", "see https://example.org/href"))
    kg.add_relation(Relation("DOID:1", "DOID:2", "is_a", "test", {"text": "</script><script>alert(2)"}))
    page = render_html(neighborhood(kg, ["DOID:1"]), tmp_path / "x.html", title="<i>t</i>").read_text()
    assert "<script>alert" not in page and "</script><script>alert(2)" not in page
    assert "<b>x</b>" not in page and "&lt;i&gt;t&lt;/i&gt;" in page
    assert external_resources(page) == []
    # pyvis shows a title that contains "href" as HTML: the word is broken so it stays text
    assert "div.popup" not in page


def test_write_is_atomic_and_replaces_the_file(view: Neighborhood, tmp_path: Path) -> None:
    target = tmp_path / "v.html"
    target.write_text("old")
    assert render_html(view, target) == target
    assert target.read_text().startswith("<html>")
    assert [p.name for p in tmp_path.iterdir()] == ["v.html"]


def test_shared_view_title_and_unconnected_note(fkg: KnowledgeGraph, tmp_path: Path) -> None:
    nb = neighborhood(fkg, ["E11.9", "S72.001"])
    page = render_html(nb, tmp_path / "s.html").read_text()
    assert "Shared neighbourhood of E11.9, S72.001" in page
    assert "are not connected within 4 hops" in page
    assert f"all {nb.total_nodes_before_cut} nodes shown" in page


def test_neighborhood_json_is_ready_for_the_service(view: Neighborhood) -> None:
    data = json.loads(json.dumps(neighborhood_json(view)))
    assert data["centers"] == ["ICD10CM:E11"]
    assert [n["id"] for n in data["nodes"]] == view.node_ids()
    assert len(data["vis"]["nodes"]) == len(view.nodes) and len(data["vis"]["edges"]) == len(view.edges)
    assert data["cut"]["rule"] == data["legend"]["cut_rule"]
    assert data["legend"]["shown"] == f"12 of {view.total_nodes_before_cut} nodes shown"
    assert {s["system"] for s in data["legend"]["systems"]} == {*SYSTEM_COLORS, "other"}
    assert data["vis"]["options"]["physics"]["solver"] == "barnesHut"
    sct = next(n for n in data["nodes"] if n["system"] == "SCTID")
    assert sct["title"] == ""


def test_screenshot_without_chromium_says_no(view: Neighborhood, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viz, "find_chromium", lambda: None)
    html = render_html(view, tmp_path / "v.html")
    assert viz.screenshot(html, tmp_path / "v.png") is False
    assert not (tmp_path / "v.png").exists()


@pytest.mark.slow
def test_screenshot_renders_offline_in_chromium(view: Neighborhood, tmp_path: Path) -> None:
    if viz.find_chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    html = render_html(view, tmp_path / "v.html")
    png = tmp_path / "v.png"
    assert viz.screenshot(html, png, window_size=(1000, 700))
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a blank page compresses to a few KB
