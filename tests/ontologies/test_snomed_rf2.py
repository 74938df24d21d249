"""The SNOMED CT RF2 snapshot loader, on a tiny hand-written release with made-up identifiers.

The fixture (``tests/fixtures/snomed_rf2/Snapshot``) has the real RF2 folder layout, file names
and columns, CRLF line ends, Verhoeff-valid ids with the right partition digits (``00`` concept,
``01`` description, ``02`` relationship), and only made-up content: 14 "Fixture ..." concepts
(one inactive), FSNs and synonyms with a US English language refset, is-a rows (one inactive,
one to the inactive concept) plus an attribute row, and map rows of the US ICD-10-CM map
refset to real ICD-10-CM codes (one with two rules, one with an empty target, one inactive) and
one row of another refset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kg import build_kg
from ontologies import SourceFormatError, ontology_registry
from ontologies.codes import verhoeff_valid
from ontologies.icd10cm import ICD10CMSource
from ontologies.snomed_rf2 import US_ICD10CM_MAP_REFSET, SnomedRF2Source

T2 = "SCTID:9000004006"  # Fixture type 2 sugar disorder
UNCLEAR = "SCTID:9000008009"  # Fixture sugar disorder of unclear type (three map rows)


@pytest.fixture(scope="module")
def source(fixtures_dir: Path) -> SnomedRF2Source:
    return SnomedRF2Source(fixtures_dir / "snomed_rf2")


@pytest.fixture()
def release(fixtures_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture release."""
    return Path(shutil.copytree(fixtures_dir / "snomed_rf2", tmp_path / "release"))


def snapshot_file(root: Path, pattern: str) -> Path:
    return next((root / "Snapshot").rglob(pattern))


def test_registered() -> None:
    assert ontology_registry.get("snomed_rf2") is SnomedRF2Source


def test_fixture_ids_are_valid_and_made_up(fixtures_dir: Path) -> None:
    for path in (fixtures_dir / "snomed_rf2").rglob("sct2_*.txt"):
        lines = path.read_bytes().decode("utf-8").split("\r\n")
        partition = {"Concept": "00", "Description": "01", "Relationship": "02"}[
            path.name.split("_")[1].split("-")[0]
        ]
        for line in lines[1:]:
            if line:
                item = line.split("\t")[0]
                assert verhoeff_valid(item) and item[-3:-1] == partition and item.startswith("900"), line


def test_concepts_with_titles(source: SnomedRF2Source) -> None:
    concepts = {c.id: c for c in source.concepts()}
    assert len(concepts) == 13 and "SCTID:9000011005" not in concepts  # the inactive one
    assert concepts[T2].title == "Fixture type 2 sugar disorder"  # the US preferred term
    assert concepts["SCTID:9000010006"].title == "Fixture long-term insulin use (situation)"  # FSN: no PT
    assert all(c.system == "SCTID" and c.source == "snomed_rf2" for c in concepts.values())
    assert source.stats["titles"] == {"preferred_term": 12, "fsn_only": 1}


def test_is_a_active_only(source: SnomedRF2Source) -> None:
    is_a = {(r.src, r.dst) for r in source.relations() if r.relation == "is_a"}
    assert len(is_a) == 13
    assert ("SCTID:9000005007", T2) in is_a and ("SCTID:9000005007", "SCTID:9000014002") in is_a
    assert ("SCTID:9000006008", "SCTID:9000007004") not in is_a  # inactive row
    assert not any("9000011005" in src for src, _ in is_a)  # inactive concept
    assert (T2, "SCTID:9000013008") not in is_a  # an attribute, not is-a


def test_map_refset_rows(source: SnomedRF2Source) -> None:
    xrefs = {(r.src, r.dst): r for r in source.relations() if r.relation == "xref"}
    rel = xrefs[(T2, "ICD10CM:E11.9")]
    assert rel.attrs == {
        "match": "map_refset",
        "refset": US_ICD10CM_MAP_REFSET,
        "map_group": 1,
        "map_priority": 1,
        "map_rule": "TRUE",
        "map_advice": "ALWAYS E11.9",
    }
    assert xrefs[(UNCLEAR, "ICD10CM:E10.9")].attrs["map_rule"].startswith("IFA 9000013008")
    assert xrefs[(UNCLEAR, "ICD10CM:E11.9")].attrs["map_priority"] == 2
    assert xrefs[(UNCLEAR, "ICD10CM:Z79.4")].attrs["map_group"] == 2
    assert not any(src == "SCTID:9000011005" for src, _ in xrefs)  # inactive row
    assert len(xrefs) == 8
    assert source.stats["map"] == {
        "links": 8,
        "no_target_rows": 1,
        "inactive_concept_rows": 0,
        "other_refset_rows": {"9000091006": 1},
    }


def test_other_refsets_on_request(fixtures_dir: Path) -> None:
    src = SnomedRF2Source(
        fixtures_dir / "snomed_rf2" / "Snapshot", map_refsets=["9000091006"], descriptions=False
    )
    xrefs = [r for r in src.relations() if r.relation == "xref"]
    assert [(r.src, r.dst, r.attrs["refset"]) for r in xrefs] == [(T2, "ICD10CM:E11.9", "9000091006")]
    assert all(c.title == "" for c in src.concepts())
    assert not any("Description" in f.path for f in src.info().files)


def test_info(source: SnomedRF2Source) -> None:
    info = source.info()
    assert info.name == "snomed_rf2" and info.version == "SNOMED CT RF2 snapshot XX9000090 20990131"
    assert len(info.files) == 5 and all(len(f.sha256) == 64 for f in info.files)
    assert any("must not be redistributed" in note for note in info.notes)


def test_kg_keeps_ids_hierarchy_and_map_but_no_descriptions(fixtures_dir: Path) -> None:
    kg = build_kg(
        [ICD10CMSource(fixtures_dir / "icd10cm_mini.xml"), SnomedRF2Source(fixtures_dir / "snomed_rf2")],
        progress=False,
    )
    assert kg.graph.nodes[T2]["title"] == "" and kg.graph.nodes[T2]["synonyms"] == []
    assert kg.parents(T2) == ["SCTID:9000003000"]
    assert [r.dst for r in kg.edges_of(T2, relations=["xref"])] == ["ICD10CM:E11.9"]


def test_latest_row_wins_across_files(release: Path) -> None:
    concept_file = snapshot_file(release, "sct2_Concept_Snapshot*")
    later = concept_file.with_name("sct2_Concept_Snapshot_XX9000091_21000131.txt")
    later.write_bytes(
        b"id\teffectiveTime\tactive\tmoduleId\tdefinitionStatusId\r\n"
        b"9000006008\t21000131\t0\t9000090007\t900000000000074008\r\n"
    )
    ids = {c.id for c in SnomedRF2Source(release).concepts()}
    assert "SCTID:9000006008" not in ids and T2 in ids


def test_missing_folder_or_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SnomedRF2Source(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="sct2_Concept_Snapshot"):
        SnomedRF2Source(tmp_path)


@pytest.mark.parametrize(
    ("pattern", "old", "new", "problem"),
    [
        (
            "sct2_Concept_Snapshot*",
            b"9000004006\t20990131\t1",
            b"9000004006\t20990131\t2",
            "active must be 0 or 1",
        ),
        ("sct2_Concept_Snapshot*", b"9000004006\t20990131", b"9000004007\t20990131", "bad check digit"),
        ("sct2_Concept_Snapshot*", b"9000004006\t20990131", b"9000004006\t2099", "effectiveTime"),
        ("sct2_Relationship_Snapshot*", b"\t116680003\t", b"\t116680003\t\t", "expected 10 tab-separated"),
        (
            "der2_iisssccRefset_ExtendedMap*",
            b"\t1\t1\tTRUE\tALWAYS E11.9",
            b"\tone\t1\tTRUE\tALWAYS E11.9",
            "mapGroup",
        ),
        (
            "sct2_Description_Snapshot*",
            b"id\teffectiveTime",
            b"identifier\teffectiveTime",
            "expected the RF2 header",
        ),
    ],
)
def test_bad_rows_name_file_and_line(
    release: Path, pattern: str, old: bytes, new: bytes, problem: str
) -> None:
    path = snapshot_file(release, pattern)
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    line = data[: data.index(old)].count(b"\n") + 1
    with pytest.raises(SourceFormatError, match=problem) as info:
        list(SnomedRF2Source(release).relations())
    assert info.value.path == str(path) and info.value.line == line


def test_malformed_map_target_is_skipped_and_counted(release: Path) -> None:
    path = snapshot_file(release, "der2_iisssccRefset_ExtendedMap*")
    path.write_bytes(path.read_bytes().replace(b"\tE16.2\t", b"\tnot a code\t"))
    src = SnomedRF2Source(release)
    assert not any(r.dst == "ICD10CM:E16.2" for r in src.relations())
    assert src.stats["malformed_targets"] == 1
