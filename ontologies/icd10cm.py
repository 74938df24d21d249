"""ICD-10-CM from the CDC tabular XML: chapters, blocks, codes, 7th-character extensions, notes.

The CDC publishes the tabular list as XML
(``ICD10CM.tabular > chapter > section > diag > diag ...``). :class:`ICD10CMSource` reads it
once with :mod:`xml.etree.ElementTree` and yields:

* concepts for every chapter (``ICD10CM:4``), block (``ICD10CM:E08-E13``; a block holding a
  single category, written ``id="B20"`` in the XML, is ``ICD10CM:B20-B20`` so that it does not
  collide with the category ``ICD10CM:B20``), category, code, and every code built from a
  ``sevenChrDef`` (``ICD10CM:S72.001A``, kind ``extension``);
* ``is_a`` relations child -> parent, and ``excludes1``, ``excludes2``, ``code_first``,
  ``use_additional``, ``code_also`` relations from the concept carrying the note to each code
  the note names (ranges such as ``E08-E13`` expanded in tabular order).

By default it reads the tabular XML bundled in the ``simple-icd-10-cm`` package, without
importing that package.

Example:
    >>> src = ICD10CMSource("tests/fixtures/icd10cm_mini.xml")
    >>> [c.id for c in src.concepts() if c.kind == "extension"][:2]
    ['ICD10CM:S06.1X1A', 'ICD10CM:S06.1X1D']
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers import expat

from ontologies.base import (
    Concept,
    OntologySource,
    Relation,
    SourceFormatError,
    SourceInfo,
    file_sha256,
)
from ontologies.codes import InvalidCodeError, standardize
from ontologies.registry import register_source

__all__ = ["NOTE_RELATIONS", "ICD10CMSource", "NoteRef", "parse_note"]

logger = logging.getLogger(__name__)

SYSTEM = "ICD10CM"

#: Note elements of the tabular that name other codes, and the relation each one becomes.
NOTE_RELATIONS: dict[str, str] = {
    "excludes1": "excludes1",
    "excludes2": "excludes2",
    "codeFirst": "code_first",
    "useAdditionalCode": "use_additional",
    "codeAlso": "code_also",
}

#: The tabular XML shipped in the simple-icd-10-cm package (``simple_icd_10_cm/data/``).
_BUNDLED_PACKAGE = "simple_icd_10_cm"
_BUNDLED_XML = "icd10c-tabular-April-1-2026.xml"

#: 7th characters the tabular rules out in prose only (a ``<notes>`` text, not the XML
#: structure): category -> (6th characters concerned, 7th characters that do not apply).
#: S06: "7th characters D and S do not apply to codes in category S06 with 6th character 7 ...
#: or 8 ...". The CDC code list and simple-icd-10-cm agree.
_SEVENTH_CHAR_EXCLUSIONS: dict[str, tuple[str, str]] = {"S06": ("78", "DS")}

# A code as written in a note: E11, E11.9, E10.A, C7A.0, S72.001A. Codes longer than three
# characters must carry their dot, which keeps words such as G6PD or H1N1 out.
_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?"
# One code (E08.- / S72.0- / Z79.4) or a range (E08-E13, F10.2-F10.9, I70.2--I70.7-,
# P28.3- - P28.4-). "vitamin B12" is not a category.
_NOTE_REF = re.compile(
    rf"(?<![\w.])(?<!vitamin )(?<!Vitamin )(?P<a>{_CODE})(?:\.?-)?"
    rf"(?:\s*-\s*(?P<b>{_CODE})(?:\.?-)?)?(?![\w])"
)
_SCOPE_PREFIX = re.compile(r"\bfor codes?\s+(?:[A-Z0-9.\-]+,?\s*)*$")
_EMPTY_BRACKETS = re.compile(r"[(\[]\s*(?:(?:,|;|/|-|\band\b|\bor\b)\s*)*[)\]]")
_SPACE_AFTER_OPEN = re.compile(r"([(\[])\s+")
_SPACE_BEFORE_CLOSE = re.compile(r"\s+([)\],;])")


def _squash(text: str | None) -> str:
    """Collapse runs of whitespace (tabs, newlines) to one space and strip."""
    return " ".join(text.split()) if text else ""


@dataclass(frozen=True, slots=True)
class NoteRef:
    """A code or code range named in a note text.

    Attributes:
        start: offset of the reference in the note text.
        end: offset just past it.
        first: the code named, or the first code of a range, as written (dot kept, ``-`` dropped).
        last: the last code of a range, ``None`` for a single code.
    """

    start: int
    end: int
    first: str
    last: str | None = None

    @property
    def text(self) -> str:
        """The range as ``FIRST-LAST`` (or the single code)."""
        return self.first if self.last is None else f"{self.first}-{self.last}"


def parse_note(text: str) -> list[NoteRef]:
    """Find the codes and code ranges a tabular note names.

    ``(E08.-)``, ``(E10.A-)``, ``(S72.0-)`` and ``Z79.4`` name one code (a trailing ``-`` or
    ``.-`` means "and its children", so it names that code); ``(E08-E13)``, ``(F10.2-F10.9)``
    and ``I70.2--I70.7-`` name a range.

    Args:
        text: the note text.

    Returns:
        The references in the order they appear.

    Example:
        >>> [r.text for r in parse_note("diabetes (E08-E13), insulin use (Z79.4), (E10.A-)")]
        ['E08-E13', 'Z79.4', 'E10.A']
    """
    refs = [NoteRef(m.start(), m.end(), m.group("a"), m.group("b")) for m in _NOTE_REF.finditer(text)]
    # A code outside brackets in a note that also has bracketed codes describes the excluded
    # condition ("pneumoconiosis ... any type in A15 (J65)"), and "for codes G31.0-G31.83"
    # names the codes the note applies to: neither is a target. Both stay in ``unparsed``.
    bracketed = [r for r in refs if _in_brackets(text, r.start)]
    return [
        r
        for r in refs
        if (not bracketed or r in bracketed) and not _SCOPE_PREFIX.search(text[: r.start])
    ]


def _in_brackets(text: str, pos: int) -> bool:
    """Whether position ``pos`` of ``text`` lies inside ``(...)`` or ``[...]``."""
    depth = 0
    for ch in text[:pos]:
        if ch in "([":
            depth += 1
        elif ch in ")]" and depth:
            depth -= 1
    return depth > 0


def _unparsed(text: str, spans: list[tuple[int, int]]) -> str:
    """The note text without the given spans, with emptied brackets and stray commas removed."""
    if not spans:
        return _squash(text)
    pieces, pos = [], 0
    for start, end in sorted(spans):
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    rest = "".join(pieces)
    previous = None
    while previous != rest:
        previous, rest = rest, _EMPTY_BRACKETS.sub("", rest)
    rest = _squash(rest)
    rest = _SPACE_BEFORE_CLOSE.sub(r"\1", _SPACE_AFTER_OPEN.sub(r"\1", rest))
    return rest.strip(" ,;:")


def _default_xml() -> Path:
    """Locate the tabular XML bundled in simple-icd-10-cm without importing the package."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceFormatError(
            _BUNDLED_PACKAGE,
            None,
            "the simple-icd-10-cm package is not installed: install it or pass xml_path",
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    path = data / _BUNDLED_XML
    if path.is_file():
        return path
    found = sorted(data.glob("icd10c*-tabular-*.xml"))
    if len(found) == 1:
        return found[0]
    raise SourceFormatError(
        data, None, f"no ICD-10-CM tabular XML ({_BUNDLED_XML}) in simple-icd-10-cm: pass xml_path"
    )


def _element_line(path: Path, tag: str, ordinal: int) -> int | None:
    """Line of the ``ordinal``-th ``<tag>`` element of a file (used only to report errors)."""
    parser = expat.ParserCreate()
    seen = -1
    line: int | None = None

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal seen, line
        if name == tag:
            seen += 1
            if seen == ordinal and line is None:
                line = parser.CurrentLineNumber

    parser.StartElementHandler = start
    try:
        with path.open("rb") as fh:
            parser.ParseFile(fh)
    except (OSError, expat.ExpatError):
        pass
    return line


def _note_texts(element: ET.Element) -> list[str]:
    """Texts of an element's ``<note>`` children (or of its children, for other tables)."""
    texts = []
    for child in element:
        text = _squash("".join(child.itertext()))
        if text:
            texts.append(text)
    return texts


@dataclass(slots=True)
class _Loaded:
    concepts: list[Concept]
    relations: list[Relation]
    version: str


class _Builder:
    """One pass over the parsed tree: concepts, ``is_a``, and the notes to resolve after."""

    def __init__(self, path: Path, root: ET.Element) -> None:
        self.path = path
        self.root = root
        self.concepts: list[Concept] = []
        self.parents: list[str | None] = []
        self.index: dict[str, int] = {}
        # Category/code/extension ids in tabular order, with the end of each one's subtree.
        self.codes: list[str] = []
        self.code_pos: dict[str, int] = {}
        self.code_end: list[int] = []
        self.pending: list[tuple[str, str, str]] = []
        self.skipped_count = 0

    # -- errors -------------------------------------------------------------------------
    def _fail(self, element: ET.Element, problem: str) -> SourceFormatError:
        ordinal = next((i for i, e in enumerate(self.root.iter(element.tag)) if e is element), -1)
        line = _element_line(self.path, element.tag, ordinal) if ordinal >= 0 else None
        return SourceFormatError(self.path, line, problem)

    def _id(self, element: ET.Element, code: str, where: str) -> str | None:
        """The id of a code; ``None`` (logged, counted, subtree skipped) if standardize rejects it."""
        try:
            return standardize(code, SYSTEM)
        except InvalidCodeError as exc:
            skipped = sum(1 for e in element.iter() if e.tag in ("diag", "section"))
            self.skipped_count += skipped
            logger.warning(
                "%s: skipping <%s> %s (%s) and the %d element(s) under it: %s",
                self.path.name,
                element.tag,
                code,
                where,
                skipped - 1,
                exc,
            )
            return None

    # -- walk ---------------------------------------------------------------------------
    def add(self, concept: Concept, parent: str | None, element: ET.Element) -> None:
        if concept.id in self.index:
            raise self._fail(element, f"{concept.id} appears twice in the tabular")
        self.index[concept.id] = len(self.concepts)
        self.concepts.append(concept)
        self.parents.append(parent)

    def visit(
        self,
        element: ET.Element,
        parent: str | None,
        seven: tuple[dict[str, str], dict[str, list[str]]] | None,
    ) -> None:
        """Add ``element`` (chapter, section or diag), its descendants and its extensions."""
        tag = element.tag
        name: str | None = element.get("id") if tag == "section" else None
        desc: str | None = None
        synonyms: list[str] = []
        notes: dict[str, list[str]] = {}
        own_seven: tuple[dict[str, str], dict[str, list[str]]] | None = None
        children: list[ET.Element] = []
        for child in element:
            ctag = child.tag
            if ctag == "diag" or ctag == "section":
                children.append(child)
            elif ctag == "name":
                name = (child.text or "").strip() or None
            elif ctag == "desc":
                desc = _squash(child.text) or None
            elif ctag == "inclusionTerm":
                synonyms.extend(_note_texts(child))
            elif ctag == "sevenChrDef":
                own_seven = self._seven_chr_def(child)
            elif ctag == "sectionIndex":
                continue
            else:
                texts = _note_texts(child)
                if texts:
                    notes.setdefault(ctag, []).extend(texts)

        where = f"under {parent}" if parent else "at the top level"
        if name is None:
            what = "id attribute" if tag == "section" else "<name>"
            raise self._fail(element, f"<{tag}> {where} has no {what}")
        if desc is None:
            raise self._fail(element, f"<{tag}> {name} ({where}) has no <desc>")

        if tag == "chapter":
            kind = "chapter"
            cid = self._id(element, name, where)
        elif tag == "section":
            kind = "block"
            cid = self._id(element, name if "-" in name else f"{name}-{name}", where)
        else:
            kind = "category" if len(name.replace(".", "")) == 3 else "code"
            cid = self._id(element, name, where)
        if cid is None:
            return

        if own_seven is not None:
            seven = own_seven
        extend = tag == "diag" and not children and seven is not None
        attrs: dict[str, Any] = {}
        if notes:
            attrs["notes"] = notes
        if own_seven is not None:
            attrs["seven_chr_def"] = dict(own_seven[0])
        if element.get("placeholder") == "true":
            attrs["placeholder"] = True
        concept = Concept(
            id=cid,
            system=SYSTEM,
            title=desc,
            synonyms=synonyms,
            kind=kind,
            billable=tag == "diag" and not children and not extend,
            attrs=attrs,
            source=ICD10CMSource.name,
        )
        self.add(concept, parent, element)
        pos = self._code_start(cid) if tag == "diag" else None
        for ntag, texts in notes.items():
            relation = NOTE_RELATIONS.get(ntag)
            if relation is not None:
                self.pending.extend((cid, relation, text) for text in texts)

        for child in children:
            self.visit(child, cid, seven)
        if extend and seven is not None:
            self._extensions(element, cid, name, desc, seven)
        if pos is not None:
            self.code_end[pos] = len(self.codes) - 1

    def _seven_chr_def(self, element: ET.Element) -> tuple[dict[str, str], dict[str, list[str]]]:
        """``{char: description}`` of a ``sevenChrDef`` and the notes that follow an extension."""
        chars: dict[str, str] = {}
        extra: dict[str, list[str]] = {}
        last: str | None = None
        for child in element:
            text = _squash(child.text)
            if child.tag == "extension":
                last = child.get("char")
                if not last:
                    raise self._fail(child, "<extension> without a char attribute")
                chars[last] = text
            elif last is not None and text:
                extra.setdefault(last, []).append(text)
        return chars, extra

    def _code_start(self, cid: str) -> int:
        pos = len(self.codes)
        self.codes.append(cid)
        self.code_pos[cid] = pos
        self.code_end.append(pos)
        return pos

    def _extensions(
        self,
        element: ET.Element,
        leaf: str,
        name: str,
        title: str,
        seven: tuple[dict[str, str], dict[str, list[str]]],
    ) -> None:
        """Add the 7th-character codes of a leaf: pad with X to six characters, append."""
        chars, extra = seven
        base = name.replace(".", "").ljust(6, "X")
        rule = _SEVENTH_CHAR_EXCLUSIONS.get(base[:3])
        for char, text in chars.items():
            if rule is not None and base[5] in rule[0] and char in rule[1]:
                continue
            try:
                cid = standardize(base + char, SYSTEM)
            except InvalidCodeError as exc:
                raise self._fail(element, f"<sevenChrDef> over {name}: {exc}") from None
            attrs: dict[str, Any] = {"seventh_character": char}
            if char in extra:
                attrs["notes"] = {"sevenChrDef": list(extra[char])}
            concept = Concept(
                id=cid,
                system=SYSTEM,
                title=f"{title}, {text}",
                kind="extension",
                billable=True,
                attrs=attrs,
                source=ICD10CMSource.name,
            )
            self.add(concept, leaf, element)
            self._code_start(cid)

    # -- notes --------------------------------------------------------------------------
    def _expand(self, first: str, last: str) -> list[str]:
        """Codes of a range in tabular order: the largest subtrees lying wholly in it.

        For endpoints at the same level this is the existing codes of that level from ``first``
        to ``last`` (``E08-E13`` -> E08, E09, E10, E11, E13); for mixed levels
        (``Z95.811-Z97``) the codes from ``first`` up to the end of ``last``'s subtree.
        """
        i, j = self.code_pos.get(first), self.code_pos.get(last)
        if i is None or j is None or j < i:
            return []
        stop = self.code_end[j]
        out, k = [], i
        while k <= stop:
            if self.code_end[k] <= stop:
                out.append(self.codes[k])
                k = self.code_end[k] + 1
            else:
                k += 1
        return out

    def note_relations(self) -> tuple[list[Relation], Counter[str]]:
        """Resolve the pending notes into relations; count and return the dropped targets."""
        relations: list[Relation] = []
        dropped: Counter[str] = Counter()
        for src, relation, text in self.pending:
            found: list[tuple[str, str | None]] = []
            spans: list[tuple[int, int]] = []
            for ref in parse_note(text):
                first = standardize(ref.first, SYSTEM)
                if ref.last is None:
                    targets = [first] if first in self.index else []
                else:
                    targets = self._expand(first, standardize(ref.last, SYSTEM))
                if not targets:
                    dropped[ref.text] += 1
                    logger.debug("%s %s: no code %s in the tabular (%r)", src, relation, ref.text, text)
                    continue
                spans.append((ref.start, ref.end))
                found.extend((t, ref.text if ref.last else None) for t in targets)
            if not found:
                continue
            rest = _unparsed(text, spans)
            seen: set[str] = set()
            for dst, rng in found:
                if dst in seen:
                    continue
                seen.add(dst)
                attrs: dict[str, Any] = {"text": text, "unparsed": rest}
                if rng is not None:
                    attrs["range"] = rng
                relations.append(
                    Relation(src=src, dst=dst, relation=relation, source=ICD10CMSource.name, attrs=attrs)
                )
        return relations, dropped


@register_source
class ICD10CMSource(OntologySource):
    """ICD-10-CM concepts and relations from a CDC tabular XML file.

    The file is parsed once, on first use, and kept; :attr:`stats` then holds the counts:
    ``{"concepts": {kind: n}, "relations": {relation: n}, "dropped_targets": n,
    "skipped_codes": n}`` (``dropped_targets``: codes or ranges named in notes that are not in
    the tabular; ``skipped_codes``: tabular entries whose code
    :func:`~ontologies.codes.standardize` rejects, skipped with their subtree and logged).

    Args:
        xml_path: the CDC tabular XML; by default the one bundled in the simple-icd-10-cm
            package (``icd10c-tabular-April-1-2026.xml``).

    Example:
        >>> src = ICD10CMSource("tests/fixtures/icd10cm_mini.xml")
        >>> next(c for c in src.concepts() if c.id == "ICD10CM:S72.001A").title
        'Fracture of unspecified part of neck of right femur, initial encounter for closed fracture'
    """

    name = "icd10cm"

    def __init__(self, xml_path: str | Path | None = None) -> None:
        self.path = Path(xml_path) if xml_path is not None else _default_xml()
        self.stats: dict[str, Any] = {}
        self._loaded: _Loaded | None = None

    def concepts(self) -> Iterator[Concept]:
        """Yield chapters, blocks, categories, codes and extensions, in tabular order.

        Returns:
            An iterator over the concepts.
        """
        yield from self._load().concepts

    def relations(self) -> Iterator[Relation]:
        """Yield the ``is_a`` relations, then the relations parsed from notes.

        Returns:
            An iterator over the relations.
        """
        yield from self._load().relations

    def info(self) -> SourceInfo:
        """Name, version (``<version>`` and file name) and checksum of the file read.

        Returns:
            The source info, e.g. version ``"2026 (icd10c-tabular-April-1-2026.xml)"``.
        """
        loaded = self._load()
        return SourceInfo(
            name=self.name,
            version=f"{loaded.version} ({self.path.name})",
            files=[file_sha256(self.path)],
        )

    def _load(self) -> _Loaded:
        """Parse the file (once) into concepts and relations."""
        if self._loaded is not None:
            return self._loaded
        started = time.perf_counter()
        # ~250k acyclic objects: the cyclic GC would only rescan them (a third of the time).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._loaded = self._parse()
        finally:
            if gc_was_enabled:
                gc.enable()
        logger.info(
            "%s: %d concepts, %d relations in %.2f s",
            self.path.name,
            len(self._loaded.concepts),
            len(self._loaded.relations),
            time.perf_counter() - started,
        )
        return self._loaded

    def _parse(self) -> _Loaded:
        """Read the XML into concepts and relations, and fill :attr:`stats`."""
        path = self.path
        if not path.is_file():
            raise SourceFormatError(path, None, "the ICD-10-CM tabular XML file does not exist")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            raise SourceFormatError(path, line, f"truncated or malformed XML ({exc})") from None
        if root.tag != "ICD10CM.tabular":
            raise SourceFormatError(
                path, 1, f"not an ICD-10-CM tabular file: root element is <{root.tag}>, not <ICD10CM.tabular>"
            )
        version = (root.findtext("version") or "").strip() or "unknown"

        builder = _Builder(path, root)
        chapters = root.findall("chapter")
        if not chapters:
            raise SourceFormatError(path, None, "no <chapter> element: not an ICD-10-CM tabular file")
        for chapter in chapters:
            builder.visit(chapter, None, None)

        relations = [
            Relation(src=c.id, dst=p, relation="is_a", source=self.name)
            for c, p in zip(builder.concepts, builder.parents, strict=True)
            if p is not None
        ]
        notes, dropped = builder.note_relations()
        relations.extend(notes)

        self.stats = {
            "concepts": dict(Counter(c.kind for c in builder.concepts)),
            "relations": dict(Counter(r.relation for r in relations)),
            "dropped_targets": sum(dropped.values()),
            "skipped_codes": builder.skipped_count,
        }
        if dropped:
            logger.info(
                "%s: dropped %d note target(s) not in the tabular: %s",
                path.name,
                sum(dropped.values()),
                ", ".join(f"{code} (x{n})" if n > 1 else code for code, n in sorted(dropped.items())),
            )
        return _Loaded(builder.concepts, relations, version)
