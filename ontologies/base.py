"""The contract every ontology source follows: typed concepts and relations with provenance."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "RELATIONS",
    "Concept",
    "OntologySource",
    "Relation",
    "SourceFile",
    "SourceFormatError",
    "SourceInfo",
    "file_sha256",
]

#: Relation types of the knowledge graph. Direction is always ``src -> dst`` as named:
#: ``is_a`` child -> parent; ``excludes1``/``excludes2``/``code_also`` code -> the code named in
#: its note; ``code_first`` manifestation -> the etiology to code first; ``use_additional``
#: code -> the additional code; ``gem_equivalent`` source-system code -> target-system code
#: (as in the GEM file it came from); ``xref`` DO/Mondo concept -> ICD-9/ICD-10/SNOMED/MeSH/
#: OMIM id; ``equivalent`` MONDO -> DOID.
RELATIONS: tuple[str, ...] = (
    "is_a",
    "excludes1",
    "excludes2",
    "code_first",
    "use_additional",
    "code_also",
    "gem_equivalent",
    "xref",
    "equivalent",
)


@dataclass(slots=True)
class Concept:
    """One node of the knowledge graph.

    Attributes:
        id: system-qualified id (``ICD10CM:E11.9``), see :func:`ontologies.codes.standardize`.
        system: the id's system (``ICD10CM``).
        title: preferred label. Never a SNOMED CT description.
        synonyms: inclusion terms / exact synonyms.
        kind: ``chapter``, ``block``, ``category``, ``code``, ``extension`` (ICD), ``concept``.
        billable: whether the code may be used on a claim (ICD leaf codes).
        attrs: anything else worth keeping (e.g. raw note texts, DO xrefs not made nodes).
        source: name of the source that produced the concept.
    """

    id: str
    system: str
    title: str = ""
    synonyms: list[str] = field(default_factory=list)
    kind: str = "concept"
    billable: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(slots=True)
class Relation:
    """One typed edge, with where it came from.

    Attributes:
        src: system-qualified id of the source node.
        dst: system-qualified id of the target node.
        relation: one of :data:`RELATIONS`.
        source: name of the source that produced it (``icd10cm``, ``gem``, ``doid``, ``mondo``).
        attrs: provenance and details: the note text it was parsed from (``text``), the part
            of the note that could not be parsed (``unparsed``), GEM flags, match type
            (``exact``, ``dbxref``, ``broad`` ...), the DO/Mondo file it came from.
    """

    src: str
    dst: str
    relation: str
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SourceFile:
    """A file a source read, for the KG manifest."""

    path: str
    sha256: str
    size: int


@dataclass(slots=True)
class SourceInfo:
    """What a source was built from: name, version and files with checksums."""

    name: str
    version: str
    files: list[SourceFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class SourceFormatError(ValueError):
    """A source file that is truncated or malformed; the message names file and line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def file_sha256(path: str | Path) -> SourceFile:
    """Checksum a file for the manifest.

    Args:
        path: the file.

    Returns:
        A :class:`SourceFile` with its sha256 and size.
    """
    h = hashlib.sha256()
    p = Path(path)
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return SourceFile(path=str(p), sha256=h.hexdigest(), size=p.stat().st_size)


class OntologySource(ABC):
    """A loader for one code system or mapping source.

    Subclasses set :attr:`name` (the registry name), read their files lazily in
    :meth:`concepts` / :meth:`relations`, and say what they read in :meth:`info`.
    Relations may point at ids another source defines; the KG builder drops (and counts)
    those whose ends are missing after all sources are loaded.
    """

    #: registry name, e.g. ``"icd10cm"``.
    name: ClassVar[str]

    @abstractmethod
    def concepts(self) -> Iterator[Concept]:
        """Yield every concept of the source."""

    @abstractmethod
    def relations(self) -> Iterator[Relation]:
        """Yield every relation of the source."""

    @abstractmethod
    def info(self) -> SourceInfo:
        """Name, version and checksummed files of what was read."""
