"""ontologies.codes: one standardize for every boundary."""

from __future__ import annotations

import pytest

from ontologies.codes import (
    InvalidCodeError,
    canonical_system,
    split_id,
    standardize,
    try_standardize,
    verhoeff_valid,
)


@pytest.mark.parametrize("raw", ["e11.9", "E119", " E11.9 ", "ICD10CM:E11.9", "icd10:e119", "E 11.9"])
def test_icd10_spellings_mean_the_same_code(raw: str) -> None:
    assert standardize(raw) == "ICD10CM:E11.9"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("S72001A", "ICD10CM:S72.001A"),
        ("a15.8", "ICD10CM:A15.8"),
        ("E11", "ICD10CM:E11"),
        ("c7a.01", "ICD10CM:C7A.01"),
        ("qa0.1", "ICD10CM:QA0.1"),
        ("e08-e13", "ICD10CM:E08-E13"),
        ("4", "ICD10CM:4"),
        ("04", "ICD10CM:4"),
    ],
)
def test_icd10_forms(raw: str, expected: str) -> None:
    assert standardize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("25000", "ICD9CM:250.00"),
        ("250.00", "ICD9CM:250.00"),
        ("2500", "ICD9CM:250.0"),
        ("250", "ICD9CM:250"),
        ("v4581", "ICD9CM:V45.81"),
        ("E8809", "ICD9CM:E880.9"),
        ("E880", "ICD9CM:E880"),
        ("001-139", "ICD9CM:001-139"),
    ],
)
def test_icd9_forms(raw: str, expected: str) -> None:
    assert standardize(raw, "ICD9CM") == expected
    assert standardize(raw, "icd9") == expected


def test_icd9_and_icd10_lookalikes_are_never_confused() -> None:
    # E11.9 is diabetes in ICD-10-CM; read as ICD-9-CM the same characters are an E code
    # (E119, three digits after the E), spelled and named differently.
    assert standardize("E11.9") == "ICD10CM:E11.9"
    assert standardize("E11.9", "ICD9CM") == "ICD9CM:E119"
    with pytest.raises(InvalidCodeError, match="ICD-9-CM"):
        standardize("E11.999", "ICD9CM")
    # V01.0 exists in both systems with different meanings: the system stays explicit.
    assert standardize("V01.0", "ICD9CM") != standardize("V01.0", "ICD10CM")


def test_prefix_wins_and_conflicts_are_reported() -> None:
    assert standardize("ICD9CM:250.00") == "ICD9CM:250.00"
    assert standardize("ICD9CM:250.00", "ICD9") == "ICD9CM:250.00"
    with pytest.raises(InvalidCodeError, match="ICD9CM, but ICD10CM was declared"):
        standardize("ICD9CM:250.00", "ICD10CM")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SNOMEDCT_US_2025_09_01:44054006", "SCTID:44054006"),
        ("SCTID:44054006", "SCTID:44054006"),
        ("DOID_9352", "DOID:9352"),
        ("doid:9352", "DOID:9352"),
        ("MONDO:5148", "MONDO:0005148"),
        ("MONDO_0005148", "MONDO:0005148"),
        ("MESH:D003924", "MESH:D003924"),
        ("MIM:222100", "OMIM:222100"),
    ],
)
def test_other_systems(raw: str, expected: str) -> None:
    assert standardize(raw) == expected


def test_snomed_check_digit() -> None:
    assert verhoeff_valid("44054006")
    assert not verhoeff_valid("44054007")
    with pytest.raises(InvalidCodeError, match="check digit"):
        standardize("SCTID:44054007")
    assert standardize("SCTID:44054007", check_digit=False) == "SCTID:44054007"


@pytest.mark.parametrize("bad", ["", "   ", "E1", "123", "1E11.9", "EEE", "QAA", "E11.99999", "Q", "XYZ:1"])
def test_malformed_codes_raise_with_the_code_in_the_message(bad: str) -> None:
    with pytest.raises(InvalidCodeError) as info:
        standardize(bad)
    assert repr(bad.strip()) in str(info.value) or repr(bad) in str(info.value) or "XYZ" in str(info.value)
    assert try_standardize(bad) is None


def test_canonical_system_and_split() -> None:
    assert canonical_system("snomedct_us_2021_09_01") == "SCTID"
    assert canonical_system("ICD-10-CM") == "ICD10CM"
    with pytest.raises(InvalidCodeError, match="unknown code system"):
        canonical_system("LOINC")
    assert split_id("ICD10CM:E11.9") == ("ICD10CM", "E11.9")
    with pytest.raises(InvalidCodeError):
        split_id("E11.9")
