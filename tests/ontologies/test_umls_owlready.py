"""The PyMedTermino2 (owlready2 UMLS quadstore) reader.

UMLS cannot be shipped, so the quadstore is built at test time by owlready2's own importer
(``owlready2.pymedtermino2.umls.import_umls``) from tiny hand-written RRF tables in
``tests/fixtures/umls/`` (MRCONSO, MRREL, MRRANK in the real column layout, made-up CUIs, AUIs,
SNOMED CT ids and strings). The import runs in a subprocess because PyMedTermino2 works on
owlready2's process-wide ``default_world``; a second subprocess reads the store back through
PyMedTermino2's documented API (``PYM["SNOMEDCT_US"][code]``, ``.parents``, ``>> PYM["CUI"]``) so
the reader is checked against it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kg import build_kg
from kgcode.mapping import explain, map_code
from ontologies import SourceFormatError, ontology_registry
from ontologies.icd10cm import ICD10CMSource
from ontologies.umls_owlready import PyMedTerminoSource

_IMPORT = """
import sys
from owlready2 import default_world
from owlready2.pymedtermino2.umls import import_umls
default_world.set_backend(filename=sys.argv[1])
import_umls(sys.argv[2], terminologies=["SNOMEDCT_US", "ICD10", "ICD10CM", "CUI"])
default_world.save()
"""

_READ_BACK = """
import json, sys
from owlready2 import default_world, get_ontology
default_world.set_backend(filename=sys.argv[1])
from owlready2.pymedtermino2.model import *
PYM = get_ontology("http://PYM/").load()
S = PYM["SNOMEDCT_US"]
out = {}
for concept in S.descendant_concepts(include_self=False):
    out[concept.name] = {
        "label": str(concept.label.first()),
        "parents": sorted(p.name for p in concept.parents),
        "cuis": sorted(c.name for c in concept >> PYM["CUI"]),
    }
print(json.dumps(out))
"""

T2 = "SCTID:9000004006"


@pytest.fixture(scope="module")
def quadstore(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The quadstore PyMedTermino2 builds from the fixture RRF files, and what its API reads back."""
    root = tmp_path_factory.mktemp("umls")
    rrf = root / "umls-2099AA-fixture"  # import_umls takes the version from the name
    shutil.copytree(fixtures_dir / "umls", rrf, ignore=shutil.ignore_patterns("*.md"))
    store = root / "pym.sqlite3"
    subprocess.run(
        [sys.executable, "-c", _IMPORT, str(store), str(rrf)],
        check=True,
        capture_output=True,
        cwd=root,
        timeout=120,
    )
    done = subprocess.run(
        [sys.executable, "-c", _READ_BACK, str(store)],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    return store, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def source(quadstore: tuple[Path, dict]) -> PyMedTerminoSource:
    return PyMedTerminoSource(quadstore[0])


def test_registered() -> None:
    assert ontology_registry.get("pymedtermino2") is PyMedTerminoSource


def test_concepts_and_hierarchy_agree_with_pymedtermino2(
    source: PyMedTerminoSource, quadstore: tuple[Path, dict]
) -> None:
    api = quadstore[1]
    concepts = {c.id: c for c in source.concepts()}
    assert set(concepts) == {f"SCTID:{code}" for code in api}
    assert "SCTID:9000011005" not in concepts  # its only atom is suppressed (obsolete)
    assert concepts[T2].title == api["9000004006"]["label"] == "Fixture type 2 sugar disorder"
    parents: dict[str, list[str]] = {}
    for r in source.relations():
        if r.relation == "is_a":
            parents.setdefault(r.src.partition(":")[2], []).append(r.dst.partition(":")[2])
    for code, seen in api.items():
        assert sorted(parents.get(code, [])) == seen["parents"], code


def test_icd_links_through_shared_cuis(source: PyMedTerminoSource, quadstore: tuple[Path, dict]) -> None:
    xrefs = {(r.src, r.dst): r.attrs for r in source.relations() if r.relation == "xref"}
    assert xrefs[(T2, "ICD10CM:E11")] == {
        "match": "umls_cui",
        "cuis": quadstore[1]["9000004006"]["cuis"],
        "umls_terminologies": ["ICD10CM", "ICD10"],
    }
    assert xrefs[("SCTID:9000005007", "ICD10CM:E11.65")]["cuis"] == ["C9000002"]
    assert xrefs[("SCTID:9000003000", "ICD10CM:E10-E14")]["umls_terminologies"] == ["ICD10"]  # WHO block
    assert xrefs[("SCTID:9000006008", "ICD10CM:E11.9")]["match"] == "umls_mapped_to"
    assert not any(dst == "ICD10CM:E13.9" for _, dst in xrefs)  # shares a CUI with a suppressed atom only
    assert source.stats["skipped"] == {"ICD10": 1}  # B95-B97.9 is no ICD-10-CM spelling


def test_without_titles(quadstore: tuple[Path, dict]) -> None:
    src = PyMedTerminoSource(quadstore[0], titles=False, icd_terminologies=["ICD10CM"])
    assert all(c.title == "" for c in src.concepts())
    xrefs = {(r.src, r.dst): r.attrs for r in src.relations() if r.relation == "xref"}
    assert xrefs[(T2, "ICD10CM:E11")]["umls_terminologies"] == ["ICD10CM"]
    assert ("SCTID:9000003000", "ICD10CM:E10-E14") not in xrefs  # that one came from WHO ICD-10


def test_info(source: PyMedTerminoSource) -> None:
    info = source.info()
    assert info.version == "UMLS 2099AA via PyMedTermino2"
    assert len(info.files) == 1 and len(info.files[0].sha256) == 64


def test_map_uses_umls_links_as_exact(source: PyMedTerminoSource, fixtures_dir: Path) -> None:
    kg = build_kg([ICD10CMSource(fixtures_dir / "icd10cm_mini.xml"), source], progress=False)
    best = map_code(kg, "E11")[0]
    assert (best.target, best.kind) == (T2, "exact")
    assert best.provenance["via"][0]["type"] == "umls_cui"
    assert explain(best) == "via UMLS CUI C9000001 (ICD10CM, ICD10)"
    inherited = {t.target: t for t in map_code(kg, "E11.9")}
    assert inherited["SCTID:9000006008"].kind == "exact"  # mapped_to
    assert inherited[T2].kind == "inherited"  # from E11
    up = {t.target: t for t in map_code(kg, "SCTID:9000007004", to="ICD10CM")}
    assert up["ICD10CM:E10.9"].kind == "exact"


def test_not_a_quadstore(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not sqlite at all\n" * 200)
    with pytest.raises(SourceFormatError, match="not an owlready2 quadstore"):
        list(PyMedTerminoSource(text).concepts())
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(SourceFormatError, match="no table datas, objs, resources"):
        list(PyMedTerminoSource(other).concepts())
    with pytest.raises(FileNotFoundError):
        PyMedTerminoSource(tmp_path / "missing.sqlite3")


def test_quadstore_without_snomed(quadstore: tuple[Path, dict]) -> None:
    src = PyMedTerminoSource(quadstore[0], snomed_terminology="SNOMEDCT_XX")
    with pytest.raises(SourceFormatError, match="no PyMedTermino2 terminology SNOMEDCT_XX"):
        list(src.relations())
