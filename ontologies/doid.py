"""Human Disease Ontology (DO): classes, parents, synonyms and cross-references.

Reads ``<data_dir>/doid/``:

* ``HumanDO.tsv`` (DOreports: quoted TSV ``id``, ``label``, ``subClassOf`` = the parent's
  *label*; one row per parent): the ``DOID:`` concepts and their ``is_a`` parents, the parent
  label resolved through the labels of the same file;
* ``allXREFinDO.tsv`` (``id``, ``label``, ``xref``): ``xref`` relations to ICD-10-CM, ICD-9-CM,
  SNOMED CT (``SNOMEDCT_US_<release>:``, matched by prefix), MeSH and OMIM (``MIM:``) ids; other
  prefixes (UMLS_CUI, NCI, ORDO, GARD ...) stay on the concept as raw strings in
  ``attrs["xrefs"]``;
* the newest ``*.obo`` (``doid-2016-09-01.obo``, optional): EXACT and RELATED synonyms of the
  classes that HumanDO.tsv still has (obsolete terms skipped).

SNOMED CT, MeSH and OMIM have no source of their own, so their ids are yielded here as id-only
concepts (empty title: never a SNOMED CT description). ICD codes are left to the ICD sources.

Example:
    >>> do = DOSource("../shared/data")  # doctest: +SKIP
    >>> sorted({r.relation for r in do.relations()})  # doctest: +SKIP
    ['is_a', 'xref']
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ontologies._tsv import read_table
from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize, verhoeff_valid
from ontologies.registry import register_source

__all__ = ["DOSource"]

logger = logging.getLogger(__name__)

#: xref prefixes that become graph nodes (SNOMEDCT_US_<release> is matched by prefix).
_NODE_PREFIXES = frozenset({"ICD10CM", "ICD9CM", "MESH", "MIM"})
_SNOMED_PREFIX = "SNOMEDCT"
#: id-only concepts DO yields for the ids it points to (no other source defines them).
_ID_ONLY_SYSTEMS = frozenset({"SCTID", "MESH", "OMIM"})
_KEPT_SCOPES = frozenset({"EXACT", "RELATED"})
_SYNONYM = re.compile(r'^synonym:\s*"((?:[^"\\]|\\.)*)"\s+([A-Z_]+)\b')
_UNESCAPE = re.compile(r"\\(.)")
_LOG_EXAMPLES = 5


#: DO's root class, absent from HumanDO.tsv as a row.
_ROOT = ("DOID:4", "disease")


@dataclass(slots=True)
class _DOClass:
    title: str
    parents: list[str] = field(default_factory=list)
    synonyms: list[str] = field(default_factory=list)
    xrefs: list[str] = field(default_factory=list)


@register_source
class DOSource(OntologySource):
    """Disease Ontology classes (``DOID:``), ``is_a`` parents, synonyms and ``xref`` relations.

    ``xref`` attributes: ``match`` (always ``dbxref``), ``file`` (``allXREFinDO.tsv``), and
    ``snomed_release`` (``2025_09_01``) on SNOMED CT edges.

    Args:
        data_dir: folder holding ``doid/`` (e.g. ``../shared/data``).

    Attributes:
        stats: counts filled on the first read: concepts, relations by type, unresolved and
            ambiguous parent labels, invalid xref codes by prefix, SCTIDs failing the Verhoeff
            check, synonyms kept.

    Raises:
        FileNotFoundError: ``data_dir/doid`` (or its HumanDO.tsv / allXREFinDO.tsv) is missing.
    """

    name: ClassVar[str] = "doid"

    def __init__(self, data_dir: str | Path) -> None:
        self.folder = Path(data_dir) / "doid"
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"Disease Ontology folder {self.folder} does not exist: expected HumanDO.tsv, "
                "allXREFinDO.tsv and a doid-*.obo in it"
            )
        self.classes_path = self.folder / "HumanDO.tsv"
        self.xrefs_path = self.folder / "allXREFinDO.tsv"
        for path in (self.classes_path, self.xrefs_path):
            if not path.is_file():
                raise FileNotFoundError(f"Disease Ontology file {path} does not exist")
        obos = sorted(self.folder.glob("*.obo"))
        self.obo_path: Path | None = obos[-1] if obos else None
        self.stats: dict[str, Any] = {}
        self._classes: dict[str, _DOClass] | None = None
        self._relations: list[Relation] = []
        self._id_only: dict[str, str] = {}  # id -> system, first-seen order

    def concepts(self) -> Iterator[Concept]:
        """Yield the DO classes, then id-only SNOMED CT / MeSH / OMIM concepts."""
        classes = self._load()
        for cid, cls in classes.items():
            attrs: dict[str, Any] = {"xrefs": list(cls.xrefs)} if cls.xrefs else {}
            yield Concept(
                id=cid,
                system="DOID",
                title=cls.title,
                synonyms=list(cls.synonyms),
                kind="concept",
                attrs=attrs,
                source=self.name,
            )
        for cid, system in self._id_only.items():
            yield Concept(id=cid, system=system, title="", kind="concept", source=self.name)

    def relations(self) -> Iterator[Relation]:
        """Yield ``is_a`` (DOID -> parent DOID) then ``xref`` (DOID -> ICD/SNOMED/MeSH/OMIM id)."""
        self._load()
        yield from self._relations

    def info(self) -> SourceInfo:
        """Versions and checksummed files (reads the OBO header only)."""
        files = [file_sha256(self.classes_path), file_sha256(self.xrefs_path)]
        version = "DOreports (HumanDO.tsv)"
        notes = ["reports CC0 1.0; Schriml LM et al., Human Disease Ontology, disease-ontology.org"]
        if self.obo_path is not None:
            files.append(file_sha256(self.obo_path))
            obo_version = self._obo_data_version() or "no data-version"
            version += f"; synonyms from {self.obo_path.name} ({obo_version})"
            notes.append(f"{self.obo_path.name}: CC BY 3.0 (stated in its header)")
        return SourceInfo(name=self.name, version=version, files=files, notes=notes)

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> dict[str, _DOClass]:
        if self._classes is not None:
            return self._classes
        self._relations, self._id_only = [], {}
        classes = self._read_classes()
        synonyms = self._read_synonyms(classes) if self.obo_path is not None else 0
        if self.obo_path is None:
            logger.warning("doid: no .obo file in %s: DO classes get no synonyms", self.folder)
        self._read_xrefs(classes)
        self.stats["concepts"] = len(classes) + len(self._id_only)
        self.stats["synonyms"] = synonyms
        self.stats["relations"] = dict(Counter(r.relation for r in self._relations))
        self.stats["id_only_concepts"] = dict(Counter(self._id_only.values()))
        self._classes = classes
        return classes

    def _read_classes(self) -> dict[str, _DOClass]:
        """HumanDO.tsv: classes, then parents resolved from labels of the same file."""
        path = self.classes_path
        classes: dict[str, _DOClass] = {}
        parent_rows: list[tuple[str, str]] = []
        for line_no, (raw_id, label, parent_label) in read_table(path, ("id", "label", "subClassOf")):
            try:
                cid = standardize(raw_id, "DOID")
            except InvalidCodeError as exc:
                raise SourceFormatError(path, line_no, str(exc)) from exc
            label = label.strip()
            if not label:
                raise SourceFormatError(path, line_no, f"{cid} has an empty label")
            cls = classes.get(cid)
            if cls is None:
                classes[cid] = _DOClass(title=label)
            elif cls.title != label:
                logger.warning(
                    "doid: %s:%d: %s labelled %r and %r; keeping the first",
                    path.name,
                    line_no,
                    cid,
                    cls.title,
                    label,
                )
            if parent_label.strip():
                parent_rows.append((cid, parent_label.strip()))
        by_label: dict[str, set[str]] = {}
        for cid, cls in classes.items():
            by_label.setdefault(cls.title, set()).add(cid)
        # The report lists subclasses only: DO's root (DOID:4 "disease") has no row of its own,
        # yet its top-level children name it as their parent. Add it so the tree is connected.
        root_id, root_label = _ROOT
        if root_label not in by_label and any(p == root_label for _, p in parent_rows):
            classes[root_id] = _DOClass(title=root_label)
            by_label[root_label] = {root_id}
        unresolved: Counter[str] = Counter()
        ambiguous: Counter[str] = Counter()
        for cid, parent_label in parent_rows:
            ids = by_label.get(parent_label, set())
            if len(ids) == 1:
                parent = next(iter(ids))
                if parent not in classes[cid].parents:
                    classes[cid].parents.append(parent)
                    self._relations.append(Relation(cid, parent, "is_a", self.name))
            elif ids:
                ambiguous[parent_label] += 1
            else:
                unresolved[parent_label] += 1
        for what, counter in (("resolve to no class", unresolved), ("are ambiguous", ambiguous)):
            if counter:
                logger.info(
                    "doid: %d parent labels in %s %s (%d rows), e.g. %s",
                    len(counter),
                    path.name,
                    what,
                    sum(counter.values()),
                    ", ".join(map(repr, list(counter)[:_LOG_EXAMPLES])),
                )
        self.stats["parent_unresolved"] = dict(unresolved)
        self.stats["parent_ambiguous"] = dict(ambiguous)
        return classes

    def _read_synonyms(self, classes: dict[str, _DOClass]) -> int:
        """EXACT and RELATED synonyms from the OBO, for live terms HumanDO.tsv has."""
        assert self.obo_path is not None
        path = self.obo_path
        kept = 0
        skipped_terms = 0

        def flush(term_id: str | None, obsolete: bool, texts: list[str]) -> None:
            nonlocal kept, skipped_terms
            if term_id is None or obsolete or not texts:
                return
            cls = classes.get(term_id)
            if cls is None:
                skipped_terms += 1
                return
            seen = {cls.title.casefold(), *(s.casefold() for s in cls.synonyms)}
            for text in texts:
                if text.casefold() not in seen:
                    seen.add(text.casefold())
                    cls.synonyms.append(text)
                    kept += 1

        term_id: str | None = None
        obsolete = False
        texts: list[str] = []
        in_term = False
        with path.open(encoding="utf-8") as fh:
            for line_no, raw in enumerate(fh, start=1):
                line = raw.strip()
                if line.startswith("["):
                    flush(term_id, obsolete, texts)
                    term_id, obsolete, texts = None, False, []
                    in_term = line == "[Term]"
                elif not in_term:
                    continue
                elif line.startswith("id:"):
                    try:
                        term_id = standardize(line[3:].strip(), "DOID")
                    except InvalidCodeError as exc:
                        raise SourceFormatError(path, line_no, str(exc)) from exc
                elif line.startswith("is_obsolete:"):
                    obsolete = line.partition(":")[2].strip() == "true"
                elif line.startswith("synonym:"):
                    m = _SYNONYM.match(line)
                    if m is None:
                        raise SourceFormatError(
                            path, line_no, f'expected synonym: "text" SCOPE [xrefs], found {line!r}'
                        )
                    text = _UNESCAPE.sub(r"\1", m.group(1)).strip()
                    if m.group(2) in _KEPT_SCOPES and text:
                        texts.append(text)
        flush(term_id, obsolete, texts)
        self.stats["obo_terms_not_in_humando"] = skipped_terms
        return kept

    def _obo_data_version(self) -> str:
        """The ``data-version:`` of the OBO header (``releases/2016-09-01``), or ``""``."""
        assert self.obo_path is not None
        with self.obo_path.open(encoding="utf-8") as fh:
            for raw in fh:
                if raw.startswith("["):
                    break
                if raw.startswith("data-version:"):
                    return raw.partition(":")[2].strip()
        return ""

    def _read_xrefs(self, classes: dict[str, _DOClass]) -> None:
        """allXREFinDO.tsv: xref relations to node systems, other prefixes kept as raw strings."""
        path = self.xrefs_path
        invalid: Counter[str] = Counter()
        bad_check = 0
        unknown_subject = 0
        seen: set[tuple[str, str]] = set()
        subjects: dict[str, str] = {}  # rows come grouped by class: standardize each id once
        for line_no, (raw_id, _label, xref) in read_table(path, ("id", "label", "xref")):
            cid = subjects.get(raw_id)
            if cid is None:
                try:
                    cid = subjects[raw_id] = standardize(raw_id, "DOID")
                except InvalidCodeError as exc:
                    raise SourceFormatError(path, line_no, str(exc)) from exc
            cls = classes.get(cid)
            if cls is None:
                unknown_subject += 1
                continue
            xref = xref.strip()
            prefix, sep, code = xref.partition(":")
            prefix_up = prefix.upper()
            is_snomed = prefix_up.startswith(_SNOMED_PREFIX)
            if not sep or not (is_snomed or prefix_up in _NODE_PREFIXES):
                if xref not in cls.xrefs:
                    cls.xrefs.append(xref)
                continue
            try:
                target = standardize(xref, check_digit=False)
                if is_snomed and not verhoeff_valid(target.partition(":")[2]):
                    bad_check += 1
                    raise InvalidCodeError(f"SNOMED CT identifier {code!r} fails the Verhoeff check")
            except InvalidCodeError as exc:
                invalid[prefix_up if not is_snomed else "SCTID"] += 1
                if sum(invalid.values()) <= _LOG_EXAMPLES:
                    logger.info("doid: %s:%d: skipping xref %r of %s: %s", path.name, line_no, xref, cid, exc)
                if xref not in cls.xrefs:
                    cls.xrefs.append(xref)
                continue
            if (cid, target) in seen:
                continue
            seen.add((cid, target))
            attrs: dict[str, Any] = {"match": "dbxref", "file": path.name}
            if is_snomed:
                release = prefix[len("SNOMEDCT_US_") :] if prefix_up.startswith("SNOMEDCT_US_") else ""
                if release:
                    attrs["snomed_release"] = release
            self._relations.append(Relation(cid, target, "xref", self.name, attrs))
            system = target.partition(":")[0]
            if system in _ID_ONLY_SYSTEMS and target not in self._id_only:
                self._id_only[target] = system
        if invalid:
            logger.info(
                "doid: %d malformed xref codes in %s skipped (kept as raw strings): %s",
                sum(invalid.values()),
                path.name,
                dict(invalid),
            )
        if unknown_subject:
            logger.info(
                "doid: %d xref rows of %s name a DOID not in HumanDO.tsv", unknown_subject, path.name
            )
        self.stats["xref_invalid"] = dict(invalid)
        self.stats["sctid_bad_check_digit"] = bad_check
        self.stats["xref_unknown_subject"] = unknown_subject
