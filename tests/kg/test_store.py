"""The KG folder: round trip, schema, format checks and the atomic swap."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import kg.store as store
from kg import KGFormatError, KnowledgeGraph, NodeIndex, load_kg, save_kg
from ontologies.base import Concept


def _same(a: KnowledgeGraph, b: KnowledgeGraph) -> None:
    assert list(a.graph.nodes(data=True)) == list(b.graph.nodes(data=True))
    assert sorted(a.graph.edges(keys=True, data=True)) == sorted(b.graph.edges(keys=True, data=True))
    assert sorted(a.graph.in_edges(keys=True)) == sorted(b.graph.in_edges(keys=True))


def test_round_trip(kg: KnowledgeGraph, tmp_path: Path) -> None:
    out = save_kg(kg, tmp_path / "kg")
    assert out == (tmp_path / "kg").absolute()
    loaded = load_kg(out)
    _same(kg, loaded)
    assert loaded.stats() == kg.stats()
    assert loaded.build_report == kg.build_report
    assert loaded.to_snomed("E11") == kg.to_snomed("E11")
    assert loaded.search("asthma") == kg.search("asthma")
    assert loaded.manifest is not None and loaded.manifest["format"] == "kgcode-kg"
    assert sorted(p.name for p in out.iterdir()) == ["graph.sqlite", "manifest.json", "node_index.json"]


def test_methods_on_the_class(kg: KnowledgeGraph, tmp_path: Path) -> None:
    kg.save(tmp_path / "kg")
    _same(kg, KnowledgeGraph.load(tmp_path / "kg"))


def test_manifest(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    manifest = json.loads((tmp_path / "kg" / "manifest.json").read_text())
    assert manifest["format"] == "kgcode-kg"
    assert manifest["format_version"] == 1
    assert manifest["kgcode_version"]
    assert manifest["created"].endswith("+00:00")
    assert manifest["build_seconds"] == kg.build_report["build_seconds"]
    assert manifest["counts"] == kg.stats()
    assert [s["name"] for s in manifest["sources"]] == ["icd10cm", "icd9cm", "gem", "doid", "mondo"]
    assert manifest["sources"][0]["files"] == [{"path": "/data/icd10cm.txt", "sha256": "0" * 64, "size": 123}]
    assert manifest["build_report"]["dropped_relations"]["icd10cm"] == {"excludes1": 2}


def test_sqlite_schema_is_readable_without_kgcode(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    con = sqlite3.connect(tmp_path / "kg" / "graph.sqlite")
    cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in ("nodes", "edges", "meta")}
    assert cols == {
        "nodes": ["id", "system", "kind", "title", "billable", "synonyms", "attrs", "sources"],
        "edges": ["src", "dst", "relation", "source", "attrs"],
        "meta": ["key", "value"],
    }
    assert dict(con.execute("SELECT key, value FROM meta"))["format_version"] == "1"
    row = con.execute("SELECT * FROM nodes WHERE id = 'ICD10CM:J45.909'").fetchone()
    assert row == (
        "ICD10CM:J45.909", "ICD10CM", "code", "Unspecified asthma, uncomplicated", 1, '["Asthma NOS"]', "",
        '["icd10cm"]',
    )  # fmt: skip
    (attrs,) = con.execute(
        "SELECT attrs FROM edges WHERE src = 'DOID:9352' AND dst = 'ICD10CM:E11' AND relation = 'xref'"
    ).fetchone()
    assert json.loads(attrs) == {"match": "dbxref", "file": "doid.obo"}
    (n_edges,) = con.execute("SELECT count(*) FROM edges").fetchone()
    assert n_edges == kg.graph.number_of_edges()
    assert con.execute("SELECT attrs FROM edges WHERE relation = 'is_a' LIMIT 1").fetchone() == ("",)
    con.close()


def test_nothing_is_pickled(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    for file in (tmp_path / "kg").iterdir():
        head = file.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x05", file


def test_node_index_is_saved_beside_the_graph(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    index = NodeIndex.load(tmp_path / "kg" / "node_index.json")
    assert index == NodeIndex.from_kg(kg)
    custom = NodeIndex(reversed(NodeIndex.from_kg(kg).ids))
    save_kg(kg, tmp_path / "kg2", node_index=custom)
    assert NodeIndex.load(tmp_path / "kg2" / "node_index.json") == custom


def test_json_values_only(tmp_path: Path) -> None:
    g = KnowledgeGraph()
    g.add_concept(Concept("DOID:1", "DOID", "a", attrs={"tags": {"b", "a"}, "path": Path("/x")}))
    save_kg(g, tmp_path / "kg")
    assert load_kg(tmp_path / "kg").graph.nodes["DOID:1"]["attrs"] == {"tags": ["a", "b"], "path": "/x"}
    g.add_concept(Concept("DOID:2", "DOID", "b", attrs={"bad": object()}))
    with pytest.raises(TypeError, match="JSON"):
        save_kg(g, tmp_path / "kg")
    assert load_kg(tmp_path / "kg").stats()["nodes"] == 1  # the previous KG is intact
    assert [p.name for p in tmp_path.iterdir()] == ["kg"]


def test_edge_attrs_are_not_shared_after_loading(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    loaded = load_kg(tmp_path / "kg")
    a = loaded.graph.edges["DOID:9352", "ICD10CM:E11", "xref"]["attrs"]
    b = loaded.graph.edges["DOID:9352", "ICD9CM:250.00", "xref"]["attrs"]
    assert a == b
    a["match"] = "changed"
    assert b["match"] == "dbxref"
    s1 = loaded.graph.nodes["ICD10CM:E11"]["sources"]
    s1.append("x")
    assert loaded.graph.nodes["ICD10CM:E10"]["sources"] == ["icd10cm"]


# ---------------------------------------------------------------------- format checks


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_kg(tmp_path / "nope")
    assert info.value.filename == str(tmp_path / "nope")


@pytest.mark.parametrize("missing", ["manifest.json", "graph.sqlite"])
def test_missing_file(kg: KnowledgeGraph, tmp_path: Path, missing: str) -> None:
    save_kg(kg, tmp_path / "kg")
    (tmp_path / "kg" / missing).unlink()
    with pytest.raises(KGFormatError, match=missing) as info:
        load_kg(tmp_path / "kg")
    assert info.value.path == str(tmp_path / "kg" / missing)
    assert "missing" in str(info.value)


def test_other_manifest_version(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    file = tmp_path / "kg" / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest["format_version"] = 2
    file.write_text(json.dumps(manifest))
    with pytest.raises(KGFormatError) as info:
        load_kg(tmp_path / "kg")
    message = str(info.value)
    assert "manifest.json" in message
    assert "format version 2" in message
    assert "reads version 1" in message
    assert "\n" not in message


def test_other_sqlite_version(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    con = sqlite3.connect(tmp_path / "kg" / "graph.sqlite")
    con.execute("UPDATE meta SET value = '7' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with pytest.raises(KGFormatError, match=r"graph\.sqlite: format version 7, .* reads version 1"):
        load_kg(tmp_path / "kg")


def test_not_a_kg_folder(tmp_path: Path) -> None:
    (tmp_path / "kg").mkdir()
    (tmp_path / "kg" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(KGFormatError, match="expected 'kgcode-kg'"):
        load_kg(tmp_path / "kg")
    (tmp_path / "kg" / "manifest.json").write_text("{not json")
    with pytest.raises(KGFormatError, match="JSON"):
        load_kg(tmp_path / "kg")


def test_corrupt_sqlite(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    (tmp_path / "kg" / "graph.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(KGFormatError, match="graph.sqlite"):
        load_kg(tmp_path / "kg")


def test_dangling_edge_in_database(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    con = sqlite3.connect(tmp_path / "kg" / "graph.sqlite")
    con.execute("INSERT INTO edges VALUES ('ICD10CM:E11', 'ICD10CM:X99', 'is_a', 'x', '')")
    con.commit()
    con.close()
    with pytest.raises(KGFormatError, match="ICD10CM:X99"):
        load_kg(tmp_path / "kg")


# ---------------------------------------------------------------------- atomic save


def test_overwrite_replaces_the_previous_kg(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(KnowledgeGraph(), tmp_path / "kg")
    assert len(load_kg(tmp_path / "kg")) == 0
    save_kg(kg, tmp_path / "kg")
    assert len(load_kg(tmp_path / "kg")) == len(kg)
    assert [p.name for p in tmp_path.iterdir()] == ["kg"]  # no temp or old folder left


@pytest.mark.parametrize("step", ["_write_graph", "_write_manifest", "_fsync_dir"])
def test_failure_midway_leaves_the_previous_kg(
    kg: KnowledgeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    save_kg(kg, tmp_path / "kg")
    before = (tmp_path / "kg" / "graph.sqlite").read_bytes()
    real = getattr(store, step)

    def boom(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # the step does its work, then the "disk" fails
        raise OSError("disk full")

    monkeypatch.setattr(store, step, boom)
    smaller = KnowledgeGraph()
    smaller.add_concept(Concept("DOID:1", "DOID", "x"))
    with pytest.raises(OSError, match="disk full"):
        save_kg(smaller, tmp_path / "kg")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["kg"]
    assert (tmp_path / "kg" / "graph.sqlite").read_bytes() == before
    _same(kg, load_kg(tmp_path / "kg"))


def test_failure_during_the_swap_puts_the_old_kg_back(
    kg: KnowledgeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_kg(kg, tmp_path / "kg")
    real_replace = store.os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.startswith(".kg.tmp-"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        save_kg(KnowledgeGraph(), tmp_path / "kg")
    monkeypatch.undo()
    swaps = [c for c in calls if c[0] == "kg" or c[1] == "kg"]
    assert len(swaps) == 3  # the old KG moved aside, the new one failed, the old one moved back
    assert swaps[0][1].startswith(".kg.old-") and swaps[2] == (swaps[0][1], "kg")
    assert [p.name for p in tmp_path.iterdir()] == ["kg"]
    _same(kg, load_kg(tmp_path / "kg"))


def test_refuses_to_replace_a_folder_that_is_not_a_kg(kg: KnowledgeGraph, tmp_path: Path) -> None:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="not a KG folder"):
        save_kg(kg, folder)
    assert (folder / "thesis.tex").read_text() == "do not delete"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileExistsError):
        save_kg(kg, file)
    empty = tmp_path / "empty"
    empty.mkdir()
    save_kg(kg, empty)  # an empty folder is fine
    assert len(load_kg(empty)) == len(kg)


def test_interrupted_swap_is_reported(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "kg")
    (tmp_path / "kg").rename(tmp_path / ".kg.old-123")  # as if killed between the renames
    with pytest.raises(FileNotFoundError, match="interrupted"):
        load_kg(tmp_path / "kg")


def test_creates_parent_folders(kg: KnowledgeGraph, tmp_path: Path) -> None:
    save_kg(kg, tmp_path / "a" / "b" / "kg")
    assert len(load_kg(tmp_path / "a" / "b" / "kg")) == len(kg)
