"""GEMSource: hand-written GEM CSVs and the packaged CMS GEMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ontologies import SourceFormatError, resolve_source
from ontologies.gems import GEMSource

FORWARD = "gem_icd9_to_icd10.csv"
BACKWARD = "gem_icd10_to_icd9.csv"


@pytest.fixture()
def fixture_source(fixtures_dir: Path) -> GEMSource:
    return GEMSource(forward_path=fixtures_dir / FORWARD, backward_path=fixtures_dir / BACKWARD)


def test_fixture_relations(fixture_source: GEMSource) -> None:
    rels = list(fixture_source.relations())
    assert list(fixture_source.concepts()) == []
    assert {r.relation for r in rels} == {"gem_equivalent"} and {r.source for r in rels} == {"gem"}
    pairs = [(r.src, r.dst) for r in rels]
    assert pairs == [
        ("ICD9CM:001.0", "ICD10CM:A00.0"),
        ("ICD9CM:250.00", "ICD10CM:E11.9"),
        ("ICD9CM:073.0", "ICD10CM:J17"),
        ("ICD9CM:073.0", "ICD10CM:B96.89"),
        ("ICD10CM:A00.0", "ICD9CM:001.0"),
        ("ICD10CM:E11.9", "ICD9CM:250.00"),
    ]
    assert rels[0].attrs == {
        "direction": "icd9_to_icd10",
        "flags": "00000",
        "approximate": False,
        "no_map": False,
        "combination": False,
        "scenario": 0,
        "choice_list": 0,
    }
    combo = rels[2].attrs
    assert combo["flags"] == "10112" and combo["approximate"] and combo["combination"]
    assert (combo["scenario"], combo["choice_list"]) == (1, 2)
    assert rels[4].attrs["direction"] == "icd10_to_icd9"


def test_no_map_rows(fixture_source: GEMSource) -> None:
    assert fixture_source.no_map_codes() == {"ICD9CM:365.70", "ICD10CM:R40.2130"}
    list(fixture_source.relations())
    stats = fixture_source.stats
    assert stats["icd9_to_icd10"] == {"rows": 5, "edges": 4, "no_map": 1}
    assert stats["icd10_to_icd9"] == {"rows": 3, "edges": 2, "no_map": 1}
    assert stats["no_map"] == ["ICD10CM:R40.2130", "ICD9CM:365.70"]


def test_info(fixture_source: GEMSource) -> None:
    info = fixture_source.info()
    assert info.name == "gem" and FORWARD in info.version
    assert [Path(f.path).name for f in info.files] == [FORWARD, BACKWARD]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ('"25001","E109","10000",1,0,0,0', "expected 8 fields"),
        ('"25001","E109","1000x",1,0,0,0,0', "expected five digits"),
        ('"25001","E109","10000",1,0,0,x,0', "non-numeric flag"),
        ('"25001","E109","10000",0,0,0,0,0', "disagree with the flag columns"),
        ('"25001","NoDx","10000",1,0,0,0,0', "disagrees with no_map"),
        ('"2500Z","E109","10000",1,0,0,0,0', "malformed ICD-9-CM code"),
    ],
)
def test_bad_row_names_file_and_line(fixtures_dir: Path, tmp_path: Path, row: str, problem: str) -> None:
    lines = (fixtures_dir / FORWARD).read_text().splitlines()
    lines.insert(3, row)  # becomes line 4
    bad = tmp_path / "bad_gem.csv"
    bad.write_text("\n".join(lines) + "\n")
    src = GEMSource(forward_path=bad, backward_path=fixtures_dir / BACKWARD)
    with pytest.raises(SourceFormatError, match=problem) as err:
        list(src.relations())
    assert err.value.line == 4 and f"{bad}:4:" in str(err.value)


def test_wrong_header_direction(fixtures_dir: Path) -> None:
    # the backward file given as the forward one: its header says icd10cm first
    src = GEMSource(forward_path=fixtures_dir / BACKWARD, backward_path=fixtures_dir / BACKWARD)
    with pytest.raises(SourceFormatError, match="expected the header") as err:
        src.no_map_codes()
    assert err.value.line == 1


def test_registry_resolves_by_name(fixtures_dir: Path) -> None:
    src = resolve_source("gem", forward_path=fixtures_dir / FORWARD, backward_path=fixtures_dir / BACKWARD)
    assert isinstance(src, GEMSource)


@pytest.mark.realdata
def test_packaged_gems() -> None:
    src = GEMSource()
    rels = list(src.relations())
    forward = [r for r in rels if r.attrs["direction"] == "icd9_to_icd10"]
    backward = [r for r in rels if r.attrs["direction"] == "icd10_to_icd9"]
    # rows minus no-map rows
    assert src.stats["icd9_to_icd10"] == {"rows": 23_912, "edges": 23_487, "no_map": 425}
    assert src.stats["icd10_to_icd9"] == {"rows": 78_838, "edges": 78_169, "no_map": 669}
    assert (len(forward), len(backward)) == (23_487, 78_169)
    assert all(r.src.startswith("ICD9CM:") and r.dst.startswith("ICD10CM:") for r in forward)
    assert all(r.src.startswith("ICD10CM:") and r.dst.startswith("ICD9CM:") for r in backward)
    first = forward[0]
    assert (first.src, first.dst, first.attrs["flags"], first.attrs["approximate"]) == (
        "ICD9CM:001.0",
        "ICD10CM:A00.0",
        "00000",
        False,
    )
    assert ("ICD10CM:A00.0", "ICD9CM:001.0") in {(r.src, r.dst) for r in backward}
    dm = [r for r in forward if r.src == "ICD9CM:250.00"]
    assert [(r.dst, r.attrs["flags"], r.attrs["approximate"]) for r in dm] == [
        ("ICD10CM:E11.9", "10000", True)
    ]
    assert any(r.attrs["combination"] and r.attrs["choice_list"] == 2 for r in forward)
    no_map = src.no_map_codes()
    assert len(no_map) == 425 + 669 and "ICD9CM:365.70" in no_map
