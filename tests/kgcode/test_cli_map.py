"""``kgcode map`` as a user runs it: one code or a file of them, clear errors, exit codes."""

from __future__ import annotations

import csv
import json
import logging
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kg import save_kg
from kgcode.cli import cli
from tests.kgcode.test_mapping import FakePredictor, fixture_sources


@pytest.fixture(scope="module")
def kg_dir(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KG folder built from the fixture sources (mini ICD-10-CM, ICD-9-CM, GEMs, DO, Mondo)."""
    from kg import build_kg

    out = tmp_path_factory.mktemp("map") / "kg"
    save_kg(build_kg(fixture_sources(fixtures_dir), progress=False), out)
    return out


@pytest.fixture(autouse=True)
def no_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    """No predictor module unless a test installs one (the real one may exist or not)."""
    monkeypatch.setitem(sys.modules, "kgcode.snomed_predictor", None)


def run(kg_dir: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["map", *args, "--kg", str(kg_dir)], input=input)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_help() -> None:
    result = CliRunner().invoke(cli, ["map", "--help"])
    assert result.exit_code == 0 and "--batch" in result.output and "--to" in result.output


def test_single_code_table(kg_dir: Path) -> None:
    result = run(kg_dir, "E11.9")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("ICD10CM:E11.9  Type 2 diabetes mellitus without complications")
    row = next(line for line in out.splitlines() if "SCTID:44054006" in line)
    assert "type 2 diabetes mellitus" in row and "inherited" in row and "0.90" in row
    assert "inherited from ICD10CM:E11 Type 2 diabetes mellitus (1 level up, SNOMED concept broader)" in row
    assert "via DOID:9352 type 2 diabetes mellitus (dbxref)" in row


def test_single_code_json(kg_dir: Path) -> None:
    result = run(kg_dir, "ICD10CM:E11", "--json", "--top-k", "1")
    assert result.exit_code == 0, result.output
    targets = json.loads(result.stdout)
    assert len(targets) == 1
    assert {"target", "kind", "score", "provenance"} <= set(targets[0])
    assert (targets[0]["target"], targets[0]["kind"], targets[0]["score"]) == ("SCTID:44054006", "exact", 1.0)


@pytest.mark.parametrize(
    ("args", "target", "kind"),
    [
        (["250.00", "--from", "ICD9CM"], "ICD10CM:E11.9", "gem"),  # ICD-9-CM -> ICD-10-CM by default
        (["ICD9CM:250.00", "--to", "snomedct"], "SCTID:44054006", "exact"),
        (["SCTID:44054006"], "ICD10CM:E11", "exact"),
        (["E11.9", "--to", "ICD9CM"], "ICD9CM:250.00", "gem"),
    ],
)
def test_directions(kg_dir: Path, args: list[str], target: str, kind: str) -> None:
    result = run(kg_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)[0]
    assert (best["target"], best["kind"]) == (target, kind)


def test_no_target_is_said_on_stderr(kg_dir: Path) -> None:
    result = run(kg_dir, "Z79.4", "--to", "ICD9CM")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no map: the CMS GEM says this code has no equivalent" in result.stderr
    assert json.loads(run(kg_dir, "Z79.4", "--to", "ICD9CM", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["SCTID:44054007", "--to", "ICD10CM"], "bad check digit"),
        (["E11.99"], "unknown code 'ICD10CM:E11.99': nearest valid codes: ICD10CM:E11.9"),
        (["xx"], "malformed ICD-10-CM code 'xx'"),
        (["ICD9CM:250.00", "--from", "ICD10CM"], "is ICD9CM, but ICD10CM was declared"),
        (["E11", "--to", "ICD10CM"], "already ICD-10-CM"),
        (["44054006"], "write SCTID:44054006"),
        (["E11", "--from", "NOPE"], "unknown code system 'NOPE'"),
    ],
)
def test_bad_codes_are_one_line(kg_dir: Path, args: list[str], text: str) -> None:
    line = one_line_error(run(kg_dir, *args))
    assert line.startswith("kgcode: error: ") and text in line


def test_code_or_batch(kg_dir: Path, tmp_path: Path) -> None:
    assert run(kg_dir).exit_code == 2
    codes = tmp_path / "codes.txt"
    codes.write_text("E11\n")
    assert run(kg_dir, "E11", "--batch", str(codes)).exit_code == 2
    assert run(kg_dir, "E11", "--out", str(tmp_path / "x.csv")).exit_code == 2


# ----------------------------------------------------------------------------- batches


def test_batch_csv_with_a_bad_row(kg_dir: Path, tmp_path: Path) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("E11.9\nxx\n\nICD9CM:250.00\nSCTID:44054007\n")
    out = tmp_path / "out" / "map.csv"
    result = run(kg_dir, "--batch", str(codes), "--out", str(out))
    assert result.exit_code == 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert errors[0].startswith("line 2: malformed ICD-10-CM code 'xx'")
    assert errors[1].startswith("line 5: SNOMED CT identifier '44054007' has a bad check digit")
    assert "mapped 2 of 4 codes" in result.stderr
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["line"] for r in rows] == ["1", "2", "4", "5"]
    assert (rows[0]["target"], rows[0]["kind"]) == ("SCTID:44054006", "inherited")
    assert json.loads(rows[0]["provenance"])["from"] == "ICD10CM:E11"
    assert (rows[2]["target"], rows[2]["kind"]) == ("ICD10CM:E11.9", "gem")  # ICD-9-CM: to ICD-10-CM
    assert rows[1]["error"] and not rows[1]["target"]


def test_batch_jsonl_file_and_stdin(kg_dir: Path, tmp_path: Path) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("E11\nE11.9\n")
    out = tmp_path / "map.jsonl"
    assert run(kg_dir, "--batch", str(codes), "--out", str(out)).exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["exact", "inherited"]
    args = ["-q", "map", "--batch", "-", "--json", "--kg", str(kg_dir)]
    result = CliRunner().invoke(cli, args, input="ICD9CM:250.00\n")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no summary with --quiet
    record = json.loads(result.stdout)
    assert record["source"] == "ICD9CM:250.00" and record["target"] == "ICD10CM:E11.9"


def test_batch_to_stdout_as_csv(kg_dir: Path) -> None:
    result = run(kg_dir, "--batch", "-", "--to", "ICD9CM", input="E11.9\n")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert rows[0]["target"] == "ICD9CM:250.00" and rows[0]["kind"] == "gem"


def test_batch_all_bad_exits_2(kg_dir: Path, tmp_path: Path) -> None:
    codes = tmp_path / "bad.txt"
    codes.write_text("xx\nyy\n")
    result = run(kg_dir, "--batch", str(codes), "--out", str(tmp_path / "bad.csv"))
    assert result.exit_code == 2
    assert "line 1: malformed" in result.stderr and "line 2: malformed" in result.stderr
    assert "no code of" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("content", ["", "\n\n  \n", "# only a comment\n"])
def test_batch_empty_file_exits_2(kg_dir: Path, tmp_path: Path, content: str) -> None:
    codes = tmp_path / "empty.txt"
    codes.write_text(content)
    assert "has no codes (empty file)" in one_line_error(run(kg_dir, "--batch", str(codes)))


def test_batch_missing_file(kg_dir: Path, tmp_path: Path) -> None:
    line = one_line_error(run(kg_dir, "--batch", str(tmp_path / "nope.txt")))
    assert line == f"kgcode: error: no such file or folder: {tmp_path / 'nope.txt'}"


# ----------------------------------------------------------------------------- predictor


def test_predictor_when_available(kg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("kgcode.snomed_predictor")
    loaded: list[object] = []

    def load_default_predictor(kg: object) -> FakePredictor:
        loaded.append(kg)
        return FakePredictor()

    module.load_default_predictor = load_default_predictor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kgcode.snomed_predictor", module)
    targets = json.loads(run(kg_dir, "E11.9", "--json").stdout)
    assert any(t["kind"] == "predicted" and t["target"] == "SCTID:46635009" for t in targets)
    assert len(loaded) == 1
    run(kg_dir, "E11.9", "--json", "--no-predicted")
    run(kg_dir, "E11.9", "--json", "--to", "ICD9CM")
    assert len(loaded) == 1  # not loaded when not wanted


def test_no_predictor_is_one_info_line(kg_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kgcode"):
        result = CliRunner().invoke(cli, ["-v", "map", "E11", "--kg", str(kg_dir), "--json"])
    assert result.exit_code == 0, result.output
    lines = [r for r in caplog.records if "predicted" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert all(t["kind"] != "predicted" for t in json.loads(result.stdout))
