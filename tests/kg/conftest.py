"""A tiny fake world of ontology sources for the KG tests (no files, no real loaders).

ICD-10-CM (~28 codes under diabetes, hypertension, asthma and insulin use), ICD-9-CM (7 codes),
GEM edges (with a no-map list), Disease Ontology and Mondo concepts with ``xref`` edges to ICD
codes and to SNOMED CT ids (Verhoeff-valid), Mondo ``equivalent`` DOID. Some relations point at
ids no source defines, so the builder has something to drop.

SNOMED CT links this world must give (``exact``/``dbxref`` on both xrefs of one DO/Mondo concept):

* ICD10CM:E11      -> SCTID:44054006 via DOID:9352 and via MONDO:0005148
* ICD10CM:E08-E13  -> SCTID:73211009 via DOID:9351
* ICD10CM:E10      -> SCTID:46635009 via DOID:9744
* ICD10CM:I10      -> SCTID:38341003 via DOID:10763 (not via MONDO:0005044: its ICD xref is broad)
* ICD10CM:J45      -> SCTID:195967001 via MONDO:0004979 (not via DOID:2841: its SNOMED xref is broad)
* ICD9CM:250.00    -> SCTID:44054006; ICD9CM:250 -> SCTID:73211009; ICD9CM:401 -> SCTID:38341003
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from kg.build import build_kg
from kg.graph import KnowledgeGraph
from ontologies.base import Concept, OntologySource, Relation, SourceFile, SourceInfo


def _icd10(code: str, title: str, kind: str = "code", billable: bool = False, **kw: object) -> Concept:
    return Concept(f"ICD10CM:{code}", "ICD10CM", title, kind=kind, billable=billable, **kw)  # type: ignore[arg-type]


def _icd9(code: str, title: str, kind: str = "code", billable: bool = False) -> Concept:
    return Concept(f"ICD9CM:{code}", "ICD9CM", title, kind=kind, billable=billable)


def _xref(src: str, dst: str, match: str, file: str) -> Relation:
    return Relation(src, dst, "xref", attrs={"match": match, "file": file})


ICD10_CONCEPTS = [
    _icd10("4", "Endocrine, nutritional and metabolic diseases (E00-E89)", "chapter"),
    _icd10("E08-E13", "Diabetes mellitus (E08-E13)", "block"),
    _icd10("E10", "Type 1 diabetes mellitus", "category"),
    _icd10("E10.9", "Type 1 diabetes mellitus without complications", billable=True),
    _icd10("E11", "Type 2 diabetes mellitus", "category", synonyms=["Insulin resistant diabetes mellitus"]),
    _icd10("E11.0", "Type 2 diabetes mellitus with hyperosmolarity"),
    _icd10(
        "E11.00",
        "Type 2 diabetes mellitus with hyperosmolarity without nonketotic hyperglycemic-hyperosmolar coma",
        billable=True,
    ),
    _icd10("E11.01", "Type 2 diabetes mellitus with hyperosmolarity with coma", billable=True),
    _icd10("E11.2", "Type 2 diabetes mellitus with kidney complications"),
    _icd10(
        "E11.21",
        "Type 2 diabetes mellitus with diabetic nephropathy",
        billable=True,
        synonyms=["Type 2 diabetes mellitus with intercapillary glomerulosclerosis"],
    ),
    _icd10("E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease", billable=True),
    _icd10("E11.29", "Type 2 diabetes mellitus with other diabetic kidney complication", billable=True),
    _icd10("E11.6", "Type 2 diabetes mellitus with other specified complications"),
    _icd10("E11.65", "Type 2 diabetes mellitus with hyperglycemia", billable=True),
    _icd10("E11.69", "Type 2 diabetes mellitus with other specified complication", billable=True),
    _icd10("E11.9", "Type 2 diabetes mellitus without complications", billable=True),
    _icd10("9", "Diseases of the circulatory system (I00-I99)", "chapter"),
    _icd10("I10-I1A", "Hypertensive diseases (I10-I1A)", "block"),
    _icd10(
        "I10",
        "Essential (primary) hypertension",
        "category",
        billable=True,
        synonyms=["High blood pressure", "Hypertension (arterial) (benign) (essential) (primary)"],
    ),
    _icd10("10", "Diseases of the respiratory system (J00-J99)", "chapter"),
    _icd10("J40-J4A", "Chronic lower respiratory diseases (J40-J4A)", "block"),
    _icd10("J45", "Asthma", "category"),
    _icd10("J45.9", "Other and unspecified asthma"),
    _icd10("J45.90", "Unspecified asthma"),
    _icd10("J45.909", "Unspecified asthma, uncomplicated", billable=True, synonyms=["Asthma NOS"]),
    _icd10("21", "Factors influencing health status and contact with health services (Z00-Z99)", "chapter"),
    _icd10("Z79", "Long term (current) drug therapy", "category"),
    _icd10("Z79.4", "Long term (current) use of insulin", billable=True),
]

_ICD10_PARENTS = {
    "E08-E13": "4", "E10": "E08-E13", "E10.9": "E10", "E11": "E08-E13", "E11.0": "E11",
    "E11.00": "E11.0", "E11.01": "E11.0", "E11.2": "E11", "E11.21": "E11.2", "E11.22": "E11.2",
    "E11.29": "E11.2", "E11.6": "E11", "E11.65": "E11.6", "E11.69": "E11.6", "E11.9": "E11",
    "I10-I1A": "9", "I10": "I10-I1A", "J40-J4A": "10", "J45": "J40-J4A", "J45.9": "J45",
    "J45.90": "J45.9", "J45.909": "J45.90", "Z79": "21", "Z79.4": "Z79",
}  # fmt: skip

ICD10_RELATIONS = [
    *(Relation(f"ICD10CM:{c}", f"ICD10CM:{p}", "is_a") for c, p in _ICD10_PARENTS.items()),
    Relation("ICD10CM:E11", "ICD10CM:E10", "excludes1", attrs={"text": "type 1 diabetes mellitus (E10.-)"}),
    Relation("ICD10CM:E11", "ICD10CM:O24.1", "excludes1", attrs={"text": "diabetes in pregnancy (O24.1-)"}),
    Relation(
        "ICD10CM:E11",
        "ICD10CM:Z79.4",
        "use_additional",
        attrs={"text": "Use additional code to identify control using insulin (Z79.4)"},
    ),
    Relation("ICD10CM:E11.2", "ICD10CM:E10", "code_also", attrs={"text": "made-up note for the tests"}),
    Relation("ICD10CM:J45", "ICD10CM:J44.9", "excludes1", attrs={"text": "obstructive asthma (J44.9)"}),
]

ICD9_CONCEPTS = [
    _icd9("250", "Diabetes mellitus", "category"),
    _icd9("250.0", "Diabetes mellitus without mention of complication"),
    _icd9(
        "250.00",
        "Diabetes mellitus without mention of complication, type II or unspecified type, "
        "not stated as uncontrolled",
        billable=True,
    ),
    _icd9(
        "250.01",
        "Diabetes mellitus without mention of complication, type I [juvenile type], "
        "not stated as uncontrolled",
        billable=True,
    ),
    _icd9("401", "Essential hypertension", "category"),
    _icd9("401.9", "Unspecified essential hypertension", billable=True),
    _icd9("493.90", "Asthma, unspecified type, unspecified", billable=True),
]

ICD9_RELATIONS = [
    Relation("ICD9CM:250.0", "ICD9CM:250", "is_a"),
    Relation("ICD9CM:250.00", "ICD9CM:250.0", "is_a"),
    Relation("ICD9CM:250.01", "ICD9CM:250.0", "is_a"),
    Relation("ICD9CM:401.9", "ICD9CM:401", "is_a"),
    Relation("ICD9CM:493.90", "ICD9CM:493.9", "is_a"),  # parent not in the fake: dropped
]


def _gem(src: str, dst: str, file: str, approximate: bool = False) -> Relation:
    return Relation(src, dst, "gem_equivalent", attrs={"file": file, "approximate": approximate})


GEM_RELATIONS = [
    _gem("ICD9CM:250.00", "ICD10CM:E11.9", "2018_I9gem.txt"),
    _gem("ICD9CM:250.01", "ICD10CM:E10.9", "2018_I9gem.txt"),
    _gem("ICD9CM:401.9", "ICD10CM:I10", "2018_I9gem.txt"),
    _gem("ICD9CM:493.90", "ICD10CM:J45.909", "2018_I9gem.txt", approximate=True),
    _gem("ICD10CM:E11.9", "ICD9CM:250.00", "2018_I10gem.txt"),
    _gem("ICD9CM:999.9", "ICD10CM:T88.9", "2018_I9gem.txt"),  # neither end in the fake: dropped
]

SCTIDS = ["44054006", "73211009", "46635009", "38341003", "195967001"]

DO_CONCEPTS = [
    Concept("DOID:9351", "DOID", "diabetes mellitus"),
    Concept("DOID:9352", "DOID", "type 2 diabetes mellitus", synonyms=["NIDDM", "type II diabetes mellitus"]),
    Concept("DOID:9744", "DOID", "type 1 diabetes mellitus", synonyms=["IDDM"]),
    Concept("DOID:10763", "DOID", "hypertension"),
    Concept("DOID:2841", "DOID", "asthma"),
    *(Concept(f"SCTID:{s}", "SCTID") for s in SCTIDS),
    Concept("MESH:D003924", "MESH"),
]

DO_RELATIONS = [
    Relation("DOID:9352", "DOID:9351", "is_a"),
    Relation("DOID:9744", "DOID:9351", "is_a"),
    _xref("DOID:9351", "ICD10CM:E08-E13", "dbxref", "doid.obo"),
    _xref("DOID:9351", "ICD9CM:250", "dbxref", "doid.obo"),
    _xref("DOID:9351", "SCTID:73211009", "dbxref", "doid.obo"),
    _xref("DOID:9352", "ICD10CM:E11", "dbxref", "doid.obo"),
    _xref("DOID:9352", "ICD9CM:250.00", "dbxref", "doid.obo"),
    _xref("DOID:9352", "SCTID:44054006", "dbxref", "doid.obo"),
    _xref("DOID:9352", "MESH:D003924", "dbxref", "doid.obo"),
    _xref("DOID:9744", "ICD10CM:E10", "dbxref", "doid.obo"),
    _xref("DOID:9744", "SCTID:46635009", "dbxref", "doid.obo"),
    _xref("DOID:10763", "ICD10CM:I10", "dbxref", "doid.obo"),
    _xref("DOID:10763", "ICD9CM:401", "dbxref", "doid.obo"),
    _xref("DOID:10763", "SCTID:38341003", "dbxref", "doid.obo"),
    _xref("DOID:2841", "ICD10CM:J45", "dbxref", "doid.obo"),
    _xref("DOID:2841", "SCTID:195967001", "broad", "doid.obo"),
    _xref("DOID:2841", "ICD9CM:493", "dbxref", "doid.obo"),  # not in the fake: dropped
]

MONDO_CONCEPTS = [
    Concept(
        "MONDO:0005148",
        "MONDO",
        "type 2 diabetes mellitus",
        synonyms=["type II diabetes mellitus", "non-insulin-dependent diabetes mellitus"],
    ),
    Concept("MONDO:0005044", "MONDO", "hypertensive disorder"),
    Concept("MONDO:0004979", "MONDO", "asthma"),
    # the same DO concept again, with another label and synonym: merged into one node
    Concept("DOID:9352", "DOID", "type 2 diabetes", synonyms=["T2DM", "NIDDM"], attrs={"from_mondo": True}),
    # a SNOMED CT id that comes with a description: the title is dropped
    Concept("SCTID:44054006", "SCTID", "Diabetes mellitus type 2 (disorder)"),
    Concept("SCTID:59621000", "SCTID"),
    Concept("OMIM:125853", "OMIM"),
]

MONDO_RELATIONS = [
    Relation("MONDO:0005148", "DOID:9352", "equivalent", attrs={"match": "exact"}),
    Relation("MONDO:0005044", "DOID:10763", "equivalent", attrs={"match": "exact"}),
    Relation("MONDO:0004979", "DOID:2841", "equivalent", attrs={"match": "exact"}),
    Relation("DOID:9352", "DOID:9351", "is_a", attrs={"file": "mondo.sssom.tsv"}),  # also given by DO
    _xref("MONDO:0005148", "ICD10CM:E11", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0005148", "SCTID:44054006", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0005148", "OMIM:125853", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0005148", "MESH:D999999", "exact", "mondo.sssom.tsv"),  # not in the fake: dropped
    _xref("MONDO:0005044", "ICD10CM:I10", "broad", "mondo.sssom.tsv"),
    _xref("MONDO:0005044", "SCTID:38341003", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0005044", "SCTID:59621000", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0004979", "ICD10CM:J45", "exact", "mondo.sssom.tsv"),
    _xref("MONDO:0004979", "SCTID:195967001", "exact", "mondo.sssom.tsv"),
]


class FakeSource(OntologySource):
    """Yields fixed concepts and relations; the subclass sets ``name`` and the lists."""

    name: ClassVar[str] = "fake"
    version: ClassVar[str] = "test"
    concept_list: ClassVar[list[Concept]] = []
    relation_list: ClassVar[list[Relation]] = []

    def concepts(self) -> Iterator[Concept]:
        for c in self.concept_list:
            yield Concept(
                c.id, c.system, c.title, list(c.synonyms), c.kind, c.billable, dict(c.attrs), c.source
            )

    def relations(self) -> Iterator[Relation]:
        for r in self.relation_list:
            yield Relation(r.src, r.dst, r.relation, r.source, dict(r.attrs))

    def info(self) -> SourceInfo:
        return SourceInfo(
            name=self.name,
            version=self.version,
            files=[SourceFile(path=f"/data/{self.name}.txt", sha256="0" * 64, size=123)],
            notes=[f"fake {self.name} source"],
        )


class FakeICD10CM(FakeSource):
    name = "icd10cm"
    version = "2026"
    concept_list = ICD10_CONCEPTS
    relation_list = ICD10_RELATIONS


class FakeICD9CM(FakeSource):
    name = "icd9cm"
    version = "v32"
    concept_list = ICD9_CONCEPTS
    relation_list = ICD9_RELATIONS


class FakeGEM(FakeSource):
    name = "gem"
    version = "2018"
    relation_list = GEM_RELATIONS

    def no_map_codes(self) -> list[str]:
        return ["ICD10CM:Z79.4", "ICD9CM:V99.99"]


class FakeDO(FakeSource):
    name = "doid"
    version = "2025-01-01"
    concept_list = DO_CONCEPTS
    relation_list = DO_RELATIONS


class FakeMondo(FakeSource):
    name = "mondo"
    version = "2025-02-01"
    concept_list = MONDO_CONCEPTS
    relation_list = MONDO_RELATIONS


def fake_sources() -> list[OntologySource]:
    """Fresh instances of every fake source, in build order."""
    return [FakeICD10CM(), FakeICD9CM(), FakeGEM(), FakeDO(), FakeMondo()]


@pytest.fixture
def sources() -> list[OntologySource]:
    """The fake sources."""
    return fake_sources()


@pytest.fixture
def kg() -> KnowledgeGraph:
    """A fresh KG built from the fake sources (tests may change it)."""
    return build_kg(fake_sources(), progress=False)
