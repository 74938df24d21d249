"""SNOMED CT from a user's UMLS import in an owlready2 / PyMedTermino2 quadstore.

For users who imported UMLS with owlready2's PyMedTermino2 (their own UMLS licence), e.g.::

    from owlready2 import default_world
    from owlready2.pymedtermino2.umls import import_umls
    default_world.set_backend(filename="pym.sqlite3")
    import_umls("umls-2024AA-full.zip", terminologies=["SNOMEDCT_US", "ICD10CM", "ICD10", "CUI"])
    default_world.save()

The layout PyMedTermino2 writes (``owlready2.pymedtermino2.umls``), which this reader relies on:

* the ontology ``http://PYM/``; each terminology is a class ``http://PYM/SRC/<SAB>``
  (``SNOMEDCT_US``, ``ICD10``, ``ICD10CM``, ``CUI``);
* each concept is a class ``http://PYM/<SAB>/<code>`` with the annotation
  ``http://PYM/terminology`` pointing at its terminology class, an ``rdfs:label`` (its
  preferred UMLS string, language-tagged), ``rdfs:subClassOf`` its parents in the same
  terminology (from MRREL PAR/CHD), and ``rdfs:subClassOf`` a restriction
  ``http://PYM/unifieds some http://PYM/CUI/<CUI>`` for each UMLS CUI it belongs to (this is
  what ``concept >> PYM["CUI"]`` follows);
* MRREL ``mapped_to`` relations, when imported, as restrictions ``http://PYM/mapped_to some
  <concept>`` (what ``concept >> PYM["ICD10CM"]`` tries before shared CUIs).

What is yielded: every ``SNOMEDCT_US`` concept as ``SCTID:<id>`` (titled with its label; the
KG keeps SNOMED CT nodes id-only), ``is_a`` between SNOMED CT concepts, and one ``xref``
SCTID -> ICD-10-CM code per pair linked through a shared CUI (``match="umls_cui"``, attrs
``cuis`` and ``umls_terminologies``) or, failing that, through ``mapped_to``
(``match="umls_mapped_to"``). ICD codes are read from ``ICD10CM`` and WHO ``ICD10`` (codes that
are not ICD-10-CM spellings, like ``B95-B97.9``, are skipped and counted; WHO codes absent from
ICD-10-CM are dropped by the KG builder).

Limits: the quadstore is read with SQL over owlready2's tables (``resources``, ``objs``,
``datas``), opened read-only, the way PyMedTermino2's own mappers query it; owlready2's object
API is not used because opening a World writes to the file and a full UMLS SNOMED CT (some
350,000 classes) loads far faster this way. ``>> ICD10CM``'s fallback to a concept's parents is
not reproduced here: ``kgcode map`` does inheritance itself and says how far it went. A
quadstore written by a future owlready2 with other table names is reported as a
:class:`~ontologies.base.SourceFormatError`. The tests check this reader on a quadstore that
the real ``import_umls`` builds from tiny hand-written RRF files with made-up ids.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize
from ontologies.registry import register_source

__all__ = ["PYM", "PyMedTerminoSource"]

logger = logging.getLogger(__name__)

#: Base IRI of PyMedTermino2's ontology.
PYM = "http://PYM/"
_RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_SUBCLASS_OF = "http://www.w3.org/2000/01/rdf-schema#subClassOf"
_ON_PROPERTY = "http://www.w3.org/2002/07/owl#onProperty"
_SOME = "http://www.w3.org/2002/07/owl#someValuesFrom"
_VERSION_INFO = "http://www.w3.org/2002/07/owl#versionInfo"


@register_source
class PyMedTerminoSource(OntologySource):
    """SNOMED CT concepts, hierarchy and ICD-10 links from a PyMedTermino2 (owlready2) quadstore.

    Args:
        quadstore_path: the SQLite file given to ``default_world.set_backend(filename=...)``.
        snomed_terminology: the UMLS source abbreviation of SNOMED CT.
        icd_terminologies: UMLS source abbreviations whose codes are read as ICD-10-CM codes.
        titles: read each concept's label as its title (``False`` when only ids, hierarchy and
            links are wanted, e.g. for a KG, which keeps SNOMED CT nodes id-only).

    Attributes:
        stats: filled by a read: concepts, relations, links per kind, skipped codes.

    Raises:
        FileNotFoundError: the file does not exist.
    """

    name: ClassVar[str] = "pymedtermino2"

    def __init__(
        self,
        quadstore_path: str | Path,
        *,
        snomed_terminology: str = "SNOMEDCT_US",
        icd_terminologies: Sequence[str] = ("ICD10CM", "ICD10"),
        titles: bool = True,
    ) -> None:
        self.path = Path(quadstore_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"owlready2 quadstore {self.path} does not exist")
        self.snomed_terminology = snomed_terminology
        self.icd_terminologies = tuple(icd_terminologies)
        self.read_titles = titles
        self.stats: dict[str, Any] = {}
        self._version = ""
        self._concepts: list[Concept] | None = None
        self._relations: list[Relation] = []

    def concepts(self) -> Iterator[Concept]:
        """Yield every SNOMED CT concept of the quadstore."""
        yield from self._load()

    def relations(self) -> Iterator[Relation]:
        """Yield ``is_a`` (SCTID -> parent SCTID), then ``xref`` (SCTID -> ICD-10-CM code)."""
        self._load()
        yield from self._relations

    def info(self) -> SourceInfo:
        """UMLS version (the quadstore's ``versionInfo``) and the checksummed quadstore."""
        self._load()
        return SourceInfo(
            name=self.name,
            version=f"UMLS {self._version} via PyMedTermino2" if self._version else "UMLS via PyMedTermino2",
            files=[file_sha256(self.path)],
            notes=[
                "SNOMED CT from the user's own UMLS licence: a KG built with it must not be redistributed",
                f"ICD links through shared UMLS CUIs with {', '.join(self.icd_terminologies)}",
            ],
        )

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> list[Concept]:
        if self._concepts is not None:
            return self._concepts
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:  # pragma: no cover - sqlite opens lazily
            raise SourceFormatError(self.path, None, f"cannot open as SQLite: {exc}") from exc
        try:
            self._read(db)
        except sqlite3.DatabaseError as exc:
            raise SourceFormatError(
                self.path,
                None,
                f"not an owlready2 quadstore ({exc}): expected the file written by "
                "default_world.set_backend(filename=...) after PyMedTermino2's import_umls()",
            ) from exc
        finally:
            db.close()
        assert self._concepts is not None
        return self._concepts

    def _read(self, db: sqlite3.Connection) -> None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"resources", "objs", "datas"} - tables
        if missing:
            raise SourceFormatError(
                self.path,
                None,
                f"not an owlready2 quadstore: no table {', '.join(sorted(missing))} "
                "(expected the file of default_world.set_backend(filename=...))",
            )
        ids = _storids(db, [
            f"{PYM}terminology", f"{PYM}unifieds", f"{PYM}mapped_to", f"{PYM}SRC/{self.snomed_terminology}",
            *(f"{PYM}SRC/{t}" for t in self.icd_terminologies),
            _RDFS_LABEL, _SUBCLASS_OF, _ON_PROPERTY, _SOME, _VERSION_INFO,
        ])  # fmt: skip
        term = ids.get(f"{PYM}terminology")
        snomed = ids.get(f"{PYM}SRC/{self.snomed_terminology}")
        if term is None or snomed is None:
            raise SourceFormatError(
                self.path,
                None,
                f"no PyMedTermino2 terminology {self.snomed_terminology} (class {PYM}SRC/"
                f"{self.snomed_terminology}): import UMLS with terminologies=[{self.snomed_terminology!r}, "
                "'ICD10CM', 'CUI', ...]",
            )
        version = ids.get(_VERSION_INFO)
        if version is not None:
            row = db.execute("SELECT o FROM datas WHERE p=? LIMIT 1", (version,)).fetchone()
            self._version = str(row[0]) if row else ""

        prefix = f"{PYM}{self.snomed_terminology}/"
        sct: dict[int, str] = {}
        skipped: Counter[str] = Counter()
        for storid, iri in db.execute(
            "SELECT t.s, r.iri FROM objs t JOIN resources r ON r.storid=t.s WHERE t.p=? AND t.o=?",
            (term, snomed),
        ):
            cid = _code(iri, prefix, "SCTID")
            if cid is None:
                skipped["snomed"] += 1
                continue
            sct[storid] = cid
        titles = _labels(db, ids.get(_RDFS_LABEL), term, snomed) if self.read_titles else {}
        self._concepts = [
            Concept(id=cid, system="SCTID", title=titles.get(s, ""), source=self.name)
            for s, cid in sct.items()
        ]

        relations: list[Relation] = []
        subclass = ids.get(_SUBCLASS_OF)
        if subclass is not None:
            for child, parent in db.execute(
                "SELECT sc.s, sc.o FROM objs t JOIN objs sc ON sc.s=t.s AND sc.p=? "
                "JOIN objs tp ON tp.s=sc.o AND tp.p=? AND tp.o=? WHERE t.p=? AND t.o=?",
                (subclass, term, snomed, term, snomed),
            ):
                if child in sct and parent in sct:
                    relations.append(Relation(sct[child], sct[parent], "is_a", self.name))

        icd_terms = {ids[f"{PYM}SRC/{t}"]: t for t in self.icd_terminologies if f"{PYM}SRC/{t}" in ids}
        links: dict[tuple[str, str], dict[str, Any]] = {}
        unifieds = ids.get(f"{PYM}unifieds")
        restriction = (subclass, ids.get(_ON_PROPERTY), ids.get(_SOME))
        if unifieds is not None and None not in restriction:
            sct_cuis = _restrictions(db, restriction, unifieds, term, [snomed])
            icd_cuis = _restrictions(db, restriction, unifieds, term, list(icd_terms))
            by_cui: dict[int, list[tuple[int, int]]] = {}
            for icd, (cui, termino) in icd_cuis:
                by_cui.setdefault(cui, []).append((icd, termino))
            names = _iris(db, {c for _, (c, _) in sct_cuis} | {i for i, _ in icd_cuis})
            for s, (cui, _) in sct_cuis:
                if s not in sct:
                    continue
                for icd, termino in by_cui.get(cui, ()):
                    self._link(
                        links,
                        sct[s],
                        names.get(icd, ""),
                        icd_terms[termino],
                        skipped,
                        cui=names.get(cui, "").rpartition("/")[2],
                    )
        mapped_to = ids.get(f"{PYM}mapped_to")
        if mapped_to is not None and None not in restriction:
            pairs = _restrictions(db, restriction, mapped_to, term, [snomed])
            targets = {t for _, (t, _) in pairs}
            termino_of = dict(db.execute(
                f"SELECT s, o FROM objs WHERE p=? AND s IN ({','.join('?' * len(targets))})",
                (term, *targets),
            )) if targets else {}  # fmt: skip
            names = _iris(db, {t for t in targets if termino_of.get(t) in icd_terms})
            for s, (target, _) in pairs:
                if s in sct and termino_of.get(target) in icd_terms:
                    self._link(links, sct[s], names.get(target, ""), icd_terms[termino_of[target]], skipped)
        for (src, dst), attrs in links.items():
            relations.append(Relation(src, dst, "xref", self.name, attrs))
        self._relations = relations
        self.stats = {
            "concepts": len(self._concepts),
            "relations": dict(Counter(r.relation for r in relations)),
            "links": dict(Counter(a["match"] for a in links.values())),
            "skipped": dict(skipped),
        }
        if skipped:
            logger.info("pymedtermino2: skipped codes that are not kgcode ids: %s", dict(skipped))
        logger.info("pymedtermino2: %s from %s", self.stats, self.path)

    def _link(
        self,
        links: dict[tuple[str, str], dict[str, Any]],
        sctid: str,
        iri: str,
        terminology: str,
        skipped: Counter[str],
        cui: str = "",
    ) -> None:
        icd = _code(iri, f"{PYM}{terminology}/", "ICD10CM")
        if icd is None:
            skipped[terminology] += 1
            return
        attrs = links.get((sctid, icd))
        if attrs is None:
            attrs = links[(sctid, icd)] = {
                "match": "umls_cui" if cui else "umls_mapped_to",
                "cuis": [],
                "umls_terminologies": [],
            }
        elif cui and attrs["match"] != "umls_cui":
            attrs["match"] = "umls_cui"
        if cui and cui not in attrs["cuis"]:
            attrs["cuis"].append(cui)
        if terminology not in attrs["umls_terminologies"]:
            attrs["umls_terminologies"].append(terminology)


def _storids(db: sqlite3.Connection, iris: Sequence[str]) -> dict[str, int]:
    marks = ",".join("?" * len(iris))
    return {
        iri: s for s, iri in db.execute(f"SELECT storid, iri FROM resources WHERE iri IN ({marks})", iris)
    }


def _iris(db: sqlite3.Connection, storids: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    items = list(storids)
    for start in range(0, len(items), 900):  # SQLite's default limit of bound parameters
        chunk = items[start : start + 900]
        marks = ",".join("?" * len(chunk))
        out.update(db.execute(f"SELECT storid, iri FROM resources WHERE storid IN ({marks})", chunk))
    return out


def _code(iri: str, prefix: str, system: str) -> str | None:
    if not iri.startswith(prefix):
        return None
    try:
        return standardize(iri[len(prefix) :], system)
    except InvalidCodeError:
        return None


def _labels(db: sqlite3.Connection, label: int | None, term: int, termino: int) -> dict[int, str]:
    """The label of each concept of a terminology, English first."""
    if label is None:
        return {}
    out: dict[int, tuple[int, str]] = {}
    for s, value, lang in db.execute(
        "SELECT d.s, d.o, d.d FROM objs t JOIN datas d ON d.s=t.s AND d.p=? WHERE t.p=? AND t.o=?",
        (label, term, termino),
    ):
        rank = 0 if lang == "@en" else 1
        old = out.get(s)
        if old is None or rank < old[0]:
            out[s] = (rank, str(value))
    return {s: text for s, (_, text) in out.items()}


def _restrictions(
    db: sqlite3.Connection,
    restriction: tuple[int | None, int | None, int | None],
    prop: int,
    term: int,
    terminologies: list[int],
) -> list[tuple[int, tuple[int, int]]]:
    """``(concept, (value, terminology))`` for each ``concept subClassOf (prop some value)``."""
    subclass, on_property, some = restriction
    if not terminologies:
        return []
    marks = ",".join("?" * len(terminologies))
    rows = db.execute(
        "SELECT t.s, v.o, t.o FROM objs t "
        "JOIN objs sc ON sc.s=t.s AND sc.p=? "
        "JOIN objs op ON op.s=sc.o AND op.p=? AND op.o=? "
        "JOIN objs v ON v.s=sc.o AND v.p=? "
        f"WHERE t.p=? AND t.o IN ({marks})",
        (subclass, on_property, prop, some, term, *terminologies),
    )
    return [(s, (value, termino)) for s, value, termino in rows]
