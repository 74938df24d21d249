"""One ``standardize`` for codes at every boundary.

Every concept in kgcode is named by a *system-qualified id*: ``SYSTEM:CODE``.
The system is always explicit so that an ICD-9-CM code and an ICD-10-CM code that
look alike (``ICD9CM:250.00`` vs ``ICD10CM:E11.9``) are never confused.

Example:
    >>> standardize("e119")
    'ICD10CM:E11.9'
    >>> standardize(" E11.9 ", system="ICD10CM")
    'ICD10CM:E11.9'
    >>> standardize("25000", system="ICD9CM")
    'ICD9CM:250.00'
    >>> standardize("SNOMEDCT_US_2025_09_01:44054006")
    'SCTID:44054006'
"""

from __future__ import annotations

import re

__all__ = [
    "SYSTEMS",
    "InvalidCodeError",
    "canonical_system",
    "split_id",
    "standardize",
    "try_standardize",
    "verhoeff_valid",
]

#: The code systems kgcode knows, by canonical name.
SYSTEMS: tuple[str, ...] = ("ICD10CM", "ICD9CM", "SCTID", "DOID", "MONDO", "MESH", "OMIM")

# Spellings seen in the wild (DO, Mondo, UMLS, users) mapped to the canonical name.
_SYSTEM_ALIASES: dict[str, str] = {
    "ICD10CM": "ICD10CM",
    "ICD10": "ICD10CM",
    "ICD-10-CM": "ICD10CM",
    "ICD-10": "ICD10CM",
    "ICD9CM": "ICD9CM",
    "ICD9": "ICD9CM",
    "ICD-9-CM": "ICD9CM",
    "ICD-9": "ICD9CM",
    "SCTID": "SCTID",
    "SNOMEDCT": "SCTID",
    "SNOMEDCT_US": "SCTID",
    "SNOMED": "SCTID",
    "SNOMED-CT": "SCTID",
    "DOID": "DOID",
    "MONDO": "MONDO",
    "MESH": "MESH",
    "MSH": "MESH",
    "OMIM": "OMIM",
    "MIM": "OMIM",
}


class InvalidCodeError(ValueError):
    """A code that is malformed for its system (the message names code and system)."""


def canonical_system(name: str) -> str:
    """Return the canonical system name for an alias.

    ``SNOMEDCT_US_2025_09_01`` (DO's versioned prefix) is read as ``SCTID``.

    Args:
        name: a system name or prefix, any case.

    Returns:
        One of :data:`SYSTEMS`.

    Raises:
        InvalidCodeError: the name is not a known system.
    """
    key = name.strip().upper().replace(" ", "")
    if key in _SYSTEM_ALIASES:
        return _SYSTEM_ALIASES[key]
    if key.startswith("SNOMEDCT"):
        return "SCTID"
    raise InvalidCodeError(
        f"unknown code system {name!r}: expected one of {', '.join(SYSTEMS)}"
    )


# A letter, then a digit and a letter-or-digit (E11, C7A), or a letter and a digit (QA0, new in
# FY2026); up to four more characters after the dot.
_ICD10_CAT = r"[A-Z](?:[0-9][0-9A-Z]|[A-Z][0-9])"
_ICD10_CODE = re.compile(rf"^{_ICD10_CAT}([0-9A-Z]{{1,4}})?$")
_ICD10_BLOCK = re.compile(rf"^{_ICD10_CAT}-{_ICD10_CAT}$")
_ICD9_NUM = re.compile(r"^[0-9]{3}([0-9]{1,2})?$")
_ICD9_V = re.compile(r"^V[0-9]{2}([0-9]{1,2})?$")
_ICD9_E = re.compile(r"^E[0-9]{3}([0-9])?$")
_ICD9_RANGE = re.compile(r"^([0-9]{3}|V[0-9]{2}|E[0-9]{3})-([0-9]{3}|V[0-9]{2}|E[0-9]{3})$")


def _icd10(code: str) -> str:
    raw = code.upper().replace(" ", "")
    if _ICD10_BLOCK.match(raw):
        return raw
    if raw.isdigit() and 1 <= int(raw) <= 22:  # chapter numbers, as in the CDC tabular
        return str(int(raw))
    flat = raw.replace(".", "")
    if not _ICD10_CODE.match(flat):
        raise InvalidCodeError(
            f"malformed ICD-10-CM code {code!r}: expected a letter, two characters and up to "
            "four more after the dot (e.g. E11.9, S72.001A), a block (E08-E13) or a chapter (1-22)"
        )
    return flat if len(flat) == 3 else f"{flat[:3]}.{flat[3:]}"


def _icd9(code: str) -> str:
    raw = code.upper().replace(" ", "")
    if _ICD9_RANGE.match(raw):
        return raw
    flat = raw.replace(".", "")
    if _ICD9_E.match(flat):
        return flat if len(flat) == 4 else f"{flat[:4]}.{flat[4:]}"
    if _ICD9_NUM.match(flat) or _ICD9_V.match(flat):
        return flat if len(flat) == 3 else f"{flat[:3]}.{flat[3:]}"
    raise InvalidCodeError(
        f"malformed ICD-9-CM code {code!r}: expected three digits with up to two decimals "
        "(250.00), V01-V91 (V45.81) or E800-E999 (E880.9)"
    )


def verhoeff_valid(number: str) -> bool:
    """Whether a digit string passes the Verhoeff check (as SNOMED CT identifiers must).

    Args:
        number: the full identifier, check digit last.

    Returns:
        True when the check digit is right.
    """
    d = (
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
        (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
        (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
        (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
        (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
        (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
        (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
        (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
        (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
        (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
    )
    p = (
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
        (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
        (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
        (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
        (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
        (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
        (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
        (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
    )
    if not number.isdigit():
        return False
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = d[c][p[i % 8][int(ch)]]
    return c == 0


def _sctid(code: str, check: bool) -> str:
    raw = code.strip()
    if not (raw.isdigit() and 6 <= len(raw) <= 18):
        raise InvalidCodeError(
            f"malformed SNOMED CT identifier {code!r}: expected 6 to 18 digits (e.g. 44054006)"
        )
    if check and not verhoeff_valid(raw):
        raise InvalidCodeError(
            f"SNOMED CT identifier {code!r} has a bad check digit (Verhoeff): "
            "check for a typo in the identifier"
        )
    return raw


def _digits(code: str, system: str, width: int | None = None) -> str:
    raw = code.strip()
    if system == "MESH":
        raw = raw.upper()
        if re.match(r"^[CD][0-9]{6,9}$", raw):
            return raw
        raise InvalidCodeError(f"malformed MeSH id {code!r}: expected D or C and digits (D003920)")
    if not raw.isdigit():
        raise InvalidCodeError(f"malformed {system} id {code!r}: expected digits")
    return raw.zfill(width) if width else str(int(raw)) if system == "OMIM" else raw


def standardize(code: str, system: str | None = None, *, check_digit: bool = True) -> str:
    """Normalise a code to its system-qualified id.

    Dots, case and surrounding spaces do not matter: ``e11.9``, ``E119`` and ``" E11.9 "``
    all give ``ICD10CM:E11.9``. A prefix in the code (``ICD9CM:250.00``, ``SCTID:...``,
    ``SNOMEDCT_US_2025_09_01:...``, ``DOID_9352``) names the system; a bare code is read in
    ``system``, and ``ICD10CM`` when no system is given. A prefix that contradicts ``system``
    is an error.

    Args:
        code: the code as written by a user or a source file.
        system: the system to read a bare code in (any alias, e.g. ``ICD9``).
        check_digit: verify the Verhoeff check digit of SNOMED CT identifiers.

    Returns:
        ``SYSTEM:CODE`` with the code in its canonical spelling.

    Raises:
        InvalidCodeError: the code is empty, malformed, or of an unknown system.
    """
    if not isinstance(code, str) or not code.strip():
        raise InvalidCodeError(f"empty code {code!r}: expected a code such as E11.9")
    text = code.strip()
    prefix = None
    for sep in (":", "_"):
        if sep in text:
            head, _, tail = text.partition(sep)
            try:
                prefix = canonical_system(head)
            except InvalidCodeError:
                if sep == ":":
                    raise
                continue
            text = tail
            break
    sys_name = prefix or (canonical_system(system) if system else "ICD10CM")
    if prefix and system and canonical_system(system) != prefix:
        raise InvalidCodeError(
            f"code {code!r} is {prefix}, but {canonical_system(system)} was declared"
        )
    if sys_name == "ICD10CM":
        norm = _icd10(text)
    elif sys_name == "ICD9CM":
        norm = _icd9(text)
    elif sys_name == "SCTID":
        norm = _sctid(text, check_digit)
    elif sys_name == "MONDO":
        norm = _digits(text, sys_name, 7)
    elif sys_name == "DOID":
        norm = _digits(text, sys_name)
    else:
        norm = _digits(text, sys_name)
    return f"{sys_name}:{norm}"


def try_standardize(code: str, system: str | None = None, *, check_digit: bool = True) -> str | None:
    """Like :func:`standardize` but returns ``None`` for a malformed code."""
    try:
        return standardize(code, system, check_digit=check_digit)
    except InvalidCodeError:
        return None


def split_id(concept_id: str) -> tuple[str, str]:
    """Split ``SYSTEM:CODE`` into its parts.

    Args:
        concept_id: a system-qualified id.

    Returns:
        ``(system, code)``.

    Raises:
        InvalidCodeError: the id has no system prefix.
    """
    system, sep, code = concept_id.partition(":")
    if not sep or system not in SYSTEMS:
        raise InvalidCodeError(f"{concept_id!r} is not a system-qualified id such as ICD10CM:E11.9")
    return system, code
