"""Dataset readers on the hand-written fixtures, and the real CodiEsp counts."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import pytest

from kgcode.datasets import Note, code_counts, read_codiesp, read_dataset, read_jsonl, read_mimic
from ontologies.codes import try_standardize

# ------------------------------------------------------------------ CodiEsp


def test_read_codiesp_mini(fixtures_dir: Path) -> None:
    notes, report = read_codiesp(fixtures_dir / "codiesp_mini")
    assert [n.id for n in notes] == ["case-001", "case-002", "case-003"]
    assert notes[0].codes == ["ICD10CM:E11.9", "ICD10CM:I10", "ICD10CM:R07.9"]  # file order, no duplicate
    assert notes[1].codes == ["ICD10CM:S72.001A", "ICD10CM:W11.XXXA"]
    assert notes[2].codes == []  # a note without codes is kept
    assert notes[0].text.splitlines()[1] == "He took metformin 850 mg. twice daily."
    assert (report.n_notes, report.n_codes, report.n_distinct) == (3, 5, 5)
    assert report.counts == {"duplicate_codes": 1, "notes_without_codes": 1}
    reasons = {r.line: r.reason for r in report.invalid}
    assert set(reasons) == {7, 8, 10}  # line 9 is blank: skipped silently
    assert "malformed ICD-10-CM code 'e1'" in reasons[7]
    assert "case-009" in reasons[8] and "no text file" in reasons[8]
    assert "expected 'case id<TAB>code'" in reasons[10]
    assert all(r.file.endswith("miniD.tsv") for r in report.invalid)
    assert "3 notes, 5 codes (5 distinct), 3 invalid" in report.summary()


def test_read_codiesp_layout_errors(tmp_path: Path, fixtures_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="text_files_en"):
        read_codiesp(tmp_path)
    split = tmp_path / "split"
    shutil.copytree(fixtures_dir / "codiesp_mini", split)
    with pytest.raises(FileNotFoundError, match="text_files/"):
        read_codiesp(split, lang="es")
    (split / "otherD.tsv").write_text("")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        read_codiesp(split)
    with pytest.raises(ValueError, match="language"):
        read_codiesp(split, lang="fr")


# ------------------------------------------------------------------ JSON lines


def test_read_jsonl(fixtures_dir: Path) -> None:
    notes, report = read_jsonl(fixtures_dir / "notes.jsonl")
    by_id = {n.id: n for n in notes}
    assert list(by_id) == ["n1", "n2", "n3", "n7", "n8", "line-11"]
    assert by_id["n1"].codes == ["ICD10CM:E11.9", "ICD10CM:I10"]  # bare = ICD10CM
    assert by_id["n2"].codes == ["ICD9CM:250.00", "ICD9CM:401.9"]  # icd_version 9
    assert by_id["n3"].codes == ["ICD10CM:J45.909", "ICD9CM:401.9"]  # prefix wins over system
    assert by_id["n7"].codes == ["ICD10CM:E11.9"]  # malformed dropped, duplicate merged
    assert by_id["n8"].codes == []
    assert by_id["line-11"].codes == ["ICD10CM:R52"]  # a string is one code
    reasons = {r.line: r.reason for r in report.invalid}
    assert sorted(reasons) == [4, 6, 7, 8, 10]
    assert reasons[4].startswith("not JSON")
    assert reasons[6] == "missing 'text'"
    assert reasons[7] == "empty 'text'"
    assert "'XYZ'" in reasons[8]
    assert reasons[10] == "duplicate id 'n1'"
    assert (report.n_notes, report.n_codes, report.n_distinct) == (6, 8, 6)


def test_read_jsonl_systems_and_gzip(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "text": "t", "codes": ["4019"], "system": "ICD9"},
        {"id": "b", "text": "t", "codes": ["I10"], "icd_version": "10"},
        {"id": "c", "text": "t", "codes": ["I10"], "icd_version": 11},
        {"id": "d", "text": "t", "codes": ["I10"], "system": "ICD9CM", "icd_version": 10},
        {"id": "e", "text": "t", "codes": ["I10"], "system": "NOPE"},
        {"id": "f", "text": "t", "codes": {"I10": 1}},
        [1, 2],
        {"id": "g", "text": 5},
    ]
    path = tmp_path / "n.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(x) for x in lines) + "\n")
    notes, report = read_dataset(path)
    assert [(n.id, n.codes) for n in notes] == [("a", ["ICD9CM:401.9"]), ("b", ["ICD10CM:I10"])]
    reasons = [r.reason for r in report.invalid]
    assert "icd_version 11" in reasons[0]
    assert "disagrees" in reasons[1]
    assert "unknown code system 'NOPE'" in reasons[2]
    assert "'codes' is dict" in reasons[3]
    assert "JSON object" in reasons[4]
    assert "'text' is int" in reasons[5]
    default9, _ = read_jsonl(path, default_system="ICD9")
    assert default9[0].codes == ["ICD9CM:401.9"]


# ------------------------------------------------------------------ MIMIC


def test_read_mimic(fixtures_dir: Path) -> None:
    notes, report = read_mimic(fixtures_dir / "mimic" / "notes.csv", fixtures_dir / "mimic" / "diagnoses.csv")
    by_id = {n.id: n for n in notes}
    assert list(by_id) == ["20001", "20002", "20005"]
    assert by_id["20001"].codes == ["ICD9CM:401.9", "ICD9CM:250.00", "ICD9CM:E849.7", "ICD9CM:V45.81"]
    assert by_id["20002"].codes == ["ICD10CM:S72.001A", "ICD10CM:W19.XXXA", "ICD10CM:Z79.01"]
    assert by_id["20002"].text == "Fall at home, fractured hip.\n\nAddendum: on warfarin."
    assert "\nFollow up in 2 weeks." in by_id["20001"].text  # quoted newline kept
    assert by_id["20005"].codes == []
    assert report.counts == {
        "diagnoses_without_note": 1,
        "duplicate_codes": 1,
        "notes_merged": 1,
        "notes_without_codes": 1,
    }
    reasons = {(Path(r.file).name, r.line): r.reason for r in report.invalid}
    assert reasons[("notes.csv", 6)] == "missing hadm_id"  # the first note spans lines 2-3
    assert reasons[("notes.csv", 7)] == "empty text for hadm_id 20004"
    assert "icd_version '11'" in reasons[("diagnoses.csv", 10)]
    assert "empty code" in reasons[("diagnoses.csv", 11)]
    assert "'12345'" in reasons[("diagnoses.csv", 12)]
    assert (report.n_notes, report.n_codes, report.n_distinct) == (3, 7, 7)


def test_read_mimic3_layout_and_float_ids(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text('ROW_ID,HADM_ID,TEXT\n1,100.0,"Chest pain."\n')
    diagnoses = b"ROW_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,100,1,41401\n"
    (tmp_path / "diagnoses.csv.gz").write_bytes(gzip.compress(diagnoses))
    notes, report = read_dataset(tmp_path)
    assert notes == [Note(id="100", text="Chest pain.", codes=["ICD9CM:414.01"])]
    assert report.invalid == []
    (tmp_path / "notes.csv").write_text("ROW_ID,HADM_ID,BODY\n")
    with pytest.raises(ValueError, match="no column text"):
        read_dataset(tmp_path)


# ------------------------------------------------------------------ dispatch


def test_read_dataset_dispatch(fixtures_dir: Path, tmp_path: Path) -> None:
    assert read_dataset(fixtures_dir / "codiesp_mini")[1].n_notes == 3
    assert read_dataset(str(fixtures_dir / "notes.jsonl"))[1].n_notes == 6
    assert read_dataset(fixtures_dir / "mimic")[1].n_notes == 3
    with pytest.raises(ValueError, match="cannot tell what dataset"):
        read_dataset(tmp_path)
    with pytest.raises(ValueError, match="CodiEsp split folder"):
        read_dataset(fixtures_dir / "codiesp_mini" / "miniD.tsv")


def test_code_counts(fixtures_dir: Path) -> None:
    notes, _ = read_jsonl(fixtures_dir / "notes.jsonl")
    counts = code_counts(notes)
    assert counts["ICD10CM:E11.9"] == 2 and counts["ICD9CM:401.9"] == 2 and counts["ICD10CM:R52"] == 1


def test_invalid_rows_are_logged(fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kgcode.datasets")
    read_jsonl(fixtures_dir / "notes.jsonl")
    assert "5 invalid rows" in caplog.text


# ------------------------------------------------------------------ real data


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("split", "n_notes", "n_codes", "n_distinct"), [("train", 500, 5639, 1767), ("dev", 250, 2677, 1158)]
)
def test_real_codiesp_counts(data_dir: Path, split: str, n_notes: int, n_codes: int, n_distinct: int) -> None:
    split_dir = data_dir / "codiesp" / split
    notes, report = read_codiesp(split_dir)
    assert report.n_notes == len(notes) == n_notes
    assert (report.n_codes, report.n_distinct) == (n_codes, n_distinct)
    assert all(n.codes for n in notes)  # every CodiEsp case carries at least one diagnosis
    # Gold codes malformed after normalisation: none, as mentions or distinct codes.
    rows = (split_dir / f"{split}D.tsv").read_text(encoding="utf-8").splitlines()
    raw = [line.split("\t")[1].strip() for line in rows if line]
    malformed = [c for c in raw if try_standardize(c, "ICD10CM") is None]
    assert (len(malformed), len(set(malformed))) == (0, 0)
    assert report.invalid == []
    assert report.counts == {}


def test_read_pubtator_and_silver_icd10cm_through_do_and_mondo() -> None:
    from kgcode.datasets import read_pubtator, silver_icd10cm
    from tests.fixtures.coder.helpers import build_mini_kg

    path = Path(__file__).resolve().parents[1] / "fixtures" / "ncbi_mini.txt"
    notes, report = read_dataset(path)  # detected as PubTator
    assert [n.id for n in notes] == ["1001", "1002"]
    assert notes[0].text.startswith("Type 2 diabetes in a family.\nWe describe")
    assert notes[0].codes == ["MESH:D003924", "OMIM:999999"]
    assert notes[1].codes == ["MESH:D000000", "MESH:D003924"]
    assert [r.line for r in report.invalid] == [9] and report.counts["duplicate_codes"] == 1
    assert read_pubtator(path)[0][1].codes == notes[1].codes

    silver, srep = silver_icd10cm(notes, build_mini_kg())
    # MESH:D003924 -> DOID:9352 (dbxref) -> ICD10CM:E11; the unknown ids map to nothing
    assert silver[0].codes == ["ICD10CM:E11"] and silver[0].text == notes[0].text
    assert silver[1].codes == ["ICD10CM:E11"]
    assert srep.counts["ids_mapped"] == 2 and srep.counts["ids_unmapped"] == 2
