"""``kgcode viz`` as a user runs it: a page written, exit 0; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kg.build import build_kg
from kg.store import save_kg
from kgcode.cli import cli
from ontologies import resolve_source


@pytest.fixture(scope="module")
def kg_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """A KG folder built from the fixtures (mini ICD-10-CM XML, tiny DO and Mondo)."""
    sources = [
        resolve_source("icd10cm", xml_path=fixtures_dir / "icd10cm_mini.xml"),
        resolve_source("doid", data_dir=fixtures_dir),
        resolve_source("mondo", data_dir=fixtures_dir),
    ]
    out = tmp_path_factory.mktemp("kg") / "kg"
    save_kg(build_kg(sources, progress=False), out)
    return out


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_help() -> None:
    result = run("viz", "--help")
    assert result.exit_code == 0
    assert "--max-nodes" in result.output and "--relations" in result.output


def test_writes_the_page_and_says_what_it_drew(kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pages" / "e11.9.html"
    result = run("viz", "E11.9", "--kg", str(kg_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.is_file() and "ICD10CM:E11.9" in out.read_text()
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {out} (") and lines[0].endswith(" KB)")
    assert "14 nodes, " in lines[1] and "edges (cut: none)" in lines[1]


def test_cut_is_reported(kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "e11.html"
    result = run("viz", "e11", "--hops", "2", "--max-nodes", "5", "--kg", str(kg_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "5 nodes, " in result.output
    assert "(cut: 5 of " in result.output and "nearest first, hierarchy before cross-links" in result.output
    assert "5 of " in out.read_text()


def test_relations_and_several_codes(kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared.html"
    result = run("viz", "E11.9", "Z79.4", "S72.001", "--relations", "is_a,use_additional",
                 "--kg", str(kg_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "note: ICD10CM:E11.9 and ICD10CM:S72.001 are not connected within 4 hops" in result.output
    page = out.read_text()
    assert "Shared neighbourhood of E11.9, Z79.4, S72.001" in page
    assert "excludes1</code> Excludes1 note (not followed)" in page


def test_unknown_relation_exits_2_and_lists_the_valid_ones(kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    result = run("viz", "E11.9", "--relations", "is_a,parent_of", "--kg", str(kg_dir), "--out", str(out))
    assert result.exit_code == 2
    assert "unknown relation(s): parent_of" in result.output
    assert "is_a, excludes1, excludes2" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("code", "expected"),
    [("E11.99", "unknown code 'ICD10CM:E11.99'"), ("E1#1", "malformed ICD-10-CM code")],
)
def test_bad_codes_give_one_line_and_exit_2(kg_dir: Path, tmp_path: Path, code: str, expected: str) -> None:
    out = tmp_path / "x.html"
    result = run("viz", "E11.9", code, "--kg", str(kg_dir), "--out", str(out))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kgcode: error: ") and expected in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_codes_and_out_are_required(kg_dir: Path) -> None:
    assert run("viz", "--kg", str(kg_dir), "--out", "x.html").exit_code == 2
    assert run("viz", "E11.9", "--kg", str(kg_dir)).exit_code == 2
