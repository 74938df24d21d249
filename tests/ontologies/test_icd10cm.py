"""ICD-10-CM loader: the hand-written mini tabular, error cases, and the bundled CDC file."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from ontologies import Concept, Relation, SourceFormatError, resolve_source, standardize
from ontologies.codes import try_standardize
from ontologies.icd10cm import ICD10CMSource, parse_note

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "icd10cm_mini.xml"


class Loaded:
    """A source with its concepts by id and its relations by (src, relation)."""

    def __init__(self, source: ICD10CMSource) -> None:
        self.source = source
        self.concepts: dict[str, Concept] = {c.id: c for c in source.concepts()}
        self.relations: list[Relation] = list(source.relations())
        self.out: dict[tuple[str, str], list[Relation]] = defaultdict(list)
        for r in self.relations:
            self.out[(r.src, r.relation)].append(r)

    def targets(self, src: str, relation: str) -> list[str]:
        return [r.dst for r in self.out[(f"ICD10CM:{src}", relation)]]

    def parent(self, code: str) -> str:
        (dst,) = self.targets(code, "is_a")
        return dst


@pytest.fixture(scope="module")
def mini() -> Loaded:
    return Loaded(ICD10CMSource(FIXTURE))


# -- ids, kinds, hierarchy -----------------------------------------------------------------


def test_ids_are_standardized(mini: Loaded) -> None:
    for cid, concept in mini.concepts.items():
        assert standardize(cid) == cid
        assert concept.system == "ICD10CM" and concept.source == "icd10cm"
    for r in mini.relations:
        assert standardize(r.src) == r.src and standardize(r.dst) == r.dst
    assert mini.concepts["ICD10CM:4"].kind == "chapter"
    assert mini.concepts["ICD10CM:4"].title.startswith("Endocrine, nutritional")
    assert mini.concepts["ICD10CM:E08-E13"].kind == "block"
    assert mini.concepts["ICD10CM:E11"].kind == "category"
    assert mini.concepts["ICD10CM:E11.649"].kind == "code"


def test_single_category_block_does_not_collide_with_its_category(mini: Loaded) -> None:
    assert mini.concepts["ICD10CM:T07-T07"].kind == "block"
    assert mini.concepts["ICD10CM:T07"].kind == "category"
    assert mini.parent("T07") == "ICD10CM:T07-T07"
    assert mini.parent("T07-T07") == "ICD10CM:19"


def test_stats(mini: Loaded) -> None:
    assert mini.source.stats == {
        "concepts": {"chapter": 3, "block": 6, "category": 10, "code": 29, "extension": 15},
        "relations": {
            "is_a": 60,
            "use_additional": 5,
            "excludes1": 20,
            "code_also": 3,
            "excludes2": 1,
        },
        "dropped_targets": 8,
        "skipped_codes": 0,
    }
    assert len(mini.concepts) == 63


def test_is_a_chain_and_every_concept_but_chapters_has_one_parent(mini: Loaded) -> None:
    chain, code = [], "E11.649"
    while (code_id := f"ICD10CM:{code}") and mini.out[(code_id, "is_a")]:
        code = mini.parent(code).split(":")[1]
        chain.append(code)
    assert chain == ["E11.64", "E11.6", "E11", "E08-E13", "4"]
    for cid, concept in mini.concepts.items():
        parents = [r.dst for r in mini.out[(cid, "is_a")]]
        assert len(parents) == (0 if concept.kind == "chapter" else 1), cid
        assert all(p in mini.concepts for p in parents)


def test_billable_is_leaf_without_seventh_character(mini: Loaded) -> None:
    c = mini.concepts
    assert c["ICD10CM:E11.9"].billable and c["ICD10CM:E11.610"].billable
    assert not c["ICD10CM:E11"].billable and not c["ICD10CM:E11.6"].billable
    assert not c["ICD10CM:4"].billable and not c["ICD10CM:E08-E13"].billable
    # leaves with a 7th-character rule are not billable; their extensions are
    assert not c["ICD10CM:S72.001"].billable and c["ICD10CM:S72.001A"].billable
    assert not c["ICD10CM:T07"].billable and c["ICD10CM:T07.XXXS"].billable


# -- 7th-character extensions ---------------------------------------------------------------


def test_extensions_from_the_category_definition(mini: Loaded) -> None:
    ext = mini.concepts["ICD10CM:S72.001A"]
    assert ext.kind == "extension" and ext.billable
    assert ext.title == (
        "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"
    )
    assert ext.attrs["seventh_character"] == "A"
    assert mini.parent("S72.001A") == "ICD10CM:S72.001"
    assert {f"ICD10CM:S72.002{ch}" for ch in "ADS"} <= set(mini.concepts)
    assert mini.concepts["ICD10CM:S72.002S"].title.endswith("left femur, sequela")
    assert mini.concepts["ICD10CM:S72"].attrs["seven_chr_def"] == {
        "A": "initial encounter for closed fracture",
        "D": "subsequent encounter for closed fracture with routine healing",
        "S": "sequela",
    }


def test_extensions_pad_with_x_and_nearer_definition_wins(mini: Loaded) -> None:
    # T07 is a leaf category: T07 -> T07XXX -> T07.XXXA
    assert [c for c in mini.concepts if c.startswith("ICD10CM:T07.")] == [
        "ICD10CM:T07.XXXA",
        "ICD10CM:T07.XXXD",
        "ICD10CM:T07.XXXS",
    ]
    assert mini.concepts["ICD10CM:T07.XXXA"].title == "Unspecified multiple injuries, initial encounter"
    # S72.9 has its own sevenChrDef (A, B): it overrides the category's (A, D, S)
    assert [c for c in mini.concepts if c.startswith("ICD10CM:S72.9")] == [
        "ICD10CM:S72.9",
        "ICD10CM:S72.9XXA",
        "ICD10CM:S72.9XXB",
    ]
    # a <note> after an extension stays with it
    assert mini.concepts["ICD10CM:S72.9XXB"].attrs["notes"] == {
        "sevenChrDef": ["initial encounter for open fracture NOS"]
    }
    assert mini.parent("S72.9XXA") == "ICD10CM:S72.9"
    # non-leaf codes get no extensions
    assert "ICD10CM:S72.00XA" not in mini.concepts and "ICD10CM:S72.0XXA" not in mini.concepts


def test_s06_death_codes_take_only_initial_encounter(mini: Loaded) -> None:
    assert {"ICD10CM:S06.1X1A", "ICD10CM:S06.1X1D", "ICD10CM:S06.1X1S"} <= set(mini.concepts)
    assert "ICD10CM:S06.1X7A" in mini.concepts
    assert "ICD10CM:S06.1X7D" not in mini.concepts and "ICD10CM:S06.1X7S" not in mini.concepts
    assert mini.concepts["ICD10CM:S06.1X"].attrs["placeholder"] is True


# -- synonyms and notes ----------------------------------------------------------------------


def test_inclusion_terms_are_synonyms(mini: Loaded) -> None:
    assert mini.concepts["ICD10CM:E10"].synonyms == [
        "brittle diabetes (mellitus)",
        "juvenile type diabetes (mellitus)",
        "ketosis-prone diabetes (mellitus)",
    ]
    assert mini.concepts["ICD10CM:S72.00"].synonyms == [
        "Fracture of hip NOS",
        "Fracture of neck of femur NOS",
    ]
    assert "inclusionTerm" not in mini.concepts["ICD10CM:E10"].attrs.get("notes", {})


def test_notes_are_kept_in_attrs(mini: Loaded) -> None:
    notes = mini.concepts["ICD10CM:E11"].attrs["notes"]
    assert notes["useAdditionalCode"][0] == "code to identify control using:"
    assert "gestational diabetes (O24.4-)" in notes["excludes1"]
    s06 = mini.concepts["ICD10CM:S06"].attrs["notes"]
    assert set(s06) == {"includes", "sevenChrNote", "notes"}
    assert s06["notes"][0].startswith("7th characters D and S do not apply")
    assert mini.concepts["ICD10CM:19"].attrs["notes"]["notes"][0].startswith("Use secondary code(s)")
    # a note naming no code that exists yields no relation but stays
    assert mini.concepts["ICD10CM:E16.0"].attrs["notes"]["codeFirst"] == [
        "poisoning due to drug or toxin, if applicable (T36-T50 with sixth character 1-4)"
    ]
    assert not mini.out[("ICD10CM:E16.0", "code_first")]
    assert mini.concepts["ICD10CM:E13"].attrs["notes"]["includes"] == [
        "postpancreatectomy diabetes mellitus",
        "postprocedural diabetes mellitus",
    ]


# -- relations from notes -------------------------------------------------------------------


def test_single_code_references(mini: Loaded) -> None:
    assert mini.targets("E10", "excludes1") == ["ICD10CM:E08", "ICD10CM:E09", "ICD10CM:E11"]
    assert mini.targets("E11", "use_additional") == ["ICD10CM:Z79.4", "ICD10CM:Z79.84"]
    assert mini.targets("Z79.4", "excludes2") == ["ICD10CM:Z79.84"]
    (rel,) = mini.out[("ICD10CM:E08", "use_additional")]
    assert rel.dst == "ICD10CM:Z79.4" and rel.source == "icd10cm"
    assert rel.attrs == {
        "text": "code to identify control using: insulin (Z79.4)",
        "unparsed": "code to identify control using: insulin",
    }


def test_range_expands_to_existing_codes_in_tabular_order(mini: Loaded) -> None:
    rels = mini.out[("ICD10CM:E16", "excludes1")]
    assert [r.dst for r in rels] == [f"ICD10CM:{c}" for c in ("E08", "E09", "E10", "E11", "E13")]
    expected = {"text": "diabetes mellitus (E08-E13)", "unparsed": "diabetes mellitus", "range": "E08-E13"}
    assert all(r.attrs == expected for r in rels)
    # a range of subcategories (E11.62, E11.63 do not exist)
    assert mini.targets("E11.69", "code_also") == ["ICD10CM:E11.61", "ICD10CM:E11.64"]
    # endpoints at different levels: from Z79.4 up to the end of Z79.84's subtree
    assert mini.targets("E16.2", "use_additional") == ["ICD10CM:Z79.4", "ICD10CM:Z79.84"]


def test_unparsed_rest_is_kept_on_the_relation(mini: Loaded) -> None:
    rels = mini.out[("ICD10CM:E16.2", "excludes1")]
    assert len(rels) == 5
    assert rels[0].attrs["unparsed"] == (
        "hypoglycemia in diabetes mellitus, see diabetes by type with hypoglycemia (with .64-)"
    )
    assert rels[0].attrs["range"] == "E08-E13"
    # a code that is not in the tabular stays in the unparsed rest
    (rel,) = mini.out[("ICD10CM:E11.64", "code_also")]
    assert rel.dst == "ICD10CM:E11.65"
    assert rel.attrs["unparsed"] == "if known: hypoglycemia level (E16.A-) or hyperglycemia"


def test_dropped_targets_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    source = ICD10CMSource(FIXTURE)
    with caplog.at_level(logging.INFO, logger="ontologies.icd10cm"):
        list(source.relations())
    assert source.stats["dropped_targets"] == 8
    (msg,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    for code in ("P35.0", "O24.4", "E16.A", "T36-T50", "P70-P74", "F11-F19", "T14.90", "Z51.81"):
        assert code in msg
    assert all(r.levelno == logging.INFO for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("diabetes mellitus due to underlying condition (E08.-)", ["E08"]),
        ("type 1 diabetes mellitus in remission (E10.A-)", ["E10.A"]),
        ("gestational diabetes (O24.-)", ["O24"]),
        ("diabetes mellitus (E08-E13)", ["E08-E13"]),
        ("poisoning (T36-T65)", ["T36-T65"]),
        ("fracture of neck of femur (S72.0-)", ["S72.0"]),
        ("type 2 diabetes mellitus without complications E11.9", ["E11.9"]),
        ("tuberculosis (A15-A19)", ["A15-A19"]),
        ("alcohol related disorders (F10.2-F10.9)", ["F10.2-F10.9"]),
        ("malignant carcinoid tumors (C7A.0-)", ["C7A.0"]),
        ("long term (current) use of insulin Z79.4", ["Z79.4"]),
        ("code to identify site of ulcer (L97.1-L97.9, L98.41-L98.49)", ["L97.1-L97.9", "L98.41-L98.49"]),
        ("localized abdominal pain (I70.2--I70.7-, P28.3- - P28.4-)", ["I70.2-I70.7", "P28.3-P28.4"]),
        ("vitamin B12 deficiency (E53.8), influenza A/H1N1 (J10.-), G6PD deficiency", ["E53.8", "J10"]),
        ("certain localized infections - see body system-related chapters", []),
    ],
)
def test_parse_note(text: str, refs: list[str]) -> None:
    found = parse_note(text)
    assert [r.text for r in found] == refs
    for ref in found:
        assert (
            text[ref.start : ref.end]
            .replace(".-", "")
            .replace("-", "")
            .replace(" ", "")
            .startswith(ref.first.replace(".", "")[:3])
        )


# -- errors ---------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "icd10cm_bad.xml"
    path.write_text(text, encoding="utf-8")
    return path


def test_truncated_xml_names_file_and_line(tmp_path: Path) -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines(keepends=True)
    path = _write(tmp_path, "".join(lines[: len(lines) // 2]))
    with pytest.raises(SourceFormatError) as err:
        list(ICD10CMSource(path).concepts())
    assert err.value.path == str(path)
    assert isinstance(err.value.line, int) and err.value.line >= len(lines) // 2
    assert str(err.value).startswith(f"{path}:{err.value.line}: ")


def test_malformed_xml_names_the_line(tmp_path: Path) -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    text = text.replace("<desc>Type 1 diabetes mellitus</desc>", "<desc>Type 1</dsc>")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "</dsc>" in ln)
    with pytest.raises(SourceFormatError) as err:
        list(ICD10CMSource(_write(tmp_path, text)).relations())
    assert err.value.line == line


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.xml"
    with pytest.raises(SourceFormatError, match="does not exist") as err:
        list(ICD10CMSource(path).concepts())
    assert err.value.line is None and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("old", "problem"),
    [
        ("<name>E09.9</name>", r"<diag> under ICD10CM:E09 has no <name>"),
        (
            "<desc>Drug or chemical induced diabetes mellitus without complications</desc>",
            r"<diag> E09.9 \(under ICD10CM:E09\) has no <desc>",
        ),
    ],
)
def test_diag_without_name_or_desc(tmp_path: Path, old: str, problem: str) -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    assert text.count(old) == 1
    bad = text.replace(old, "")
    lines = bad.splitlines()
    e09 = next(i for i, ln in enumerate(lines) if "<name>E09</name>" in ln)
    diag_line = next(i for i in range(e09 + 1, len(lines)) if lines[i].strip() == "<diag>") + 1
    path = _write(tmp_path, bad)
    with pytest.raises(SourceFormatError, match=problem) as err:
        list(ICD10CMSource(path).concepts())
    assert err.value.line == diag_line and err.value.path == str(path)


def test_not_a_tabular_file(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError, match="root element is <ClaML>"):
        list(ICD10CMSource(_write(tmp_path, "<ClaML><Class/></ClaML>")).concepts())


# -- source contract ------------------------------------------------------------------------


def test_registry_resolves_icd10cm() -> None:
    source = resolve_source("icd10cm", xml_path=FIXTURE)
    assert isinstance(source, ICD10CMSource) and source.name == "icd10cm"


def test_info(mini: Loaded) -> None:
    info = mini.source.info()
    assert info.name == "icd10cm" and info.version == "2026 (icd10cm_mini.xml)"
    (f,) = info.files
    assert f.sha256 == hashlib.sha256(FIXTURE.read_bytes()).hexdigest() and f.size == FIXTURE.stat().st_size


def test_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    parse = ET.parse

    def counting_parse(*args: object, **kwargs: object) -> ET.ElementTree:
        calls.append(args)
        return parse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ET, "parse", counting_parse)
    source = ICD10CMSource(FIXTURE)
    assert source.stats == {}
    first = list(source.concepts())
    assert list(source.concepts())[0] is first[0]
    list(source.relations())
    source.info()
    assert len(calls) == 1


def test_default_file_is_the_bundled_one_without_importing_the_package() -> None:
    code = (
        "import sys; from ontologies.icd10cm import ICD10CMSource; p = ICD10CMSource().path; "
        "print(p.name, p.is_file(), 'simple_icd_10_cm.simple_icd_10_cm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["icd10c-tabular-April-1-2026.xml", "True", "False"]


# -- the bundled CDC file -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Loaded:
    return Loaded(ICD10CMSource())


@pytest.fixture(scope="module")
def package_codes() -> list[str]:
    simple_icd_10_cm = pytest.importorskip("simple_icd_10_cm")
    return simple_icd_10_cm.get_all_codes(with_dots=True)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ids_equal_the_package_code_list(real: Loaded, package_codes: list[str]) -> None:
    rejected = [c for c in package_codes if try_standardize(c) is None]
    assert not rejected, f"standardize rejects {len(rejected)} tabular codes, e.g. {rejected[:3]}"
    expected = [standardize(c) for c in package_codes]
    # the package names a single-category block like its category (B20); kgcode says B20-B20
    ours = [re.sub(r"^ICD10CM:([A-Z0-9]{3})-\1$", r"ICD10CM:\1", cid) for cid in real.concepts]
    assert len(package_codes) == len(real.concepts) == 98505
    assert ours == expected  # same codes, same tabular order
    assert real.source.stats["skipped_codes"] == 0


@pytest.mark.realdata
@pytest.mark.slow
def test_real_billable_codes_are_the_package_leaves(real: Loaded, package_codes: list[str]) -> None:
    import simple_icd_10_cm

    leaves = {
        try_standardize(c)
        for c in set(package_codes)
        if "-" not in c and not c.isdigit() and simple_icd_10_cm.is_leaf(c)
    } - {None}
    billable = {cid for cid, c in real.concepts.items() if c.billable}
    assert billable == leaves
    assert 70_000 < len(billable) < 80_000


@pytest.mark.realdata
@pytest.mark.slow
def test_real_concepts(real: Loaded) -> None:
    c = real.concepts
    assert len(c["ICD10CM:A15.8"].synonyms) == 4
    assert real.parent("S72.001A") == "ICD10CM:S72.001"
    assert c["ICD10CM:S72.001A"].kind == "extension" and c["ICD10CM:S72.001A"].billable
    assert c["ICD10CM:S00.00XA"].title == "Unspecified superficial injury of scalp, initial encounter"
    assert real.parent("T36.0X1A") == "ICD10CM:T36.0X1"
    assert c["ICD10CM:1"].kind == "chapter" and c["ICD10CM:A00-A09"].kind == "block"
    assert c["ICD10CM:C7A-C7A"].kind == "block" and c["ICD10CM:C7A"].kind == "category"
    stats = real.source.stats
    assert stats["concepts"]["chapter"] == 22
    assert sum(stats["concepts"].values()) == len(c)
    assert stats["relations"]["is_a"] == len(c) - 22


@pytest.mark.realdata
@pytest.mark.slow
def test_real_relations(real: Loaded) -> None:
    e11_excludes1 = real.targets("E11", "excludes1")
    assert {"ICD10CM:E08", "ICD10CM:E09", "ICD10CM:E10", "ICD10CM:E13"} <= set(e11_excludes1)
    assert {"ICD10CM:Z79.4", "ICD10CM:Z79.84"} <= set(real.targets("E11", "use_additional"))
    assert real.out[("ICD10CM:E11.22", "use_additional")][0].attrs["range"] == "N18.1-N18.6"
    assert all(r.dst in real.concepts for r in real.relations)
    for relation in ("excludes1", "excludes2", "code_first", "use_additional", "code_also"):
        assert real.source.stats["relations"][relation] > 500
    assert real.source.stats["dropped_targets"] < 20


def test_note_codes_that_describe_the_condition_or_the_scope_are_not_targets() -> None:
    from ontologies.icd10cm import parse_note

    # "in A15" describes the excluded condition; the target is the bracketed J65.
    assert [r.text for r in parse_note("pneumoconiosis with tuberculosis, any type in A15 (J65)")] == ["J65"]
    # "for codes ..." names the codes the note applies to, not codes to add.
    assert parse_note("code, if applicable, for codes G31.0-G31.83, G31.85-G31.9, to identify:") == []
    # without brackets, bare codes are the targets
    assert [r.text for r in parse_note("see categories E08-E10, E11, E13 with ketoacidosis")] == [
        "E08-E10", "E11", "E13"]
