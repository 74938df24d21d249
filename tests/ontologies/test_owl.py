"""OWLSource: the DOID-style fixture, fragments, other formats, bad files, the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import owlready2
import pytest

from ontologies.base import Relation, SourceFormatError
from ontologies.owl import OWLSource, fragment_to_id, id_to_fragment
from ontologies.registry import ontology_registry, resolve_source


@pytest.fixture(scope="module")
def mini(fixtures_dir: Path) -> OWLSource:
    return OWLSource(fixtures_dir / "mini.owl")


def test_fixture_concepts(mini: OWLSource) -> None:
    concepts = {c.id: c for c in mini.concepts()}
    assert set(concepts) == {
        "DOID:4",
        "DOID:7",
        "DOID:28",
        "DOID:0014667",
        "DOID:9351",
        "DOID:9352",
        "DOID:9744",
        "DOID:11714",
    }
    t2 = concepts["DOID:9352"]
    assert (t2.system, t2.title, t2.source) == ("DOID", "type 2 diabetes mellitus", "owl")
    assert t2.synonyms == ["NIDDM", "non-insulin-dependent diabetes mellitus", "adult-onset diabetes"]
    assert t2.attrs["xrefs"] == [
        "ICD10CM:E11",
        "ICD9CM:250.00",
        "SNOMEDCT_US_2099_01_01:44054006",
        "MIM:125853",
        "NCI:C26747",
    ]
    assert t2.attrs["iri"] == "http://purl.obolibrary.org/obo/DOID_9352"
    assert concepts["DOID:4"].title == "disease"  # a language-tagged label
    assert concepts["DOID:4"].synonyms == []
    assert "xrefs" not in concepts["DOID:4"].attrs
    # the obsolete class and the UBERON class are skipped and counted
    assert mini.skipped["deprecated"] == 1
    assert sum(mini.skipped.values()) == 2


def test_fixture_relations(mini: OWLSource) -> None:
    rels = list(mini.relations())
    is_a = {(r.src, r.dst) for r in rels if r.relation == "is_a"}
    assert is_a == {
        ("DOID:7", "DOID:4"),
        ("DOID:28", "DOID:7"),
        ("DOID:0014667", "DOID:4"),
        ("DOID:9351", "DOID:28"),  # the restriction beside it is ignored
        ("DOID:9351", "DOID:0014667"),
        ("DOID:9352", "DOID:9351"),
        ("DOID:9744", "DOID:9351"),
        ("DOID:11714", "DOID:9351"),
    }
    xrefs = {(r.src, r.dst) for r in rels if r.relation == "xref"}
    assert {d for s, d in xrefs if s == "DOID:9352"} == {
        "ICD10CM:E11",
        "ICD9CM:250.00",
        "SCTID:44054006",
        "OMIM:125853",
    }  # NCI: stays in attrs["xrefs"] only
    assert ("DOID:9351", "ICD10CM:E08-E13") in xrefs
    assert ("DOID:9351", "MESH:D003920") in xrefs
    assert all(r.attrs == {"match": "dbxref", "file": "mini.owl"} for r in rels if r.relation == "xref")
    assert {r.relation for r in rels} == {"is_a", "xref"}
    assert len(rels) == len({(r.src, r.dst, r.relation) for r in rels})


def test_fixture_info(mini: OWLSource, fixtures_dir: Path) -> None:
    info = mini.info()
    assert info.name == "owl"
    assert info.version == "http://purl.obolibrary.org/obo/doid/releases/2099-01-01/doid.owl"
    data = (fixtures_dir / "mini.owl").read_bytes()
    assert info.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert any("not_reachable.owl" in n for n in info.notes)  # owl:imports not followed


def test_nothing_leaks_into_default_world(mini: OWLSource) -> None:
    list(mini.concepts())
    assert not any("doid" in iri for iri in owlready2.default_world.ontologies)


def test_include_deprecated(fixtures_dir: Path) -> None:
    ids = {c.id for c in OWLSource(fixtures_dir / "mini.owl", include_deprecated=True).concepts()}
    assert "DOID:9999999" in ids


def test_registry(fixtures_dir: Path) -> None:
    assert ontology_registry["owl"] is OWLSource
    src = resolve_source("owl", path=fixtures_dir / "mini.owl")
    assert isinstance(src, OWLSource)
    assert len(list(src.concepts())) == 8


@pytest.mark.parametrize(
    ("cid", "fragment"),
    [
        ("ICD10CM:E11.9", "ICD10CM_E11.9"),
        ("ICD10CM:E08-E13", "ICD10CM_E08-E13"),
        ("ICD10CM:4", "ICD10CM_4"),
        ("ICD9CM:001-139", "ICD9CM_001-139"),
        ("DOID:0014667", "DOID_0014667"),
        ("MONDO:0005148", "MONDO_0005148"),
        ("SCTID:44054006", "SCTID_44054006"),
    ],
)
def test_fragment_scheme(cid: str, fragment: str) -> None:
    assert id_to_fragment(cid) == fragment
    assert fragment_to_id(fragment) == cid


def test_fragment_scheme_escapes_and_rejects() -> None:
    assert id_to_fragment("ICD10CM:a/b c%#:") == "ICD10CM_a%2Fb%20c%25%23%3A"
    assert fragment_to_id("DOID:9352") == "DOID:9352"
    assert fragment_to_id("HP_0000118") is None
    assert fragment_to_id("E11.9") is None
    assert fragment_to_id("E11.9", "ICD10CM") == "ICD10CM:E11.9"
    assert fragment_to_id("DOID_9352", "ICD10CM") == "DOID:9352"  # a known prefix wins
    assert fragment_to_id("DOID_abc") is None
    with pytest.raises(ValueError, match="system-qualified"):
        id_to_fragment("E11.9")


_PLAIN = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
         xmlns:owl="http://www.w3.org/2002/07/owl#">
  <owl:Ontology rdf:about="http://example.org/icd"/>
  <owl:Class rdf:about="http://example.org/icd#E11">
    <rdfs:label>Type 2 diabetes mellitus</rdfs:label>
  </owl:Class>
  <owl:Class rdf:about="http://example.org/icd#E11.9">
    <rdfs:subClassOf rdf:resource="http://example.org/icd#E11"/>
    <rdfs:label>Type 2 diabetes mellitus without complications</rdfs:label>
  </owl:Class>
</rdf:RDF>
"""


def test_system_for_unprefixed_iris(tmp_path: Path) -> None:
    path = tmp_path / "plain.owl"
    path.write_text(_PLAIN)
    bare = OWLSource(path)
    assert list(bare.concepts()) == []
    assert sum(bare.skipped.values()) == 2
    assert bare.info().version == "unversioned"

    src = OWLSource(path, system="icd10")
    assert {c.id: c.title for c in src.concepts()} == {
        "ICD10CM:E11": "Type 2 diabetes mellitus",
        "ICD10CM:E11.9": "Type 2 diabetes mellitus without complications",
    }
    assert [(r.src, r.dst, r.relation) for r in src.relations()] == [("ICD10CM:E11.9", "ICD10CM:E11", "is_a")]


_OWLXML = """<?xml version="1.0"?>
<Ontology xmlns="http://www.w3.org/2002/07/owl#" ontologyIRI="http://purl.obolibrary.org/obo/mondo.owl">
  <Declaration><Class IRI="http://purl.obolibrary.org/obo/MONDO_0005015"/></Declaration>
  <Declaration><Class IRI="http://purl.obolibrary.org/obo/MONDO_0005148"/></Declaration>
  <SubClassOf>
    <Class IRI="http://purl.obolibrary.org/obo/MONDO_0005148"/>
    <Class IRI="http://purl.obolibrary.org/obo/MONDO_0005015"/>
  </SubClassOf>
  <AnnotationAssertion>
    <AnnotationProperty IRI="http://www.w3.org/2000/01/rdf-schema#label"/>
    <IRI>http://purl.obolibrary.org/obo/MONDO_0005148</IRI>
    <Literal>type 2 diabetes mellitus</Literal>
  </AnnotationAssertion>
</Ontology>
"""


def test_owl_xml(tmp_path: Path) -> None:
    path = tmp_path / "mondo.owx"
    path.write_text(_OWLXML)
    src = OWLSource(path)
    assert {c.id: c.title for c in src.concepts()} == {
        "MONDO:0005015": "",
        "MONDO:0005148": "type 2 diabetes mellitus",
    }
    assert [(r.src, r.dst, r.relation) for r in src.relations()] == [
        ("MONDO:0005148", "MONDO:0005015", "is_a")
    ]


def test_sctid_classes_carry_no_description(tmp_path: Path) -> None:
    path = tmp_path / "sct.owl"
    path.write_text(_PLAIN.replace("http://example.org/icd#E11.9", "http://snomed.info/id/SCTID_44054006"))
    (concept,) = [c for c in OWLSource(path).concepts() if c.system == "SCTID"]
    assert (concept.id, concept.title, concept.synonyms) == ("SCTID:44054006", "", [])


def test_missing_file(tmp_path: Path) -> None:
    src = OWLSource(tmp_path / "absent.owl")
    with pytest.raises(SourceFormatError, match="file does not exist") as err:
        list(src.concepts())
    assert err.value.path.endswith("absent.owl")


def test_truncated_file(tmp_path: Path, fixtures_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "truncated.owl"
    path.write_bytes((fixtures_dir / "mini.owl").read_bytes()[:2000])
    with pytest.raises(SourceFormatError) as err:
        list(OWLSource(path).concepts())
    assert "truncated.owl" in str(err.value)
    assert err.value.line is not None
    assert "RDF/XML" in err.value.problem
    assert "Traceback" not in capfd.readouterr().err  # owlready2's printed traceback is swallowed


@pytest.mark.parametrize("content", [b"", b"hello, not an ontology\n", b"\x00\x01\x02\xff"])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.owl"
    path.write_bytes(content)
    with pytest.raises(SourceFormatError, match="bad.owl"):
        OWLSource(path).info()


_UNDECLARED = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
         xmlns:oboInOwl="http://www.geneontology.org/formats/oboInOwl#"
         xmlns:owl="http://www.w3.org/2002/07/owl#">
  <owl:Class rdf:about="http://purl.obolibrary.org/obo/DOID_2">
    <rdfs:subClassOf rdf:resource="http://purl.obolibrary.org/obo/DOID_1"/>
    <rdfs:label>two</rdfs:label>
    <oboInOwl:hasExactSynonym>deux</oboInOwl:hasExactSynonym>
    <oboInOwl:hasDbXref>ICD10CM:E11</oboInOwl:hasDbXref>
  </owl:Class>
</rdf:RDF>
"""


def test_undeclared_obo_properties_and_odd_path(tmp_path: Path) -> None:
    folder = tmp_path / "a folder é"
    folder.mkdir()
    path = folder / "u.owl"
    path.write_text(_UNDECLARED, encoding="utf-8")
    src = OWLSource(path)
    (concept,) = src.concepts()
    assert (concept.id, concept.title, concept.synonyms) == ("DOID:2", "two", ["deux"])
    assert _triples(src.relations()) == {("DOID:2", "DOID:1", "is_a"), ("DOID:2", "ICD10CM:E11", "xref")}


def _triples(relations: Iterable[Relation]) -> set[tuple[str, str, str]]:
    return {(r.src, r.dst, r.relation) for r in relations}
