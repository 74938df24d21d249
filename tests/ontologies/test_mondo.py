"""MondoSource on ``tests/fixtures/mondo/`` and the real tables; DO + Mondo ICD-10-CM/SNOMED counts."""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

from ontologies import Concept, Relation, SourceFormatError, resolve_source
from ontologies.doid import DOSource
from ontologies.mondo import MondoSource

SCTID_FILE = "mondo_hasdbxref_sctid.sssom.tsv"


@pytest.fixture()
def mondo(fixtures_dir: Path) -> MondoSource:
    return MondoSource(fixtures_dir)


def icd10_snomed_pairs(relations: Iterable[Relation]) -> set[tuple[str, str]]:
    """ICD-10-CM code / SNOMED CT id pairs that one DO or Mondo concept carries together.

    The join of SOURCES.md: a concept with an ICD-10-CM ``xref`` and a SNOMED CT ``xref``, both
    with ``match`` exact or dbxref, pairs each of its ICD-10-CM codes with each of its SNOMED ids.
    """
    icd: dict[str, set[str]] = defaultdict(set)
    sct: dict[str, set[str]] = defaultdict(set)
    for r in relations:
        if r.relation == "xref" and r.attrs["match"] in ("exact", "dbxref"):
            if r.dst.startswith("ICD10CM:"):
                icd[r.src].add(r.dst)
            elif r.dst.startswith("SCTID:"):
                sct[r.src].add(r.dst)
    return {(code, sid) for concept, codes in icd.items() for code in codes for sid in sct.get(concept, ())}


def raw_icd10_snomed_pairs(
    concepts: Iterable[Concept], relations: Iterable[Relation]
) -> set[tuple[str, str]]:
    """The pairs a concept's *raw* (malformed, not made a node) ICD-10-CM xrefs would add."""
    sct: dict[str, set[str]] = defaultdict(set)
    for r in relations:
        if r.relation == "xref" and r.attrs["match"] in ("exact", "dbxref") and r.dst.startswith("SCTID:"):
            sct[r.src].add(r.dst)
    return {
        (raw, sid)
        for c in concepts
        for raw in c.attrs.get("xrefs", ())
        if raw.startswith("ICD10CM:")
        for sid in sct.get(c.id, ())
    }


def _summary(pairs: set[tuple[str, str]]) -> tuple[int, int, int]:
    return len({c for c, _ in pairs}), len({s for _, s in pairs}), len(pairs)


def test_concepts_titles_and_raw_xrefs(mondo: MondoSource) -> None:
    concepts = {c.id: c for c in mondo.concepts()}
    mondos = {k: c for k, c in concepts.items() if c.system == "MONDO"}
    assert set(mondos) == {"MONDO:0005148", "MONDO:0005044", "MONDO:0032919", "MONDO:0005015"}
    t2 = mondos["MONDO:0005148"]
    assert (t2.title, t2.kind, t2.source) == ("type 2 diabetes mellitus", "concept", "mondo")
    # UMLS CUIs are not nodes: kept raw, like an object code malformed for its system
    assert t2.attrs["xrefs"] == ["UMLS:C0011860"]
    assert mondos["MONDO:0032919"].attrs["xrefs"] == ["ICD10CM:E11.12345"]
    assert mondos["MONDO:0005044"].attrs["xrefs"] == ["SCTID:38341007"]
    assert mondos["MONDO:0005015"].attrs == {}


def test_relations_and_match_types(mondo: MondoSource) -> None:
    rels = list(mondo.relations())
    assert {r.source for r in rels} == {"mondo"}
    got = {(r.src, r.relation, r.dst, r.attrs["match"], r.attrs["file"]) for r in rels}
    assert got == {
        ("MONDO:0005148", "xref", "ICD10CM:E08-E13", "broad", "mondo_broadmatch_icd10cm.sssom.tsv"),
        ("MONDO:0005148", "equivalent", "DOID:9352", "exact", "mondo_exactmatch_doid.sssom.tsv"),
        ("MONDO:0005015", "equivalent", "DOID:9351", "exact", "mondo_exactmatch_doid.sssom.tsv"),
        ("MONDO:0005148", "xref", "ICD10CM:E11", "exact", "mondo_exactmatch_icd10cm.sssom.tsv"),
        ("MONDO:0005044", "xref", "ICD10CM:I10", "exact", "mondo_exactmatch_icd10cm.sssom.tsv"),
        ("MONDO:0005148", "xref", "MESH:D003924", "exact", "mondo_exactmatch_mesh.sssom.tsv"),
        ("MONDO:0005015", "xref", "ICD10CM:E08-E13", "dbxref", "mondo_hasdbxref_icd10cm.sssom.tsv"),
        ("MONDO:0005148", "xref", "ICD9CM:250.00", "dbxref", "mondo_hasdbxref_icd9.sssom.tsv"),
        ("MONDO:0005148", "xref", "SCTID:44054006", "dbxref", SCTID_FILE),
        ("MONDO:0005044", "xref", "SCTID:38341003", "dbxref", SCTID_FILE),
        ("MONDO:0032919", "xref", "SCTID:702450004", "dbxref", SCTID_FILE),
    }
    assert len(rels) == len(got)
    assert all(r.attrs["justification"] == "semapv:ManualMappingCuration" for r in rels)
    assert mondo.stats["invalid"] == {"ICD10CM": 1, "SCTID": 1}
    assert mondo.stats["sctid_bad_check_digit"] == 1


def test_snomed_and_mesh_ids_never_get_a_title(mondo: MondoSource) -> None:
    others = [c for c in mondo.concepts() if c.system != "MONDO"]
    assert sorted(c.id for c in others) == [
        "MESH:D003924",
        "SCTID:38341003",
        "SCTID:44054006",
        "SCTID:702450004",
    ]
    assert all(c.title == "" and c.synonyms == [] for c in others)
    assert not any(c.system in ("ICD10CM", "ICD9CM", "DOID") for c in mondo.concepts())


def test_info(mondo: MondoSource) -> None:
    info = mondo.info()
    assert info.name == "mondo" and info.version == "Mondo mappings 2026-08-04"
    assert "license: https://creativecommons.org/publicdomain/zero/1.0/" in info.notes
    assert len(info.files) == 8 and all(len(f.sha256) == 64 for f in info.files)


def test_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mondo")):
        MondoSource(tmp_path)
    (tmp_path / "mondo").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.sssom.tsv"):
        MondoSource(tmp_path)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("MONDO:0005148\ttype 2 diabetes mellitus\toboInOwl:hasDbXref", "expected 5 tab-separated fields"),
        ("DOID:9352\ttype 2 diabetes mellitus\toboInOwl:hasDbXref\tSCTID:44054006\tx", "is not a MONDO id"),
        ("MONDO:00X\tbroken\toboInOwl:hasDbXref\tSCTID:44054006\tx", "malformed MONDO id"),
    ],
)
def test_bad_row_names_file_and_physical_line(
    fixtures_dir: Path, tmp_path: Path, row: str, problem: str
) -> None:
    shutil.copytree(fixtures_dir / "mondo", tmp_path / "mondo")
    path = tmp_path / "mondo" / SCTID_FILE
    lines = path.read_text().splitlines()
    at = lines.index(next(x for x in lines if x.startswith("subject_id"))) + 3  # 2nd data row
    lines.insert(at - 1, row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceFormatError, match=problem) as err:
        list(MondoSource(tmp_path).relations())
    assert err.value.path == str(path) and err.value.line == at == 12


def test_unknown_predicate_is_counted_not_fatal(fixtures_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(fixtures_dir / "mondo", tmp_path / "mondo")
    path = tmp_path / "mondo" / SCTID_FILE
    path.write_text(
        path.read_text() + "MONDO:0005148\ttype 2 diabetes mellitus\tskos:fooMatch\tSCTID:73211009\tx\n"
    )
    mondo = MondoSource(tmp_path)
    assert "SCTID:73211009" not in {r.dst for r in mondo.relations()}
    assert mondo.stats["unknown_predicate"] == {"skos:fooMatch": 1}


def test_registry_resolves_by_name(fixtures_dir: Path) -> None:
    assert isinstance(resolve_source("mondo", data_dir=fixtures_dir), MondoSource)


def test_do_mondo_icd10_snomed_join_on_fixtures(fixtures_dir: Path) -> None:
    do, mondo = DOSource(fixtures_dir), MondoSource(fixtures_dir)
    rels = [*do.relations(), *mondo.relations()]
    pairs = icd10_snomed_pairs(rels)
    assert pairs == {
        ("ICD10CM:E11", "SCTID:44054006"),  # DO and Mondo agree: one pair
        ("ICD10CM:E08-E13", "SCTID:73211009"),  # DO; Mondo's E08-E13 is broad or has no SNOMED id
        ("ICD10CM:I10", "SCTID:38341003"),
    }
    concepts = [*do.concepts(), *mondo.concepts()]
    assert raw_icd10_snomed_pairs(concepts, rels) == {("ICD10CM:E11.12345", "SCTID:702450004")}


@pytest.mark.realdata
def test_real_mondo(data_dir: Path) -> None:
    mondo = MondoSource(data_dir)
    concepts = {c.id: c for c in mondo.concepts()}
    rels = list(mondo.relations())
    assert concepts["MONDO:0005148"].title == "type 2 diabetes mellitus"
    assert "UMLS:C0011860" in concepts["MONDO:0005148"].attrs["xrefs"]
    got = {(r.relation, r.dst, r.attrs["match"]) for r in rels if r.src == "MONDO:0005148"}
    assert {
        ("equivalent", "DOID:9352", "exact"),
        ("xref", "ICD10CM:E11", "exact"),
        ("xref", "SCTID:44054006", "dbxref"),
    } <= got
    assert {r.attrs["match"] for r in rels} == {"exact", "dbxref", "broad", "narrow", "close", "related"}
    sct = [c for c in concepts.values() if c.system == "SCTID"]
    assert sct and all(c.title == "" and not c.synonyms for c in sct)
    assert mondo.stats["sctid_bad_check_digit"] == 0
    assert mondo.info().version == "Mondo mappings 2026-08-04"


@pytest.mark.realdata
def test_real_do_mondo_icd10_snomed_counts(data_dir: Path) -> None:
    """SOURCES.md: 2,892 ICD-10-CM codes with a SNOMED id, 3,929 SNOMED ids, 4,456 pairs.

    Recomputed from the loaders' relations. Among those codes is ``ICD10CM:QA0.0151``
    (DOID:0070657, its only partner SCTID 702450004): ``standardize`` accepts the FY2026 letter-letter
    categories (``QA0``); were a code malformed, it would stay a raw xref and show up in ``raw``.
    """
    do, mondo = DOSource(data_dir), MondoSource(data_dir)
    rels = [*do.relations(), *mondo.relations()]
    pairs = icd10_snomed_pairs(rels)
    assert _summary(pairs) == (2_892, 3_929, 4_456)
    assert ("ICD10CM:QA0.0151", "SCTID:702450004") in pairs
    assert raw_icd10_snomed_pairs([*do.concepts(), *mondo.concepts()], rels) == set()
