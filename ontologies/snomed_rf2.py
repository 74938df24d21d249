"""A user's own SNOMED CT release (RF2 *Snapshot*) as an ontology source.

SNOMED CT needs a licence (UMLS in the US), so kgcode never ships it: this loader reads the copy
a licensed user downloaded, in the folder layout SNOMED International and the NLM distribute::

    <release>/Snapshot/Terminology/sct2_Concept_Snapshot_<edition>_<date>.txt
    <release>/Snapshot/Terminology/sct2_Description_Snapshot-en_<edition>_<date>.txt
    <release>/Snapshot/Terminology/sct2_Relationship_Snapshot_<edition>_<date>.txt
    <release>/Snapshot/Refset/Language/der2_cRefset_LanguageSnapshot-en_<edition>_<date>.txt
    <release>/Snapshot/Refset/Map/der2_iisssccRefset_ExtendedMapSnapshot_<edition>_<date>.txt

Files are UTF-8, tab-separated, one header line, CRLF or LF line ends, no quoting. What is read:

* **concepts**: every *active* concept as ``SCTID:<id>``; the title is the preferred synonym of
  the language refset (US English by default) when a language refset file is there, else the
  fully specified name. (:class:`kg.graph.KnowledgeGraph` keeps SNOMED CT nodes id-only and drops
  these titles; the titles are there for callers that use the source directly.)
* **relations**: ``is_a`` (child -> parent) for each active relationship of type
  ``116680003 |Is a|`` in the (inferred) relationship file; and ``xref`` SCTID -> ICD-10-CM code
  for each active row of the ICD-10-CM extended map refset (``6011000124106``, the US map) with
  a target, attrs ``match="map_refset"``, ``refset``, ``map_group``, ``map_priority``,
  ``map_rule``, ``map_advice`` of the row with the lowest (group, priority) for that pair, and
  ``map_rules`` (every rule, in map order) when a pair comes from several rows.

Active rows only. A Snapshot holds one row per component id, its latest version; when several
files of one kind are read (e.g. an International and an extension snapshot side by side) the
row with the latest ``effectiveTime`` wins. A malformed row (wrong number of fields, a bad
``active`` flag or ``effectiveTime``, a concept id that fails its Verhoeff check) is a
:class:`~ontologies.base.SourceFormatError` naming file and line; a map target that is not an
ICD-10-CM code is skipped and counted (``stats["malformed_targets"]``).

Example:
    >>> src = SnomedRF2Source("tests/fixtures/snomed_rf2")  # doctest: +SKIP
    >>> rel = next(r for r in src.relations() if r.relation == "xref")  # doctest: +SKIP
    >>> rel.attrs["match"], rel.attrs["refset"]  # doctest: +SKIP
    ('map_refset', '6011000124106')
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize
from ontologies.registry import register_source

__all__ = [
    "FSN_TYPE",
    "IS_A_TYPE",
    "PREFERRED",
    "SYNONYM_TYPE",
    "US_ENGLISH_REFSET",
    "US_ICD10CM_MAP_REFSET",
    "SnomedRF2Source",
]

logger = logging.getLogger(__name__)

#: ``116680003 |Is a|``: the relationship type of the hierarchy.
IS_A_TYPE = "116680003"
#: Description type of the fully specified name.
FSN_TYPE = "900000000000003001"
#: Description type of a synonym.
SYNONYM_TYPE = "900000000000013009"
#: Acceptability "preferred" in a language refset.
PREFERRED = "900000000000548007"
#: The US English language refset.
US_ENGLISH_REFSET = "900000000000509007"
#: The SNOMED CT to ICD-10-CM extended map refset of the US edition.
US_ICD10CM_MAP_REFSET = "6011000124106"

_HEADERS: dict[str, tuple[str, ...]] = {
    "concept": ("id", "effectiveTime", "active", "moduleId", "definitionStatusId"),
    "description": (
        "id", "effectiveTime", "active", "moduleId", "conceptId", "languageCode", "typeId", "term",
        "caseSignificanceId",
    ),
    "relationship": (
        "id", "effectiveTime", "active", "moduleId", "sourceId", "destinationId", "relationshipGroup",
        "typeId", "characteristicTypeId", "modifierId",
    ),
    "language": ("id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId",
                 "acceptabilityId"),
    "map": (
        "id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId", "mapGroup",
        "mapPriority", "mapRule", "mapAdvice", "mapTarget", "correlationId", "mapCategoryId",
    ),
}  # fmt: skip

#: File name patterns (searched below the snapshot folder).
_PATTERNS: dict[str, str] = {
    "concept": "sct2_Concept_Snapshot*.txt",
    "description": "sct2_Description_Snapshot*.txt",
    "relationship": "sct2_Relationship_Snapshot*.txt",
    "language": "der2_cRefset_LanguageSnapshot*.txt",
    "map": "der2_iisssccRefset_ExtendedMapSnapshot*.txt",
}
_RELEASE = re.compile(r"_([A-Za-z0-9]+)_(\d{8})\.txt$")
_DATE = re.compile(r"^\d{8}$")

Row = tuple[Path, int, list[str]]


@register_source
class SnomedRF2Source(OntologySource):
    """SNOMED CT concepts, is-a hierarchy and ICD-10-CM map rows from an RF2 snapshot.

    Args:
        snapshot_dir: the ``Snapshot`` folder of a release, or the release folder above it.
        map_refsets: the extended map refsets whose targets are ICD-10-CM codes (default: the
            US ICD-10-CM map ``6011000124106``; the International edition's ICD-10 map
            ``447562003`` targets WHO ICD-10 and is not read unless named here).
        language_refset: the language refset that picks each concept's preferred term.
        descriptions: read the description files for concept titles (``False`` skips the
            largest file when only ids, hierarchy and map are wanted).

    Attributes:
        stats: filled by a read: counts of concepts, relations, skipped rows and files.

    Raises:
        FileNotFoundError: the folder does not exist or has no ``sct2_Concept_Snapshot*.txt``.
    """

    name: ClassVar[str] = "snomed_rf2"

    def __init__(
        self,
        snapshot_dir: str | Path,
        *,
        map_refsets: Collection[str] = (US_ICD10CM_MAP_REFSET,),
        language_refset: str = US_ENGLISH_REFSET,
        descriptions: bool = True,
    ) -> None:
        folder = Path(snapshot_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"SNOMED CT RF2 folder {folder} does not exist")
        if (folder / "Snapshot").is_dir():
            folder = folder / "Snapshot"
        self.folder = folder
        self.map_refsets = frozenset(str(r) for r in map_refsets)
        self.language_refset = str(language_refset)
        self.read_descriptions = descriptions
        self.files: dict[str, list[Path]] = {
            kind: sorted(p for p in folder.rglob(pattern) if p.is_file())
            for kind, pattern in _PATTERNS.items()
        }
        if not self.files["concept"]:
            raise FileNotFoundError(
                f"no {_PATTERNS['concept']} under {folder}: point at the Snapshot folder of an RF2 release"
            )
        self.stats: dict[str, Any] = {}
        self._concepts: list[Concept] | None = None
        self._relations: list[Relation] = []

    # -- the contract ------------------------------------------------------------------------

    def concepts(self) -> Iterator[Concept]:
        """Yield every active concept, titled with its preferred term or FSN."""
        yield from self._load()

    def relations(self) -> Iterator[Relation]:
        """Yield ``is_a`` (SCTID -> parent SCTID), then ``xref`` (SCTID -> ICD-10-CM) map rows."""
        self._load()
        yield from self._relations

    def info(self) -> SourceInfo:
        """Release (edition and date from the file names) and checksummed files."""
        text_kinds = ("description", "language")
        used = [
            p
            for kind, paths in self.files.items()
            if self.read_descriptions or kind not in text_kinds
            for p in paths
        ]
        edition, date = _release(self.files["concept"][-1])
        notes = [
            "SNOMED CT from the user's own licensed copy: a KG built with it must not be redistributed",
            f"map refsets read as ICD-10-CM: {', '.join(sorted(self.map_refsets)) or 'none'}",
        ]
        for kind in ("relationship", "map"):
            if not self.files[kind]:
                notes.append(f"no {_PATTERNS[kind]} under {self.folder}")
        return SourceInfo(
            name=self.name,
            version=f"SNOMED CT RF2 snapshot {edition} {date}".strip(),
            files=[file_sha256(p) for p in used],
            notes=notes,
        )

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> list[Concept]:
        if self._concepts is not None:
            return self._concepts
        active = self._read_concepts()
        titles = self._read_titles(active) if self.read_descriptions else {}
        self._concepts = [
            Concept(id=f"SCTID:{cid}", system="SCTID", title=titles.get(cid, ""), source=self.name)
            for cid in active
        ]
        self._relations = [*self._read_is_a(active), *self._read_map(active)]
        self.stats["concepts"] = len(self._concepts)
        self.stats["relations"] = dict(Counter(r.relation for r in self._relations))
        logger.info(
            "snomed_rf2: %d active concepts, %s from %s",
            len(self._concepts),
            self.stats["relations"],
            self.folder,
        )
        return self._concepts

    def _read_concepts(self) -> dict[str, None]:
        active: dict[str, None] = {}
        inactive = 0
        for path, line, row in _latest(self.files["concept"], _HEADERS["concept"]):
            cid = _sctid(path, line, row[0], "id")
            if row[2] == "1":
                active[cid] = None
            else:
                inactive += 1
        self.stats["inactive_concepts"] = inactive
        return active

    def _read_titles(self, active: dict[str, None]) -> dict[str, str]:
        preferred: set[str] = set()
        for _, _, row in _latest(self.files["language"], _HEADERS["language"]):
            if row[2] == "1" and row[4] == self.language_refset and row[6] == PREFERRED:
                preferred.add(row[5])
        fsn: dict[str, str] = {}
        pt: dict[str, str] = {}
        for path, line, row in _latest(self.files["description"], _HEADERS["description"]):
            if row[2] != "1":
                continue
            concept = row[4]
            if concept not in active:
                if not concept.isdigit():
                    raise SourceFormatError(path, line, f"conceptId {concept!r} is not a SNOMED CT id")
                continue
            if row[6] == FSN_TYPE:
                fsn.setdefault(concept, row[7])
            elif row[6] == SYNONYM_TYPE and row[0] in preferred:
                pt.setdefault(concept, row[7])
        self.stats["titles"] = {"preferred_term": len(pt), "fsn_only": len(set(fsn) - set(pt))}
        return {cid: pt.get(cid) or fsn.get(cid, "") for cid in active}

    def _read_is_a(self, active: dict[str, None]) -> Iterator[Relation]:
        skipped = 0
        for path, line, row in _latest(self.files["relationship"], _HEADERS["relationship"]):
            if row[2] != "1" or row[7] != IS_A_TYPE:
                continue
            src, dst = row[4], row[5]
            for value, column in ((src, "sourceId"), (dst, "destinationId")):
                if not value.isdigit():
                    raise SourceFormatError(path, line, f"{column} {value!r} is not a SNOMED CT id")
            if src not in active or dst not in active:
                skipped += 1
                continue
            yield Relation(f"SCTID:{src}", f"SCTID:{dst}", "is_a", self.name)
        self.stats["is_a_to_inactive"] = skipped

    def _read_map(self, active: dict[str, None]) -> Iterator[Relation]:
        best: dict[tuple[str, str, str], tuple[tuple[int, int], dict[str, Any], list[str]]] = {}
        other: Counter[str] = Counter()
        no_target = inactive_concept = 0
        malformed: list[str] = []
        for path, line, row in _latest(self.files["map"], _HEADERS["map"]):
            if row[2] != "1":
                continue
            refset, concept, target = row[4], row[5], row[10].strip()
            if refset not in self.map_refsets:
                other[refset] += 1
                continue
            if not concept.isdigit():
                raise SourceFormatError(
                    path, line, f"referencedComponentId {concept!r} is not a SNOMED CT id"
                )
            try:
                order = (int(row[6]), int(row[7]))
            except ValueError:
                raise SourceFormatError(
                    path, line, f"mapGroup {row[6]!r} and mapPriority {row[7]!r} must be integers"
                ) from None
            if not target:
                no_target += 1
                continue
            if concept not in active:
                inactive_concept += 1
                continue
            try:
                icd = standardize(target, "ICD10CM")
            except InvalidCodeError:
                malformed.append(target)
                continue
            key = (concept, icd, refset)
            attrs = {
                "match": "map_refset",
                "refset": refset,
                "map_group": order[0],
                "map_priority": order[1],
                "map_rule": row[8],
                "map_advice": row[9],
            }
            old = best.get(key)
            if old is None:
                best[key] = (order, attrs, [row[8]])
            else:
                old[2].append(row[8])
                if order < old[0]:
                    best[key] = (order, attrs, old[2])
        for (concept, icd, _), (_, attrs, rules) in best.items():
            if len(rules) > 1:
                attrs["map_rules"] = rules
            yield Relation(f"SCTID:{concept}", icd, "xref", self.name, attrs)
        self.stats["map"] = {
            "links": len(best),
            "no_target_rows": no_target,
            "inactive_concept_rows": inactive_concept,
            "other_refset_rows": dict(other),
        }
        self.stats["malformed_targets"] = len(malformed)
        if malformed:
            logger.warning(
                "snomed_rf2: %d map targets are not ICD-10-CM codes (skipped), e.g. %s",
                len(malformed),
                ", ".join(repr(t) for t in malformed[:3]),
            )


def _release(path: Path) -> tuple[str, str]:
    match = _RELEASE.search(path.name)
    return (match.group(1), match.group(2)) if match else ("", "")


def _sctid(path: Path, line: int, value: str, column: str) -> str:
    try:
        return standardize(value, "SCTID").partition(":")[2]
    except InvalidCodeError as exc:
        raise SourceFormatError(path, line, f"{column}: {exc}") from None


def _rows(path: Path, header: Sequence[str]) -> Iterator[Row]:
    """Rows of one RF2 file after checking its header, active flag and effectiveTime."""
    width = len(header)
    want = [h.lower() for h in header]
    with path.open(encoding="utf-8-sig", newline="") as fh:
        first = fh.readline().rstrip("\r\n")
        if [h.strip().lower() for h in first.split("\t")] != want:
            raise SourceFormatError(
                path, 1, f"expected the RF2 header {chr(9).join(header)!r}, found {first!r}"
            )
        for line_no, raw in enumerate(fh, start=2):
            text = raw.rstrip("\r\n")
            if not text:
                continue
            row = text.split("\t")
            if len(row) != width:
                raise SourceFormatError(
                    path,
                    line_no,
                    f"expected {width} tab-separated fields ({', '.join(header)}), found {len(row)}: "
                    "the file is truncated or malformed",
                )
            if row[2] not in ("0", "1"):
                raise SourceFormatError(path, line_no, f"active must be 0 or 1, found {row[2]!r}")
            if not _DATE.match(row[1]):
                raise SourceFormatError(path, line_no, f"effectiveTime must be YYYYMMDD, found {row[1]!r}")
            yield path, line_no, row


def _latest(paths: Sequence[Path], header: Sequence[str]) -> Iterator[Row]:
    """Rows of one or more files of a kind, one per component id (the latest effectiveTime)."""
    if len(paths) <= 1:
        for path in paths:
            yield from _rows(path, header)
        return
    latest: dict[str, Row] = {}
    for path in paths:
        for item in _rows(path, header):
            old = latest.get(item[2][0])
            if old is None or item[2][1] >= old[2][1]:
                latest[item[2][0]] = item
    yield from latest.values()
