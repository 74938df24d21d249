"""Mapping codes between ICD-10-CM, ICD-9-CM and SNOMED CT: each kind of link, batches, writers."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kg import KnowledgeGraph, UnknownCodeError, build_kg
from kgcode.mapping import (
    BATCH_COLUMNS,
    Mapper,
    MappingError,
    MappingTarget,
    SnomedPredictor,
    explain,
    map_batch,
    map_code,
    write_csv,
    write_jsonl,
)
from ontologies import Concept, InvalidCodeError, OntologySource, Relation, SourceInfo
from ontologies.doid import DOSource
from ontologies.gems import GEMSource
from ontologies.icd9cm import ICD9CMSource
from ontologies.icd10cm import ICD10CMSource
from ontologies.mondo import MondoSource
from ontologies.snomed_rf2 import US_ICD10CM_MAP_REFSET, SnomedRF2Source


class Extras(OntologySource):
    """What the fixture files lack: a reverse-only and a combination GEM edge, a GEM no-map code,
    one more SNOMED CT id (for the predictor), and a GEM edge E11 -> ICD9CM:250 (made up)."""

    name: ClassVar[str] = "extras"

    def concepts(self) -> Iterator[Concept]:
        yield Concept("SCTID:46635009", "SCTID")

    def relations(self) -> Iterator[Relation]:
        gem = "gem_equivalent"
        yield Relation(
            "ICD10CM:E13.9", "ICD9CM:250.00", gem, attrs={"direction": "icd10_to_icd9", "approximate": True}
        )
        yield Relation(
            "ICD9CM:250.01",
            "ICD10CM:E10.9",
            gem,
            attrs={
                "direction": "icd9_to_icd10",
                "approximate": True,
                "combination": True,
                "scenario": 1,
                "choice_list": 1,
            },
        )
        yield Relation("ICD10CM:E11", "ICD9CM:250", gem, attrs={"direction": "icd10_to_icd9"})

    def no_map_codes(self) -> list[str]:
        return ["ICD10CM:Z79.4"]

    def info(self) -> SourceInfo:
        return SourceInfo(name=self.name, version="test")


def fixture_sources(fixtures: Path) -> list[OntologySource]:
    return [
        ICD10CMSource(fixtures / "icd10cm_mini.xml"),
        ICD9CMSource(fixtures / "icd9cm_desc_long_dx.txt"),
        GEMSource(fixtures / "gem_icd9_to_icd10.csv", fixtures / "gem_icd10_to_icd9.csv"),
        DOSource(fixtures),
        MondoSource(fixtures),
        Extras(),
    ]


@pytest.fixture(scope="module")
def kg(fixtures_dir: Path) -> KnowledgeGraph:
    return build_kg(fixture_sources(fixtures_dir), progress=False)


@pytest.fixture(scope="module")
def rf2_kg(fixtures_dir: Path) -> KnowledgeGraph:
    """ICD-10-CM plus a (made-up) licensed SNOMED CT RF2 snapshot: the map refset gives exact links."""
    return build_kg(
        [ICD10CMSource(fixtures_dir / "icd10cm_mini.xml"), SnomedRF2Source(fixtures_dir / "snomed_rf2")],
        progress=False,
    )


def by_target(targets: list[MappingTarget]) -> dict[str, MappingTarget]:
    return {t.target: t for t in targets}


# ----------------------------------------------------------------------------- exact


def test_exact_via_do_and_mondo(kg: KnowledgeGraph) -> None:
    targets = map_code(kg, "E11")
    best = targets[0]
    assert (best.target, best.kind, best.score, best.target_title) == ("SCTID:44054006", "exact", 1.0, "")
    vias = {link["id"]: link for link in best.provenance["via"]}
    assert set(vias) == {"DOID:9352", "MONDO:0005148"}
    assert vias["DOID:9352"]["label"] == "type 2 diabetes mellitus"
    assert vias["DOID:9352"]["icd_match"] == "dbxref" and vias["DOID:9352"]["source"] == "doid"
    assert best.label == "type 2 diabetes mellitus"
    assert explain(best).startswith("via DOID:9352 type 2 diabetes mellitus (dbxref)")
    json.dumps([t.to_dict() for t in targets])  # JSON-ready


def test_exact_from_snomed_to_icd10_and_icd9(kg: KnowledgeGraph) -> None:
    to10 = by_target(map_code(kg, "SCTID:44054006", to="ICD10CM"))
    assert to10["ICD10CM:E11"].kind == "exact"
    assert to10["ICD10CM:E11"].target_title == "Type 2 diabetes mellitus"
    to9 = by_target(map_code(kg, "44054006", from_system="SNOMEDCT", to="ICD9CM"))
    assert to9["ICD9CM:250.00"].kind == "exact"


# ----------------------------------------------------------------------------- inherited


def test_inherited_broader_one_level_up(kg: KnowledgeGraph) -> None:
    targets = by_target(map_code(kg, "e119"))
    t2 = targets["SCTID:44054006"]
    assert t2.kind == "inherited" and t2.score == pytest.approx(0.9)
    p = t2.provenance
    assert (p["from"], p["hops"], p["relation"]) == ("ICD10CM:E11", 1, "broader")
    assert {link["id"] for link in p["via"]} == {"DOID:9352", "MONDO:0005148"}
    assert "inherited from ICD10CM:E11" in explain(t2) and "1 level up, SNOMED concept broader" in explain(t2)
    dm = targets["SCTID:73211009"]  # diabetes mellitus, from the block E08-E13
    assert dm.provenance["hops"] == 2 and dm.score == pytest.approx(0.81)


def test_inherited_narrower_from_descendants(kg: KnowledgeGraph) -> None:
    targets = by_target(map_code(kg, "4"))  # the chapter: its descendants carry the links
    assert targets["SCTID:73211009"].provenance["relation"] == "narrower"
    assert targets["SCTID:73211009"].score == pytest.approx(0.63)
    assert targets["SCTID:44054006"].provenance["hops"] == 2
    assert "down" in explain(targets["SCTID:44054006"])


def test_icd9_inherited_in_its_own_hierarchy(kg: KnowledgeGraph) -> None:
    t = by_target(map_code(kg, "ICD9CM:250.0"))["SCTID:44054006"]
    assert (t.kind, t.provenance["from"], t.provenance["relation"]) == (
        "inherited",
        "ICD9CM:250.00",
        "narrower",
    )


def test_best_kind_wins_and_each_target_once(kg: KnowledgeGraph) -> None:
    targets = map_code(kg, "E11", top_k=50)
    ids = [t.target for t in targets]
    assert len(ids) == len(set(ids))
    assert by_target(targets)["SCTID:44054006"].kind == "exact"
    scores = [t.score for t in targets]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_changing_a_result_does_not_change_the_next(kg: KnowledgeGraph) -> None:
    mapper = Mapper(kg)
    first = mapper.map("E11.9")[0]
    first.provenance["via"].clear()
    assert mapper.map("E11.9")[0].provenance["via"]


def test_top_k(kg: KnowledgeGraph) -> None:
    assert len(map_code(kg, "4", top_k=1)) == 1


# ----------------------------------------------------------------------------- gem


def test_gem_forward_reverse_and_flags(kg: KnowledgeGraph) -> None:
    targets = by_target(map_code(kg, "ICD9CM:250.00", to="ICD10CM"))
    forward = targets["ICD10CM:E11.9"]
    assert forward.kind == "gem" and forward.score == pytest.approx(0.9)  # approximate
    assert forward.provenance["direction"] == "icd9_to_icd10" and forward.provenance["reverse"] is False
    assert forward.provenance["approximate"] is True and forward.provenance["flags"] == "10000"
    assert forward.target_title.startswith("Type 2 diabetes mellitus")
    reverse = targets["ICD10CM:E13.9"]  # only in the ICD-10 -> ICD-9 file
    assert reverse.provenance["reverse"] is True and reverse.provenance["direction"] == "icd10_to_icd9"
    assert reverse.score == pytest.approx(0.9 * 0.7)
    assert "read backwards" in explain(reverse)
    combo = by_target(map_code(kg, "ICD9CM:250.01", to="ICD10CM"))["ICD10CM:E10.9"]
    assert combo.score == pytest.approx(0.9 * 0.8)
    assert "combination" in explain(combo) and "scenario 1" in explain(combo)


def test_gem_icd10_to_icd9_prefers_the_asked_file(kg: KnowledgeGraph) -> None:
    t = by_target(map_code(kg, "E11.9", to="ICD9CM"))["ICD9CM:250.00"]
    assert t.provenance["direction"] == "icd10_to_icd9" and t.provenance["reverse"] is False


def test_icd9_to_snomed_through_gem(kg: KnowledgeGraph) -> None:
    targets = by_target(map_code(kg, "ICD9CM:250.00"))
    assert targets["SCTID:44054006"].kind == "exact"  # DO names the ICD-9 code itself
    chained = targets["SCTID:73211009"]
    assert chained.kind == "gem"
    assert chained.provenance["gem"]["to"] == "ICD10CM:E11.9"
    assert chained.provenance["then"]["kind"] == "inherited"
    assert chained.score == pytest.approx(0.9 * 0.81)
    assert explain(chained).startswith("GEM to ICD10CM:E11.9")


def test_snomed_to_icd9_through_icd10_and_gem(kg: KnowledgeGraph) -> None:
    t = by_target(map_code(kg, "SCTID:44054006", to="ICD9CM"))["ICD9CM:250"]
    assert t.kind == "gem" and t.provenance["first"]["to"] == "ICD10CM:E11"
    assert "then GEM" in explain(t)


def test_no_map_note(kg: KnowledgeGraph) -> None:
    mapper = Mapper(kg)
    assert mapper.map("Z79.4", to="ICD9CM") == []
    assert "no equivalent" in mapper.no_target_note("ICD10CM:Z79.4", "ICD9CM")
    assert mapper.no_target_note("ICD10CM:Z79.4", "SNOMEDCT") == "no SNOMED CT link found"


# ----------------------------------------------------------------------------- predicted


class FakePredictor:
    name = "fake-model"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def predict(self, code: str, top_k: int) -> list[Any]:
        self.calls.append((code, top_k))
        if code == "ICD10CM:Z79.4":
            raise KeyError(code)
        return [
            ("SCTID:46635009", 0.7, {"via": "DOID:9744"}),
            {"sctid": "73211009", "probability": 1.7},  # clipped to 1.0, but inherited wins
            ("not-an-id", 0.9),  # ignored
            ("SCTID:38341003", 0.2),
            ("SCTID:195967001", 0.5),  # not a node of the KG: dropped
        ]


def test_predicted_targets(kg: KnowledgeGraph) -> None:
    predictor = FakePredictor()
    assert isinstance(predictor, SnomedPredictor)
    targets = by_target(map_code(kg, "E11.9", predictor=predictor, top_k=5))
    assert predictor.calls == [("ICD10CM:E11.9", 5)]
    p = targets["SCTID:46635009"]
    assert (p.kind, p.score) == ("predicted", 0.7)
    assert p.provenance == {"model": "fake-model", "probability": 0.7, "via": "DOID:9744"}
    assert explain(p) == "predicted by fake-model (p=0.70) via DOID:9744"
    assert targets["SCTID:73211009"].kind == "inherited"
    assert "SCTID:195967001" not in targets
    assert map_code(kg, "Z79.4", predictor=predictor) == []  # the model does not know the code
    assert map_code(kg, "ICD9CM:250.00", predictor=FakePredictor())[0].kind == "exact"  # ICD-10-CM only


class BatchPredictor:
    """Answers like kgcode.snomed_predictor.Predictor: dicts, a calibrated threshold, predict_many."""

    threshold = 0.5

    def __init__(self) -> None:
        self.many: list[list[str]] = []

    def _results(self, code: str) -> list[dict[str, Any]]:
        return [
            {"target": "SCTID:46635009", "score": 0.8, "via": "DOID:9744", "via_label": "type 1 diabetes"}
        ]

    def predict(self, code: str, top_k: int = 5) -> list[dict[str, Any]]:
        raise AssertionError("a batch asks predict_many")

    def predict_many(self, codes: list[str], top_k: int = 5) -> dict[str, list[dict[str, Any]]]:
        self.many.append(list(codes))
        return {code: self._results(code) for code in codes}


def test_batch_asks_the_predictor_once_per_chunk(kg: KnowledgeGraph) -> None:
    predictor = BatchPredictor()
    rows = list(map_batch(kg, ["Z79.4", "xx", "ICD9CM:250.00", "Z79.4"], predictor=predictor, progress=False))
    assert predictor.many == [["ICD10CM:Z79.4"]]
    assert rows[0].kind == rows[3].kind == "predicted"
    assert rows[0].provenance == {
        "model": "the graph model",
        "probability": 0.8,
        "threshold": 0.5,
        "likely": True,
        "via": "DOID:9744",
        "via_label": "type 1 diabetes",
    }
    target = MappingTarget(rows[0].target, "", "predicted", 0.8, rows[0].provenance)
    assert target.label == "type 1 diabetes"
    assert explain(target) == (
        "predicted by the graph model (p=0.80, above the calibrated threshold 0.50) "
        "via DOID:9744 type 1 diabetes"
    )


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("code", "kwargs", "error", "text"),
    [
        ("xx", {}, InvalidCodeError, "malformed ICD-10-CM code 'xx'"),
        ("E11.99", {}, UnknownCodeError, "nearest valid codes"),
        ("ICD9CM:250.00", {"from_system": "ICD10CM"}, InvalidCodeError, "ICD10CM was declared"),
        ("SCTID:44054007", {"to": "ICD10CM"}, InvalidCodeError, "bad check digit"),
        ("44054006", {}, InvalidCodeError, "SCTID:44054006"),
        ("E11", {"to": "ICD10CM"}, MappingError, "already ICD-10-CM"),
        ("DOID:9352", {}, MappingError, "cannot map DOID:9352"),
        ("E11", {"to": "MESH"}, MappingError, "cannot map to 'MESH'"),
    ],
)
def test_bad_codes(kg: KnowledgeGraph, code: str, kwargs: dict[str, str], error: type, text: str) -> None:
    with pytest.raises(error, match=text.replace(".", r"\.")):
        map_code(kg, code, **kwargs)


# ----------------------------------------------------------------------------- licensed SNOMED CT


def test_map_refset_gives_exact_links(rf2_kg: KnowledgeGraph) -> None:
    targets = by_target(map_code(rf2_kg, "E11.9"))
    t = targets["SCTID:9000004006"]
    assert (t.kind, t.score, t.target_title) == ("exact", 1.0, "")
    link = t.provenance["via"][0]
    assert link["type"] == "map_refset" and link["refset"] == US_ICD10CM_MAP_REFSET
    assert link["label"] == f"SNOMED CT ICD-10 map refset {US_ICD10CM_MAP_REFSET}"
    assert (link["map_group"], link["map_priority"], link["map_rule"]) == (1, 1, "TRUE")
    assert "SNOMED CT ICD-10 map refset 6011000124106 (group 1, priority 1, TRUE)" in explain(t)
    assert targets["SCTID:9000008009"].provenance["via"][0]["map_rule"] == "OTHERWISE TRUE"
    # SNOMED CT nodes stay id-only in the KG, although the RF2 source reads titles
    assert rf2_kg.graph.nodes["SCTID:9000004006"]["title"] == ""


def test_map_refset_from_snomed_in_map_order(rf2_kg: KnowledgeGraph) -> None:
    targets = map_code(rf2_kg, "SCTID:9000008009", to="ICD10CM")
    assert [t.target for t in targets] == ["ICD10CM:E10.9", "ICD10CM:E11.9", "ICD10CM:Z79.4"]
    assert all(t.kind == "exact" for t in targets)


def test_inherited_through_the_snomed_hierarchy(rf2_kg: KnowledgeGraph) -> None:
    t = by_target(map_code(rf2_kg, "SCTID:9000006008", to="ICD10CM"))["ICD10CM:E11.9"]
    assert (t.kind, t.provenance["from"], t.provenance["hops"]) == ("inherited", "SCTID:9000004006", 1)
    assert "1 level up in SNOMED CT, ICD code broader" in explain(t)
    own = by_target(map_code(rf2_kg, "SCTID:9000005007", to="ICD10CM"))
    assert own["ICD10CM:E11.65"].kind == "exact" and own["ICD10CM:E11.9"].kind == "inherited"


# ----------------------------------------------------------------------------- batches


def test_batch_rows_errors_and_writers(kg: KnowledgeGraph, tmp_path: Path) -> None:
    lines = ["E11", "xx", "", "# a comment", "ICD9CM:250.00", "SCTID:44054007", "Z79.4"]
    rows = list(map_batch(kg, lines, to="SNOMEDCT", progress=False))
    assert [r.line for r in rows] == [1, 2, 5, 6, 7]
    first, bad, icd9, bad_sct, none = rows
    assert (first.source, first.target, first.kind, first.score) == (
        "ICD10CM:E11",
        "SCTID:44054006",
        "exact",
        1.0,
    )
    assert first.n_targets == 2 and first.provenance["via"]
    assert bad.error.startswith("malformed ICD-10-CM code 'xx'") and not bad.source
    assert icd9.kind == "exact"
    assert "check digit" in bad_sct.error
    assert none.note == "no SNOMED CT link found" and not none.error and not none.mapped

    out = tmp_path / "sub" / "map.csv"
    summary = write_csv(iter(rows), out)
    assert (summary.rows, summary.mapped, summary.errors, summary.no_target) == (5, 2, 2, 1)
    assert summary.by_kind == {"exact": 2}
    with out.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == BATCH_COLUMNS
    assert json.loads(table[0]["provenance"])["via"][0]["id"] == "DOID:9352"
    assert table[1]["error"] and table[0]["score"] == "1.0000"
    assert [p.name for p in out.parent.iterdir()] == ["map.csv"]  # no temp file left

    jsonl = tmp_path / "map.jsonl"
    write_jsonl(iter(rows), jsonl)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 5 and records[0]["target"] == "SCTID:44054006" and records[1]["score"] is None


def test_batch_with_declared_system_and_default_targets(kg: KnowledgeGraph) -> None:
    lines = ["250.00", "S72.001A", "ICD10CM:E11"]
    rows = list(map_batch(kg, lines, from_system="ICD9CM", to=None, progress=False))
    assert rows[0].target == "ICD10CM:E11.9" and rows[0].kind == "gem"  # ICD-9-CM -> ICD-10-CM by default
    assert rows[1].error.startswith("malformed ICD-9-CM code 'S72.001A'")
    assert rows[2].error == "code 'ICD10CM:E11' is ICD10CM, but ICD9CM was declared"


def test_atomic_write_keeps_the_old_file_on_failure(kg: KnowledgeGraph, tmp_path: Path) -> None:
    out = tmp_path / "map.csv"
    out.write_text("old\n")

    def broken() -> Iterator[Any]:
        yield from map_batch(kg, ["E11"], progress=False)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(broken(), out)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["map.csv"]


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_real_e11_exact_via_do_and_mondo(real_kg: KnowledgeGraph) -> None:
    t = by_target(map_code(real_kg, "E11"))["SCTID:44054006"]
    assert t.kind == "exact" and t.score == 1.0
    assert {"DOID:9352", "MONDO:0005148"} <= {link["id"] for link in t.provenance["via"]}


@pytest.mark.realdata
@pytest.mark.slow
def test_real_e119_inherited_and_back(real_kg: KnowledgeGraph) -> None:
    best = map_code(real_kg, "E11.9")[0]
    assert (best.target, best.kind) == ("SCTID:44054006", "inherited")
    assert (best.provenance["from"], best.provenance["hops"], best.provenance["relation"]) == (
        "ICD10CM:E11",
        1,
        "broader",
    )
    back = by_target(map_code(real_kg, "SCTID:44054006", to="ICD10CM"))
    assert back["ICD10CM:E11"].kind == "exact"


@pytest.mark.realdata
@pytest.mark.slow
def test_real_icd9_gem(real_kg: KnowledgeGraph) -> None:
    t = map_code(real_kg, "ICD9CM:250.00", to="ICD10CM")[0]
    assert (t.target, t.kind) == ("ICD10CM:E11.9", "gem")
    assert t.provenance["direction"] == "icd9_to_icd10"


@pytest.mark.realdata
@pytest.mark.slow
def test_real_batch_of_every_icd10cm_code_is_fast(real_kg: KnowledgeGraph, tmp_path: Path) -> None:
    codes = [n for n, d in real_kg.graph.nodes(data=True) if d["system"] == "ICD10CM"]
    assert len(codes) > 90_000
    start = time.perf_counter()
    summary = write_csv(map_batch(real_kg, codes, progress=False), tmp_path / "all.csv")
    seconds = time.perf_counter() - start
    assert summary.rows == len(codes) and summary.errors == 0
    assert summary.by_kind["exact"] > 2_500 and summary.by_kind["inherited"] > 10_000
    assert seconds < 60, f"mapping {len(codes):,} codes took {seconds:.1f} s"
