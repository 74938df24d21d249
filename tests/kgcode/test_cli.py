"""The command line, as a user runs it: one-line errors with exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kgcode.cli import cli


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty kgcode cache dir and no default data dir."""
    monkeypatch.setenv("KGCODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KGCODE_DATA_DIR", str(tmp_path / "no-data"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> tuple[Path, str]:
    """A KG built by the CLI from the fixtures (mini ICD-10-CM XML, tiny DO and Mondo)."""
    out = tmp_path_factory.mktemp("kg") / "kg"
    result = CliRunner().invoke(
        cli,
        ["-q", "kg", "build", "--icd10cm-xml", str(fixtures_dir / "icd10cm_mini.xml"),
         "--data-dir", str(fixtures_dir), "--out", str(out)],
        env={"KGCODE_HOME": str(out.parent / "home")},
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def run(*args: str, **kw) -> object:
    return CliRunner().invoke(cli, list(args), **kw)


@pytest.mark.parametrize(
    "args",
    [[], ["kg"], ["kg", "build"], ["kg", "stats"], ["kg", "show"], ["kg", "search"], ["kg", "export-owl"]],
)
def test_help_on_every_command(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_build_reports_counts_and_writes_a_kg(built: tuple[Path, str]) -> None:
    out, output = built
    assert "built KG" in output and "SNOMED CT" in output
    assert (out / "manifest.json").is_file() and (out / "graph.sqlite").is_file()


def test_stats_json(built: tuple[Path, str]) -> None:
    out, _ = built
    result = run("kg", "stats", "--json", "--kg", str(out))
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["nodes_by_system"]["ICD10CM"] > 20
    assert stats["edges_by_relation"]["is_a"] > 20
    assert stats["edges_by_relation"]["excludes1"] >= 1
    assert "icd10cm_with_snomed" in stats and stats["icd10cm_with_snomed"] >= 1
    table = run("kg", "stats", "--kg", str(out))
    assert "ICD-10-CM codes with SNOMED CT" in table.output


@pytest.mark.parametrize("spelling", ["E11.9", "e119", " E11.9 ", "ICD10CM:E11.9"])
def test_show_normalises_the_code(built: tuple[Path, str], spelling: str) -> None:
    out, _ = built
    result = run("kg", "show", spelling, "--json", "--kg", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["id"] == "ICD10CM:E11.9"
    assert record["title"]
    assert [p["id"] for p in record["parents"]] == ["ICD10CM:E11"]
    # E11's excludes1 notes are inherited by E11.9
    assert any(item["from"] == "ICD10CM:E11" for item in record["excludes1"])


def test_show_text(built: tuple[Path, str]) -> None:
    out, _ = built
    result = run("kg", "show", "E11", "--kg", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ICD10CM:E11 ")
    assert "children" in result.output and "excludes1" in result.output


@pytest.mark.parametrize(
    ("code", "expected"),
    [("E11.99", "unknown code 'ICD10CM:E11.99': nearest valid codes: ICD10CM:E11.9"),
     ("E1", "malformed ICD-10-CM code 'E1'"),
     ("SCTID:44054007", "bad check digit")],
)
def test_bad_codes_give_one_line_and_exit_2(built: tuple[Path, str], code: str, expected: str) -> None:
    out, _ = built
    result = run("kg", "show", code, "--kg", str(out))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_search(built: tuple[Path, str]) -> None:
    out, _ = built
    result = run("kg", "search", "DIABETES", "--json", "--kg", str(out))
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert any(hit["id"].startswith("ICD10CM:E1") for hit in hits)


def test_export_owl(built: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = built
    owl = tmp_path / "kg.owl"
    result = run("kg", "export-owl", "--out", str(owl), "--systems", "ICD10CM", "--kg", str(out))
    assert result.exit_code == 0, result.output
    assert owl.is_file() and owl.stat().st_size > 1000


def test_no_kg_yet_is_a_clear_error(home: Path) -> None:
    result = run("kg", "stats")
    assert result.exit_code == 2
    assert "no KG built yet" in result.output


def test_default_kg_is_the_last_built(home: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "somewhere"
    build = run("-q", "kg", "build", "--icd10cm-xml", str(fixtures_dir / "icd10cm_mini.xml"),
                "--out", str(out))
    assert build.exit_code == 0, build.output
    # without DO/Mondo the build still works and says what was left out
    assert "Disease Ontology left out" in build.output and "Mondo left out" in build.output
    show = run("kg", "show", "E11.9", "--json")
    assert show.exit_code == 0, show.output
    assert json.loads(show.output)["snomed"] == []


def test_kg_of_another_format_version_is_a_clear_error(built: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = built
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("kg", "stats", "--kg", str(copy))
    assert result.exit_code == 2
    assert "manifest.json" in result.stderr and "999" in result.stderr


def test_truncated_source_names_file_and_line(home: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    text = (fixtures_dir / "icd10cm_mini.xml").read_text(encoding="utf-8")
    bad = tmp_path / "truncated.xml"
    bad.write_text(text[: len(text) // 2], encoding="utf-8")
    result = run("-q", "kg", "build", "--icd10cm-xml", str(bad), "--out", str(tmp_path / "kg"))
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "truncated.xml:" in line
    assert not (tmp_path / "kg").exists()


def test_build_never_replaces_a_folder_that_is_not_a_kg(
    home: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = run("-q", "kg", "build", "--icd10cm-xml", str(fixtures_dir / "icd10cm_mini.xml"),
                 "--out", str(precious))
    assert result.exit_code == 2
    assert "not a KG folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_build_with_a_licensed_rf2_snapshot_gives_map_refset_links(
    home: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kg"
    build = run("-q", "kg", "build", "--icd10cm-xml", str(fixtures_dir / "icd10cm_mini.xml"),
                "--snomed-rf2", str(fixtures_dir / "snomed_rf2"), "--out", str(out))
    assert build.exit_code == 0, build.output
    mapped = run("map", "E11.9", "--to", "SNOMEDCT", "--json", "--no-predicted", "--kg", str(out))
    assert mapped.exit_code == 0, mapped.output
    targets = json.loads(mapped.output)
    exact = [t for t in targets if t["kind"] == "exact"]
    # the refset's unconditional map (mapRule TRUE) ranks first
    assert exact and exact[0]["target"] == "SCTID:9000004006"
    assert "refset" in json.dumps(exact[0]["provenance"])
    # identifiers only: the KG keeps no SNOMED CT description
    shown = run("kg", "show", "SCTID:9000004006", "--json", "--kg", str(out))
    assert json.loads(shown.output)["title"] == ""


def test_build_rejects_a_missing_rf2_folder(home: Path, tmp_path: Path) -> None:
    result = run("kg", "build", "--snomed-rf2", str(tmp_path / "nope"), "--out", str(tmp_path / "kg"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
