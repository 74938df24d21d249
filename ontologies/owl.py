"""Any OWL file as an ontology source, read with owlready2 into an isolated World.

Reads RDF/XML, OWL/XML or N-Triples (what owlready2 parses) and yields
:class:`~ontologies.base.Concept` / :class:`~ontologies.base.Relation` objects:

* **ids**: the ``kgcode_id`` annotation when present (files written by
  :func:`kg.owl_export.export_owl`); otherwise the IRI fragment of OBO-style IRIs
  (``.../obo/DOID_9352`` -> ``DOID:9352``, ``MONDO_0005148`` -> ``MONDO:0005148``); a fragment
  whose prefix is not a kgcode system is read in ``system=`` when given, else the class is
  skipped and counted.
* **concepts**: title from the first ``rdfs:label``; synonyms from ``hasExactSynonym``,
  ``hasRelatedSynonym`` and ``hasSynonym`` (any namespace, matched by property name);
  ``attrs["xrefs"]`` the raw ``hasDbXref`` strings and ``attrs["iri"]`` the class IRI. SNOMED CT
  concepts keep their id only (never a label or synonym). ``kind``/``billable`` come from the
  ``kgcode_kind``/``kgcode_billable`` annotations when present. Deprecated classes are skipped.
* **relations**: ``is_a`` for each named superclass (restrictions and ``owl:Thing`` ignored);
  ``xref`` for each ``hasDbXref`` that names an ICD-10-CM, ICD-9-CM, SNOMED CT, MeSH or OMIM
  id (``match="dbxref"``); and the relation annotations ``export_owl`` writes (``excludes1``,
  ``gem_equivalent``, ... whose value is the target's id).

IRI fragments (one scheme, shared with :mod:`kg.owl_export`): ``SYSTEM_CODE`` where the code is
percent-encoded except for ``A-Z a-z 0-9 _ . - ~``; ``ICD10CM:E11.9`` -> ``ICD10CM_E11.9``,
``ICD10CM:E08-E13`` -> ``ICD10CM_E08-E13``, ``DOID:9352`` -> ``DOID_9352`` (the OBO spelling).
No system name contains ``_``, so splitting at the first ``_`` and percent-decoding the rest
reverses it (:func:`id_to_fragment`, :func:`fragment_to_id`).

Example:
    >>> from ontologies.owl import OWLSource
    >>> src = OWLSource("tests/fixtures/mini.owl")  # doctest: +SKIP
    >>> next(c for c in src.concepts() if c.id == "DOID:9352").title  # doctest: +SKIP
    'type 2 diabetes mellitus'
"""

from __future__ import annotations

import logging
import re
import sys
import types
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import owlready2

from ontologies.base import (
    RELATIONS,
    Concept,
    OntologySource,
    Relation,
    SourceFormatError,
    SourceInfo,
    file_sha256,
)
from ontologies.codes import InvalidCodeError, canonical_system, try_standardize
from ontologies.registry import register_source

__all__ = [
    "ANNOTATION_RELATIONS",
    "BILLABLE_PROPERTY",
    "ID_PROPERTY",
    "KIND_PROPERTY",
    "OBO_IN_OWL",
    "OWLSource",
    "SYNONYM_PROPERTIES",
    "XREF_SYSTEMS",
    "fragment_to_id",
    "id_to_fragment",
]

_LOG = logging.getLogger(__name__)

#: Namespace of the OBO-in-OWL annotation properties (synonyms, xrefs).
OBO_IN_OWL = "http://www.geneontology.org/formats/oboInOwl#"
#: Annotation carrying a class's system-qualified id in files written by ``export_owl``.
ID_PROPERTY = "kgcode_id"
#: Annotation carrying ``Concept.kind`` in files written by ``export_owl``.
KIND_PROPERTY = "kgcode_kind"
#: Annotation carrying ``Concept.billable`` (``true``) in files written by ``export_owl``.
BILLABLE_PROPERTY = "kgcode_billable"
#: Annotation property names read as synonyms, in this order.
SYNONYM_PROPERTIES: tuple[str, ...] = ("hasExactSynonym", "hasRelatedSynonym", "hasSynonym")
#: Annotation property name of database cross-references.
XREF_PROPERTY = "hasDbXref"
#: Systems a ``hasDbXref`` must name to become an ``xref`` relation.
XREF_SYSTEMS: frozenset[str] = frozenset({"ICD10CM", "ICD9CM", "SCTID", "MESH", "OMIM"})
#: Relations written as class annotations (value: the target's id); ``is_a`` is ``subClassOf``.
ANNOTATION_RELATIONS: tuple[str, ...] = tuple(r for r in RELATIONS if r != "is_a")

_FRAGMENT_PREFIX = re.compile(r"^([^_:]+)[_:]")
_LINE = re.compile(r"line (\d+)")
_COLUMN = re.compile(r"column (\d+)")


def id_to_fragment(concept_id: str) -> str:
    """The IRI fragment of a system-qualified id (the scheme in the module docstring).

    Args:
        concept_id: ``SYSTEM:CODE``, e.g. ``ICD10CM:E11.9``.

    Returns:
        ``SYSTEM_CODE`` with the code percent-encoded (``ICD10CM_E11.9``).

    Raises:
        ValueError: the id has no ``SYSTEM:`` prefix or the system contains ``_``.
    """
    system, sep, code = concept_id.partition(":")
    if not sep or not system or not code or "_" in system:
        raise ValueError(f"{concept_id!r} is not a system-qualified id such as ICD10CM:E11.9")
    return f"{system}_{quote(code, safe='')}"


def fragment_to_id(fragment: str, system: str | None = None) -> str | None:
    """Read an IRI fragment as a system-qualified id.

    ``DOID_9352`` / ``DOID:9352`` -> ``DOID:9352``; ``ICD10CM_E11.9`` -> ``ICD10CM:E11.9``.
    A fragment whose prefix is not a kgcode system is read as a bare code in ``system``.

    Args:
        fragment: the part of the IRI after the last ``#`` or ``/``.
        system: system to read a fragment without a known prefix in.

    Returns:
        The id, or ``None`` when the prefix is unknown and no system is given, or the code
        is malformed for its system.
    """
    text = unquote(fragment).strip()
    if not text:
        return None
    m = _FRAGMENT_PREFIX.match(text)
    if m:
        try:
            canonical_system(m.group(1))
        except InvalidCodeError:
            pass
        else:
            return try_standardize(text)  # a known prefix wins over ``system``
    if system is None:
        return None
    return try_standardize(text, system)


class _OfflineWorld(owlready2.World):
    """An owlready2 World that never downloads: ``owl:imports`` are recorded, not followed."""

    def __init__(self) -> None:
        self.skipped_imports: list[str] = []
        self.offline = False
        super().__init__()

    def get_ontology(self, base_iri: str, OntologyClass: Any = None) -> Any:
        known = len(self.ontologies)
        onto = super().get_ontology(base_iri, OntologyClass)
        created = len(self.ontologies) > known
        if self.offline and created and base_iri.startswith(("http://", "https://", "ftp://")):
            onto.loaded = True  # load() then returns at once: an empty stand-in, no download
            self.skipped_imports.append(base_iri)
        return onto


def _parse_problem(exc: BaseException, hooked: list[BaseException]) -> tuple[int | None, str]:
    """Line (if known) and a one-line reason from an owlready2 parsing error."""
    text = " ".join(str(a) for a in _flatten(exc.args)) or str(exc)
    line_m = _LINE.search(text)
    line = int(line_m.group(1)) if line_m else None
    syntax = next((s for s in ("RDF/XML", "OWL/XML") if s in text), None)
    if syntax:
        col_m = _COLUMN.search(text)
        detail = ""
        for err in hooked:
            cause = err.__cause__ or err.__context__
            if cause is not None:
                detail = str(cause).split(": line", 1)[0]
                break
        where = f" at column {col_m.group(1)}" if col_m else ""
        return line, f"malformed {syntax}{where}" + (f" ({detail})" if detail else "")
    if "NTriples" in text:
        return line, "not an OWL file owlready2 can read (not RDF/XML, OWL/XML or N-Triples)"
    return line, f"cannot be read as OWL ({text.strip() or type(exc).__name__})"


def _flatten(args: Any) -> Iterator[Any]:
    for a in args:
        if isinstance(a, tuple | list):
            yield from _flatten(a)
        else:
            yield a


def _is_true(values: list[Any]) -> bool:
    return any(v is True or str(v).strip().lower() == "true" for v in values)


@register_source
class OWLSource(OntologySource):
    """Concepts and relations of one OWL file (see the module docstring for the mapping).

    The file is parsed on first use (``concepts``, ``relations`` or ``info``) into a private
    owlready2 World, so nothing leaks into owlready2's default world, and ``owl:imports`` are
    never followed (no network): only the file's own axioms are read. Annotation properties are
    matched by name among those the file declares (the OBO-in-OWL synonym and xref properties
    are also read when used undeclared). Not thread-safe: loading swaps ``sys.excepthook``
    for the duration of the parse, to keep owlready2 from printing tracebacks.

    Args:
        path: the OWL file.
        system: system to read IRI fragments without a known kgcode prefix in (e.g. a file
            whose classes are ``.../E11.9``); without it such classes are skipped and counted.
        id_annotation: name of the annotation property holding a class's id.
        include_deprecated: also read classes marked ``owl:deprecated true``.

    Attributes:
        skipped: classes not read, by reason (``deprecated``, ``duplicate id``, no kgcode id),
            filled on first use.
    """

    name = "owl"

    def __init__(
        self,
        path: str | Path,
        *,
        system: str | None = None,
        id_annotation: str = ID_PROPERTY,
        include_deprecated: bool = False,
    ) -> None:
        self.path = Path(path)
        self.system = canonical_system(system) if system else None
        self.id_annotation = id_annotation
        self.include_deprecated = include_deprecated
        self._world: _OfflineWorld | None = None
        self._onto: Any = None
        self._props: dict[str, list[Any]] = {}
        self._ids: dict[int, str | None] = {}
        self._bulk: dict[str, dict[int, list[Any]]] = {}
        self._entries: list[tuple[Any, str]] = []
        self.skipped: Counter[str] = Counter()

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        """Parse the file once; raise :class:`SourceFormatError` for a missing or bad file."""
        if self._onto is not None:
            return
        path = self.path
        if not path.is_file():
            raise SourceFormatError(path, None, "file does not exist")
        if path.stat().st_size == 0:
            raise SourceFormatError(path, None, "file is empty")
        world = _OfflineWorld()
        hooked: list[BaseException] = []
        saved_hook = sys.excepthook
        # owlready2's parser reports errors through sys.excepthook (a printed traceback)
        # before raising; collect them instead and raise one SourceFormatError.
        sys.excepthook = lambda _type, value, _tb: hooked.append(value)
        try:
            onto = world.get_ontology(path.resolve().as_uri())
            world.offline = True
            try:
                onto.load()
            finally:
                world.offline = False
        except Exception as exc:  # owlready2 raises several types; the caller gets one
            world.close()
            _LOG.debug("owlready2 failed on %s", path, exc_info=True)
            if isinstance(exc, owlready2.OwlReadyOntologyParsingError):
                line, problem = _parse_problem(exc, hooked)
            else:
                line, problem = None, f"cannot be read as OWL ({type(exc).__name__}: {exc})"
            raise SourceFormatError(path, line, problem) from None
        finally:
            sys.excepthook = saved_hook
        if world.skipped_imports:
            _LOG.info(
                "%s: owl:imports not followed (only the file's own axioms are read): %s",
                path,
                ", ".join(world.skipped_imports),
            )
        self._world, self._onto = world, onto
        props: dict[str, list[Any]] = defaultdict(list)
        for prop in world.annotation_properties():
            props[prop.name].append(prop)
        # OBO-in-OWL properties a file uses without declaring them: declare them in a scratch
        # ontology of the private world so their values can be read (the file is untouched).
        undeclared = [n for n in (*SYNONYM_PROPERTIES, XREF_PROPERTY) if n not in props]
        if undeclared:
            scratch = world.get_ontology("http://kgcode.org/owl-source-scratch.owl")
            with scratch.get_namespace(OBO_IN_OWL):
                for name in undeclared:
                    props[name].append(types.new_class(name, (owlready2.AnnotationProperty,)))
        self._props = dict(props)
        self._index()

    def _index(self) -> None:
        """Resolve every class's id once; keep the live, first-seen classes in file order."""
        seen: set[str] = set()
        examples: dict[str, list[str]] = defaultdict(list)
        for cls in self._onto.classes():
            if not self.include_deprecated and _is_true(self._values(cls, "deprecated")):
                reason = "deprecated"
            else:
                cid = self._id(cls)
                if cid is None:
                    reason = "no kgcode id (unknown prefix or malformed code)"
                elif cid in seen:
                    reason = "duplicate id"
                else:
                    seen.add(cid)
                    self._entries.append((cls, cid))
                    continue
            self.skipped[reason] += 1
            if len(examples[reason]) < 3:
                examples[reason].append(cls.iri)
        for reason, n in self.skipped.items():
            hint = " (pass system= to read them)" if reason.startswith("no kgcode id") else ""
            _LOG.log(
                logging.INFO if reason == "deprecated" else logging.WARNING,
                "%s: skipped %d class(es), %s%s, e.g. %s",
                self.path,
                n,
                reason,
                hint,
                ", ".join(examples[reason]),
            )
        _LOG.info("%s: %d classes read", self.path, len(self._entries))

    def _values(self, entity: Any, prop_name: str) -> list[Any]:
        """Values of every annotation property named ``prop_name`` on ``entity``.

        ``rdfs:label`` and ``owl:deprecated`` (owlready2 built-ins) are read per entity; other
        properties are read once for the whole file (one query per property, not per class).
        """
        if prop_name == "label":
            return list(owlready2.label[entity])
        if prop_name == "deprecated":
            return list(owlready2.deprecated[entity])
        by_subject = self._bulk.get(prop_name)
        if by_subject is None:
            by_subject = self._bulk[prop_name] = defaultdict(list)
            for prop in self._props.get(prop_name, ()):
                if prop.namespace.world is not self._world:  # a built-in of another world
                    continue
                for subject, value in prop.get_relations():
                    if isinstance(subject, owlready2.ThingClass):  # not axiom annotations
                        by_subject[subject.storid].append(value)
        return list(by_subject.get(entity.storid, ()))

    def _id(self, cls: Any) -> str | None:
        """System-qualified id of a class (cached), or None."""
        storid = cls.storid
        if storid in self._ids:
            return self._ids[storid]
        cid = None
        for value in self._values(cls, self.id_annotation):
            cid = try_standardize(str(value))
            if cid is not None:
                break
        if cid is None:
            cid = fragment_to_id(cls.name, self.system)
        self._ids[storid] = cid
        return cid

    # ------------------------------------------------------------------ contract
    def concepts(self) -> Iterator[Concept]:
        """Yield one concept per live class with a kgcode id.

        Returns:
            An iterator of concepts (``source="owl"``).

        Raises:
            SourceFormatError: the file is missing or cannot be parsed.
        """
        self._load()
        for cls, cid in self._entries:
            system = cid.partition(":")[0]
            xrefs = [str(v) for v in self._values(cls, XREF_PROPERTY)]
            attrs: dict[str, Any] = {"iri": cls.iri}
            if xrefs:
                attrs["xrefs"] = xrefs
            title, synonyms = "", []
            if system != "SCTID":  # SNOMED CT: id only, never a description
                labels = self._values(cls, "label")
                title = str(labels[0]).strip() if labels else ""
                for name in SYNONYM_PROPERTIES:
                    for v in self._values(cls, name):
                        s = str(v).strip()
                        if s and s not in synonyms:
                            synonyms.append(s)
            kinds = self._values(cls, KIND_PROPERTY)
            yield Concept(
                id=cid,
                system=system,
                title=title,
                synonyms=synonyms,
                kind=str(kinds[0]) if kinds else "concept",
                billable=_is_true(self._values(cls, BILLABLE_PROPERTY)),
                attrs=attrs,
                source=self.name,
            )

    def relations(self) -> Iterator[Relation]:
        """Yield ``is_a``, dbxref ``xref`` and the kgcode relation annotations of each class.

        Returns:
            An iterator of relations (``source="owl"``), without duplicates per class.

        Raises:
            SourceFormatError: the file is missing or cannot be parsed.
        """
        self._load()
        fname = self.path.name
        unread: Counter[str] = Counter()
        for cls, cid in self._entries:
            done: set[tuple[str, str]] = set()
            for parent in cls.is_a:
                if not isinstance(parent, owlready2.ThingClass) or parent is owlready2.Thing:
                    continue  # restrictions, class expressions, owl:Thing
                pid = self._id(parent)
                if pid is None:
                    unread["is_a to a class without kgcode id"] += 1
                elif pid != cid and (pid, "is_a") not in done:
                    done.add((pid, "is_a"))
                    yield Relation(cid, pid, "is_a", source=self.name)
            for raw in self._values(cls, XREF_PROPERTY):
                text = str(raw).strip()
                dst = try_standardize(text) if ":" in text else None
                if dst is None or dst.partition(":")[0] not in XREF_SYSTEMS:
                    continue  # e.g. UMLS_CUI:..., NCI:...: kept in Concept.attrs["xrefs"]
                if (dst, "xref") not in done:
                    done.add((dst, "xref"))
                    yield Relation(
                        cid, dst, "xref", source=self.name, attrs={"match": "dbxref", "file": fname}
                    )
            for rel in ANNOTATION_RELATIONS:
                for raw in self._values(cls, rel):
                    dst = try_standardize(str(raw))
                    if dst is None:
                        unread[f"{rel} value that is not a code"] += 1
                    elif (dst, rel) not in done:
                        done.add((dst, rel))
                        yield Relation(cid, dst, rel, source=self.name, attrs={"file": fname})
        for reason, n in unread.items():
            _LOG.warning("%s: dropped %d %s", self.path, n, reason)

    def info(self) -> SourceInfo:
        """Name, version (``owl:versionIRI``, else ``owl:versionInfo``, else ``unversioned``), file.

        Returns:
            The source info with the file's sha256.

        Raises:
            SourceFormatError: the file is missing or cannot be parsed.
        """
        self._load()
        version = self._version_iri() or next(
            (str(v) for v in self._onto.metadata.versionInfo if str(v).strip()), "unversioned"
        )
        notes = [f"owl:imports not followed: {iri}" for iri in self._world.skipped_imports]
        if self.skipped:
            notes.append("skipped classes: " + ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())))
        return SourceInfo(name=self.name, version=version, files=[file_sha256(self.path)], notes=notes)

    def _version_iri(self) -> str | None:
        rows = self._world.sparql(
            "SELECT ?v WHERE { ?? <http://www.w3.org/2002/07/owl#versionIRI> ?v . }",
            [self._onto],
            error_on_undefined_entities=False,
        )
        for (value,) in rows:
            return getattr(value, "iri", None) or str(value)
        return None

    def close(self) -> None:
        """Free the parsed file (it is parsed again on next use)."""
        if self._world is not None:
            self._world.close()
        self._world, self._onto = None, None
        self._props, self._ids, self._bulk, self._entries = {}, {}, {}, []
        self.skipped = Counter()
