"""DOSource: the hand-written ``tests/fixtures/doid/`` folder and the real DO reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ontologies import SourceFormatError, resolve_source
from ontologies.doid import DOSource


@pytest.fixture()
def do(fixtures_dir: Path) -> DOSource:
    return DOSource(fixtures_dir)


def _copy_fixture(fixtures_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(fixtures_dir / "doid", tmp_path / "doid")
    return tmp_path


def test_classes_titles_and_parents(do: DOSource) -> None:
    concepts = {c.id: c for c in do.concepts()}
    doids = {k: c for k, c in concepts.items() if c.system == "DOID"}
    assert len(doids) == 9  # the 8 rows and DO's root, DOID:4 "disease", which has no row
    assert doids["DOID:4"].title == "disease"
    t2 = doids["DOID:9352"]
    assert (t2.title, t2.kind, t2.source) == ("type 2 diabetes mellitus", "concept", "doid")
    isa = {(r.src, r.dst) for r in do.relations() if r.relation == "is_a"}
    assert isa == {
        ("DOID:9352", "DOID:9351"),
        ("DOID:9744", "DOID:9351"),
        ("DOID:0090001", "DOID:9351"),
        ("DOID:0090002", "DOID:10763"),
        ("DOID:0090004", "DOID:10763"),  # two rows, two parents
        ("DOID:0090004", "DOID:9352"),
        ("DOID:9351", "DOID:4"),  # "disease": the root, added since the report has no row for it
        ("DOID:10763", "DOID:4"),
    }
    # "twin label" names two classes
    assert do.stats["parent_unresolved"] == {}
    assert do.stats["parent_ambiguous"] == {"twin label": 1}


def test_synonyms_exact_and_related_only(do: DOSource) -> None:
    concepts = {c.id: c for c in do.concepts()}
    # NARROW dropped, the title itself and a whitespace duplicate dropped, RELATED kept
    assert concepts["DOID:9352"].synonyms == ["NIDDM", "type II diabetes mellitus", "adult-onset diabetes"]
    assert concepts["DOID:9351"].synonyms == ['the "sugar" disease']
    assert concepts["DOID:10763"].synonyms == []
    # obsolete and unknown terms give nothing
    assert "DOID:0090099" not in concepts and "DOID:0099999" not in concepts
    assert do.stats["obo_terms_not_in_humando"] == 1


def test_xrefs(do: DOSource) -> None:
    xrefs = [r for r in do.relations() if r.relation == "xref"]
    assert all(r.attrs["match"] == "dbxref" and r.attrs["file"] == "allXREFinDO.tsv" for r in xrefs)
    by_pair = {(r.src, r.dst): r for r in xrefs}
    assert set(by_pair) == {
        ("DOID:9352", "ICD10CM:E11"),  # listed twice in the file, one edge
        ("DOID:9352", "ICD9CM:250.00"),
        ("DOID:9352", "SCTID:44054006"),
        ("DOID:9352", "MESH:D003924"),
        ("DOID:9352", "OMIM:125853"),
        ("DOID:9351", "ICD10CM:E08-E13"),
        ("DOID:9351", "SCTID:73211009"),
        ("DOID:10763", "ICD10CM:I10"),
        ("DOID:10763", "SCTID:38341003"),
        ("DOID:4", "SCTID:64572001"),
    }
    assert len(xrefs) == len(by_pair)
    assert by_pair[("DOID:9352", "SCTID:44054006")].attrs["snomed_release"] == "2025_09_01"
    assert by_pair[("DOID:9351", "SCTID:73211009")].attrs["snomed_release"] == "2021_09_01"
    assert "snomed_release" not in by_pair[("DOID:9352", "ICD10CM:E11")].attrs
    stats = do.stats
    assert stats["xref_invalid"] == {"ICD9CM": 1, "SCTID": 1, "MIM": 1}
    assert stats["sctid_bad_check_digit"] == 1  # 38341007
    assert stats["xref_unknown_subject"] == 0  # DOID:4, which has no row, is added as the root


def test_other_prefixes_and_malformed_codes_stay_raw(do: DOSource) -> None:
    concepts = {c.id: c for c in do.concepts()}
    assert concepts["DOID:9352"].attrs["xrefs"] == ["UMLS_CUI:C0011860", "NCI:C26747"]
    assert concepts["DOID:10763"].attrs["xrefs"] == [
        "ICD9CM:401-405.99",
        "SNOMEDCT_US_2025_09_01:38341007",
        "MIM:PS145500",
    ]
    assert concepts["DOID:9744"].attrs == {}


def test_id_only_concepts_never_get_a_title(do: DOSource) -> None:
    concepts = list(do.concepts())
    others = [c for c in concepts if c.system != "DOID"]
    assert sorted(c.id for c in others) == [
        "MESH:D003924",
        "OMIM:125853",
        "SCTID:38341003",
        "SCTID:44054006",
        "SCTID:64572001",
        "SCTID:73211009",
    ]
    assert all(c.title == "" and c.synonyms == [] and c.kind == "concept" for c in others)
    # ICD codes are left to the ICD sources
    assert not any(c.system in ("ICD10CM", "ICD9CM") for c in concepts)
    assert do.stats["id_only_concepts"] == {"SCTID": 4, "MESH": 1, "OMIM": 1}


def test_info(do: DOSource) -> None:
    info = do.info()
    assert info.name == "doid"
    assert info.version == "DOreports (HumanDO.tsv); synonyms from doid-fixture.obo (releases/2016-09-01)"
    assert [Path(f.path).name for f in info.files] == ["HumanDO.tsv", "allXREFinDO.tsv", "doid-fixture.obo"]


def test_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "doid")):
        DOSource(tmp_path)


def test_without_obo_there_are_no_synonyms(fixtures_dir: Path, tmp_path: Path) -> None:
    data = _copy_fixture(fixtures_dir, tmp_path)
    (data / "doid" / "doid-fixture.obo").unlink()
    do = DOSource(data)
    assert all(c.synonyms == [] for c in do.concepts())
    assert do.info().version == "DOreports (HumanDO.tsv)"


@pytest.mark.parametrize(
    ("name", "line", "problem"),
    [
        ("HumanDO.tsv", '"DOID:0090005"\t"truncated row"', "expected 3 fields"),
        ("HumanDO.tsv", '"DOID:0090005"\t"label cut off', "broken quoting"),
        ("HumanDO.tsv", '"DOID:0090005"\t"stray "quote"\t"disease"', "broken quoting"),
        ("HumanDO.tsv", '"DOID:abc"\t"bad id"\t"disease"', "malformed DOID id"),
        ("allXREFinDO.tsv", '"DOID:9352"\t"type 2 diabetes mellitus"', "expected 3 fields"),
        ("doid-fixture.obo", 'synonym: "unclosed EXACT []', "expected synonym"),
    ],
)
def test_malformed_row_names_file_and_line(
    fixtures_dir: Path, tmp_path: Path, name: str, line: str, problem: str
) -> None:
    data = _copy_fixture(fixtures_dir, tmp_path)
    path = data / "doid" / name
    lines = path.read_text().splitlines()
    at = 9 if name.endswith(".obo") else 3  # inside the first [Term] of the OBO
    lines.insert(at - 1, line)
    if "cut off" in line:
        lines = lines[:at]  # a quote left open at the end of a truncated file
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceFormatError, match=problem) as err:
        list(DOSource(data).concepts())
    assert err.value.path == str(path)
    assert err.value.line == at


def test_registry_resolves_by_name(fixtures_dir: Path) -> None:
    assert isinstance(resolve_source("doid", data_dir=fixtures_dir), DOSource)


@pytest.mark.realdata
def test_real_disease_ontology(data_dir: Path) -> None:
    do = DOSource(data_dir)
    concepts = {c.id: c for c in do.concepts()}
    rels = list(do.relations())
    doids = [c for c in concepts.values() if c.system == "DOID"]
    assert len(doids) == 12_247  # SOURCES.md: 12,246 classes, and the root DOID:4 they all descend from
    t2 = concepts["DOID:9352"]
    assert t2.title == "type 2 diabetes mellitus" and "NIDDM" in t2.synonyms
    assert ("DOID:9352", "DOID:9351") in {(r.src, r.dst) for r in rels if r.relation == "is_a"}
    xref = {(r.src, r.dst) for r in rels if r.relation == "xref"}
    assert {("DOID:9352", "ICD10CM:E11"), ("DOID:9352", "SCTID:44054006")} <= xref
    # DO's root "disease" (DOID:4, no row of its own) is added, so every parent label resolves
    assert do.stats["parent_unresolved"] == {} and do.stats["parent_ambiguous"] == {}
    assert concepts["DOID:4"].title == "disease"
    top = {r.src for r in rels if r.relation == "is_a" and r.dst == "DOID:4"}
    assert len(top) == 8  # DO's eight top-level classes
    assert do.stats["sctid_bad_check_digit"] == 0
    sct = [c for c in concepts.values() if c.system == "SCTID"]
    assert sct and all(c.title == "" and not c.synonyms for c in sct)
    assert do.info().version.endswith("(releases/2016-09-01)")
