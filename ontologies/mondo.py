"""Mondo disease ontology mappings, from its SSSOM tables.

Reads every ``<data_dir>/mondo/*.sssom.tsv`` (``#`` YAML header, then ``subject_id``,
``subject_label``, ``predicate_id``, ``object_id``, [``object_label``], ``mapping_justification``):

* ``MONDO:`` concepts titled with their ``subject_label`` (from whichever file names them first);
* ``xref`` MONDO -> ICD-10-CM / ICD-9-CM / SNOMED CT / MeSH / OMIM, ``match`` from the predicate
  (``skos:exactMatch`` exact, ``oboInOwl:hasDbXref`` dbxref, ``skos:broadMatch`` broad,
  ``skos:narrowMatch`` narrow, ``skos:closeMatch`` close, ``skos:relatedMatch`` related);
* ``equivalent`` MONDO -> DOID for exact matches;
* UMLS CUIs, and object codes that are malformed for their system (counted in ``stats``), kept as
  raw strings in the Mondo concept's ``attrs["xrefs"]`` (not nodes);
* id-only SCTID / MeSH / OMIM concepts (empty title: never a SNOMED CT description).

The target system comes from the object's prefix, so the files may be named freely.

Example:
    >>> mondo = MondoSource("../shared/data")  # doctest: +SKIP
    >>> sorted({r.relation for r in mondo.relations()})  # doctest: +SKIP
    ['equivalent', 'xref']
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ontologies._tsv import SSSOMTable, read_sssom, read_sssom_metadata
from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize, verhoeff_valid
from ontologies.registry import register_source

__all__ = ["PREDICATE_MATCH", "MondoSource"]

logger = logging.getLogger(__name__)

#: SSSOM predicate -> the ``match`` attribute of an ``xref``.
PREDICATE_MATCH: dict[str, str] = {
    "skos:exactMatch": "exact",
    "oboInOwl:hasDbXref": "dbxref",
    "skos:broadMatch": "broad",
    "skos:narrowMatch": "narrow",
    "skos:closeMatch": "close",
    "skos:relatedMatch": "related",
}
_XREF_SYSTEMS = frozenset({"ICD10CM", "ICD9CM", "SCTID", "MESH", "OMIM"})
_ID_ONLY_SYSTEMS = frozenset({"SCTID", "MESH", "OMIM"})
_RAW_PREFIXES = frozenset({"UMLS"})
_RELEASE = re.compile(r"/releases/(\d{4}-\d{2}-\d{2})/")
_LOG_EXAMPLES = 5


@register_source
class MondoSource(OntologySource):
    """Mondo concepts with ``xref`` (to ICD/SNOMED/MeSH/OMIM) and ``equivalent`` (to DOID) relations.

    Relation attributes: ``match``, ``file`` (the SSSOM file name) and ``justification``
    (``mapping_justification``, e.g. ``semapv:ManualMappingCuration``).

    Args:
        data_dir: folder holding ``mondo/`` (e.g. ``../shared/data``).

    Attributes:
        stats: counts filled on the first read: rows per file, concepts, relations by type,
            invalid object codes by prefix, SCTIDs failing the Verhoeff check, skipped rows.

    Raises:
        FileNotFoundError: ``data_dir/mondo`` is missing or has no ``*.sssom.tsv``.
    """

    name: ClassVar[str] = "mondo"

    def __init__(self, data_dir: str | Path) -> None:
        self.folder = Path(data_dir) / "mondo"
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"Mondo folder {self.folder} does not exist: expected mondo_*.sssom.tsv mapping tables in it"
            )
        self.paths = sorted(self.folder.glob("*.sssom.tsv"))
        if not self.paths:
            raise FileNotFoundError(f"Mondo folder {self.folder} has no *.sssom.tsv mapping table")
        self.stats: dict[str, Any] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._titles: dict[str, str] | None = None
        self._xrefs: dict[str, list[str]] = {}
        self._id_only: dict[str, str] = {}
        self._relations: list[Relation] = []

    def concepts(self) -> Iterator[Concept]:
        """Yield Mondo concepts, then id-only SNOMED CT / MeSH / OMIM concepts."""
        titles = self._load()
        for cid, title in titles.items():
            xrefs = self._xrefs.get(cid)
            yield Concept(
                id=cid,
                system="MONDO",
                title=title,
                kind="concept",
                attrs={"xrefs": list(xrefs)} if xrefs else {},
                source=self.name,
            )
        for cid, system in self._id_only.items():
            yield Concept(id=cid, system=system, title="", kind="concept", source=self.name)

    def relations(self) -> Iterator[Relation]:
        """Yield ``xref`` and ``equivalent`` relations, file by file (sorted by name), in row order."""
        self._load()
        yield from self._relations

    def info(self) -> SourceInfo:
        """Mapping-set release, licenses and checksummed files (reads the headers only)."""
        releases: set[str] = set()
        licenses: set[str] = set()
        for path in self.paths:
            meta = self._metadata.get(path.name)
            if meta is None:
                meta = self._metadata[path.name] = read_sssom_metadata(path)
            found = _RELEASE.search(str(meta.get("mapping_set_version", "")))
            release = found.group(1) if found else str(meta.get("mapping_date", "") or "")
            if release:
                releases.add(release)
            if meta.get("license"):
                licenses.add(str(meta["license"]))
        version = f"Mondo mappings {', '.join(sorted(releases)) or 'unknown release'}"
        notes = [f"license: {lic}" for lic in sorted(licenses)]
        notes.append("Vasilevsky NA et al., Mondo; ontology CC BY 4.0")
        return SourceInfo(
            name=self.name, version=version, files=[file_sha256(p) for p in self.paths], notes=notes
        )

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> dict[str, str]:
        if self._titles is not None:
            return self._titles
        titles: dict[str, str] = {}
        self._xrefs, self._id_only, self._relations = {}, {}, []
        counts: dict[str, Any] = {
            "rows": {},
            "invalid": Counter(),
            "sctid_bad_check_digit": 0,
            "unknown_predicate": Counter(),
            "skipped_objects": Counter(),
        }
        # ids repeat across files: standardize each once
        subjects: dict[str, str] = {}
        objects: dict[str, str | InvalidCodeError] = {}
        for path in self.paths:
            table = read_sssom(path)
            self._metadata[path.name] = table.metadata
            counts["rows"][path.name] = len(table.rows)
            self._read_table(table, titles, counts, subjects, objects)
        for key, what in (
            ("invalid", "malformed object codes kept as raw xrefs"),
            ("unknown_predicate", "rows with an unknown predicate skipped"),
            ("skipped_objects", "rows mapping to a system that is not an xref target skipped"),
        ):
            if counts[key]:
                logger.warning("mondo: %d %s: %s", sum(counts[key].values()), what, dict(counts[key]))
            counts[key] = dict(counts[key])
        self.stats.update(counts)
        self.stats["concepts"] = len(titles) + len(self._id_only)
        self.stats["mondo_concepts"] = len(titles)
        self.stats["id_only_concepts"] = dict(Counter(self._id_only.values()))
        self.stats["relations"] = dict(Counter(r.relation for r in self._relations))
        self._titles = titles
        return titles

    def _read_table(
        self,
        table: SSSOMTable,
        titles: dict[str, str],
        counts: dict[str, Any],
        subjects: dict[str, str],
        objects: dict[str, str | InvalidCodeError],
    ) -> None:
        """Turn one table's rows into titles, relations and raw xrefs.

        Args:
            table: the SSSOM table.
            titles: Mondo id -> title, filled across tables.
            counts: the counters of :attr:`stats`, updated.
            subjects: raw subject id -> Mondo id, shared across tables.
            objects: raw object id -> standardized id (or why it is malformed), shared across tables.
        """
        path, name = table.path, table.path.name
        i_sub, i_pred, i_obj = (
            table.column("subject_id"),
            table.column("predicate_id"),
            table.column("object_id"),
        )
        cols = table.columns
        i_label = cols.index("subject_label") if "subject_label" in cols else None
        i_just = cols.index("mapping_justification") if "mapping_justification" in cols else None
        relations, id_only = self._relations, self._id_only
        for line_no, fields in table.rows:
            raw_sub = fields[i_sub].strip()
            sub = subjects.get(raw_sub)
            if sub is None:
                sub = subjects[raw_sub] = self._subject_id(raw_sub, path, line_no)
            if i_label is not None and (sub not in titles or not titles[sub]):
                titles[sub] = fields[i_label].strip()
            elif sub not in titles:
                titles[sub] = ""
            predicate = fields[i_pred].strip()
            match = PREDICATE_MATCH.get(predicate)
            if match is None:
                counts["unknown_predicate"][predicate] += 1
                continue
            raw_obj = fields[i_obj].strip()
            obj: str | InvalidCodeError | None = None
            if raw_obj.partition(":")[0].upper() not in _RAW_PREFIXES:
                obj = objects.get(raw_obj)
                if obj is None:
                    obj = objects[raw_obj] = _object_id(raw_obj)
                if isinstance(obj, InvalidCodeError):
                    self._count_invalid(counts, obj, raw_obj, sub, name, line_no)
                    obj = None
            if obj is None:  # UMLS CUIs and malformed codes stay on the concept as raw strings
                xrefs = self._xrefs.setdefault(sub, [])
                if raw_obj not in xrefs:
                    xrefs.append(raw_obj)
                continue
            system = obj[: obj.index(":")]
            attrs = {
                "match": match,
                "file": name,
                "justification": fields[i_just].strip() if i_just is not None else "",
            }
            if system == "DOID" and match == "exact":
                relations.append(Relation(sub, obj, "equivalent", self.name, attrs))
            elif system in _XREF_SYSTEMS:
                relations.append(Relation(sub, obj, "xref", self.name, attrs))
                if system in _ID_ONLY_SYSTEMS and obj not in id_only:
                    id_only[obj] = system
            else:
                counts["skipped_objects"][f"{system} ({match})"] += 1

    @staticmethod
    def _count_invalid(
        counts: dict[str, Any], exc: InvalidCodeError, raw: str, sub: str, file: str, line_no: int
    ) -> None:
        if isinstance(exc, _BadCheckDigit):
            counts["sctid_bad_check_digit"] += 1
        counts["invalid"][raw.partition(":")[0]] += 1
        if sum(counts["invalid"].values()) <= _LOG_EXAMPLES:
            logger.info("mondo: %s:%d: object %r of %s kept as a raw xref: %s", file, line_no, raw, sub, exc)

    @staticmethod
    def _subject_id(raw: str, path: Path, line_no: int) -> str:
        try:
            sub = standardize(raw) if ":" in raw else ""
        except InvalidCodeError as exc:
            raise SourceFormatError(path, line_no, f"subject_id: {exc}") from exc
        if not sub.startswith("MONDO:"):
            raise SourceFormatError(path, line_no, f"subject_id {raw!r} is not a MONDO id (MONDO:0005148)")
        return sub


class _BadCheckDigit(InvalidCodeError):
    """A well-formed SNOMED CT identifier whose Verhoeff check digit is wrong."""


def _object_id(raw: str) -> str | InvalidCodeError:
    """Standardize an object id, checking SNOMED CT identifiers' Verhoeff digit.

    Args:
        raw: the ``object_id`` as written (``SCTID:44054006``, ``mesh:D003924``).

    Returns:
        The system-qualified id, or the error saying why it is malformed.
    """
    if ":" not in raw:
        return InvalidCodeError(f"object_id {raw!r} has no prefix (expected e.g. ICD10CM:E11.9)")
    try:
        cid = standardize(raw, check_digit=False)
    except InvalidCodeError as exc:
        return exc
    system, _, code = cid.partition(":")
    if system == "SCTID" and not verhoeff_valid(code):
        return _BadCheckDigit(f"SNOMED CT identifier {code!r} fails the Verhoeff check")
    return cid
