"""The on-disk format of a built knowledge graph: a folder with a manifest and one SQLite file.

A KG folder holds:

``manifest.json``
    ``{"format": "kgcode-kg", "format_version": 1, "kgcode_version": ..., "created": <UTC ISO>,
    "build_seconds": ..., "sources": [SourceInfo as dicts, files with path, sha256, size],
    "counts": KnowledgeGraph.stats(), "build_report": {...}}``.

``graph.sqlite``
    Readable from any language and from the ``sqlite3`` shell, and queryable without loading
    the whole graph::

        CREATE TABLE meta  (key TEXT PRIMARY KEY, value TEXT);   -- format, format_version,
                                                                  -- kgcode_version, created
        CREATE TABLE nodes (
            id       TEXT PRIMARY KEY,  -- system-qualified id, e.g. 'ICD10CM:E11.9'
            system   TEXT,              -- 'ICD10CM', 'ICD9CM', 'DOID', 'MONDO', 'SCTID', ...
            kind     TEXT,              -- 'chapter', 'block', 'category', 'code', 'concept', ...
            title    TEXT,              -- preferred label ('' for SNOMED CT ids)
            billable INTEGER,           -- 0 or 1
            synonyms TEXT,              -- JSON list of strings, '' when none
            attrs    TEXT,              -- JSON object, '' when empty
            sources  TEXT               -- JSON list of source names, '' when none
        );
        CREATE TABLE edges (
            src      TEXT,              -- nodes.id
            dst      TEXT,              -- nodes.id
            relation TEXT,              -- 'is_a', 'excludes1', ..., 'xref', 'equivalent'
            source   TEXT,              -- the first source that gave the edge
            attrs    TEXT               -- JSON object ('' when empty): provenance, match type,
                                        -- note text, GEM flags; 'sources' when several gave it
        );
        CREATE INDEX edges_src ON edges (src);
        CREATE INDEX edges_dst ON edges (dst);

    Rows are in insertion order (``rowid``). JSON values come back as JSON types (a tuple in
    ``attrs`` comes back as a list).

``node_index.json``
    The deterministic node order of :class:`kg.pyg.NodeIndex` for this graph (sorted by system,
    then id), for GNN training that must name its rows.

Nothing is pickled. Saving writes a new folder beside the target (``.<name>.tmp-<pid>``),
fsyncs it, then swaps it in with renames, so a crash or an error midway leaves the previous KG
intact.

Example:
    >>> save_kg(kg, "out/kg")  # doctest: +SKIP
    >>> kg = load_kg("out/kg")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.errors import KGFormatError
from kg.graph import KnowledgeGraph, gc_paused

if TYPE_CHECKING:
    from kg.pyg import NodeIndex

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GRAPH_FILE",
    "MANIFEST_FILE",
    "NODE_INDEX_FILE",
    "atomic_folder",
    "load_kg",
    "save_kg",
]

logger = logging.getLogger(__name__)

FORMAT = "kgcode-kg"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GRAPH_FILE = "graph.sqlite"
NODE_INDEX_FILE = "node_index.json"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE nodes (id TEXT PRIMARY KEY, system TEXT, kind TEXT, title TEXT, billable INTEGER,
                    synonyms TEXT, attrs TEXT, sources TEXT);
CREATE TABLE edges (src TEXT, dst TEXT, relation TEXT, source TEXT, attrs TEXT);
"""
_INDEXES = """
CREATE INDEX edges_src ON edges (src);
CREATE INDEX edges_dst ON edges (dst);
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a KG (attrs must be JSON values): {value!r}")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode


def kgcode_version() -> str:
    """The installed kgcode version, or ``0+unknown``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("kgcode")
    except (ImportError, PackageNotFoundError):
        return "0+unknown"


# ---------------------------------------------------------------------- saving


def save_kg(kg: KnowledgeGraph, path: str | Path, *, node_index: NodeIndex | None = None) -> Path:
    """Save a knowledge graph to a folder, atomically.

    Everything is written to ``.<name>.tmp-<pid>`` beside the target and fsynced; then an
    existing target is renamed to ``.<name>.old-<pid>``, the new folder renamed to the target,
    and the old one removed. On any error the temporary folder is removed and the previous KG
    is left as it was.

    Args:
        kg: the graph.
        path: the KG folder to write (created or replaced).
        node_index: the node order to store as ``node_index.json`` (default:
            :meth:`kg.pyg.NodeIndex.from_kg`).

    Returns:
        The folder.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder that is not a KG folder
            (never replaced, so a wrong path cannot delete unrelated files).
        TypeError: a node or edge attr is not a JSON value.
    """
    from kg.pyg import NodeIndex

    start = time.perf_counter()
    target = Path(path).absolute()
    _check_replaceable(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}"
    old = parent / f".{target.name}.old-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        version = kgcode_version()
        _write_graph(kg, tmp / GRAPH_FILE, created=created, version=version)
        index = node_index if node_index is not None else NodeIndex.from_kg(kg)
        index.save(tmp / NODE_INDEX_FILE)
        _write_manifest(kg, tmp / MANIFEST_FILE, created=created, version=version)
        _fsync_dir(tmp)
        _swap(tmp, target, old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "saved KG (%d nodes, %d edges) to %s in %.2f s",
        kg.number_of_nodes(),
        kg.number_of_edges(),
        target,
        time.perf_counter() - start,
    )
    return target


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a KG folder: refusing to replace it")
    if (target / MANIFEST_FILE).is_file():
        return
    if any(target.iterdir()):
        raise FileExistsError(
            f"{target} is a folder with files but no {MANIFEST_FILE} (not a KG folder): "
            "refusing to replace it"
        )


def _node_rows(kg: KnowledgeGraph) -> Iterator[tuple[Any, ...]]:
    dumps = _dumps
    for node_id, d in kg.graph._node.items():
        syn, attrs, sources = d.get("synonyms"), d.get("attrs"), d.get("sources")
        yield (
            node_id,
            d["system"],
            d.get("kind") or "concept",
            d.get("title") or "",
            1 if d.get("billable") else 0,
            dumps(syn) if syn else "",
            dumps(attrs) if attrs else "",
            dumps(sources) if sources else "",
        )


def _edge_rows(kg: KnowledgeGraph) -> Iterator[tuple[Any, ...]]:
    dumps = _dumps
    for src, nbrs in kg.graph._succ.items():
        for dst, keydict in nbrs.items():
            for rel, d in keydict.items():
                attrs = d.get("attrs")
                yield (src, dst, rel, d.get("source") or "", dumps(attrs) if attrs else "")


def _write_graph(kg: KnowledgeGraph, file: Path, *, created: str, version: str) -> None:
    con = sqlite3.connect(file)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")  # the file is fsynced once, below
        con.executescript(_SCHEMA)
        con.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("format", FORMAT),
                ("format_version", str(FORMAT_VERSION)),
                ("kgcode_version", version),
                ("created", created),
            ],
        )
        con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _node_rows(kg))
        con.executemany("INSERT INTO edges VALUES (?, ?, ?, ?, ?)", _edge_rows(kg))
        con.executescript(_INDEXES)
        con.commit()
    finally:
        con.close()
    _fsync_file(file)


def _write_manifest(kg: KnowledgeGraph, file: Path, *, created: str, version: str) -> None:
    report = kg.build_report or {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kgcode_version": version,
        "created": created,
        "build_seconds": report.get("build_seconds"),
        "sources": report.get("sources", []),
        "counts": kg.stats(),
        "build_report": report,
    }
    write_json_atomic(file, manifest)


def write_json_atomic(file: str | Path, obj: Any) -> None:
    """Write JSON to ``file`` through a temporary file, fsync and rename (used for small files)."""
    file = Path(file)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_file(file: Path) -> None:
    with file.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a folder atomically: fill the yielded temporary folder; on success it replaces ``target``.

    The files are fsync'ed, then the previous folder (if any) is moved aside and the new one renamed
    into place; on any error the temporary folder is removed and the previous folder is left as it
    was. Used for KGs, coders and the SNOMED CT link predictor alike.

    Args:
        target: the folder to (re)place.

    Yields:
        The temporary folder (a sibling of ``target``) to write into.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                _fsync_file(f)
        _swap(tmp, target, old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, target: Path, old: Path) -> None:
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():  # pragma: no cover
            logger.warning("could not remove the previous KG at %s", old)
    else:
        os.replace(tmp, target)
    _fsync_dir(target.parent)


# ---------------------------------------------------------------------- loading


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check the manifest of a KG folder.

    Args:
        path: the KG folder.

    Returns:
        The manifest.

    Raises:
        FileNotFoundError: the folder does not exist.
        KGFormatError: the folder is not a KG folder, or one of another format version.
    """
    folder = Path(path)
    if not folder.exists():
        hint = ""
        leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.is_dir() else []
        if leftovers:
            hint = f" (a save was interrupted: the previous KG is at {leftovers[-1]})"
        raise FileNotFoundError(2, f"no such KG folder{hint}", str(folder))
    if not folder.is_dir():
        raise KGFormatError(folder, "not a KG folder (it is a file)")
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise KGFormatError(file, f"missing: a KG folder has {MANIFEST_FILE} and {GRAPH_FILE}")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KGFormatError(file, f"not a readable JSON manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise KGFormatError(file, f"format {found!r}, expected {FORMAT!r}")
    found_version = manifest.get("format_version")
    if found_version != FORMAT_VERSION:
        raise KGFormatError(
            file,
            f"format version {found_version}, but this kgcode ({kgcode_version()}) reads version "
            f"{FORMAT_VERSION}: rebuild the KG with `kgcode kg build`",
        )
    return manifest


def load_kg(path: str | Path) -> KnowledgeGraph:
    """Load a KG folder written by :func:`save_kg`.

    Args:
        path: the KG folder.

    Returns:
        The graph, with ``build_report`` and ``manifest`` from the manifest.

    Raises:
        FileNotFoundError: the folder does not exist.
        KGFormatError: a file is missing or unreadable, or of another format version (the
            message names the file and both versions).
    """
    start = time.perf_counter()
    folder = Path(path)
    manifest = read_manifest(folder)
    file = folder / GRAPH_FILE
    if not file.is_file():
        raise KGFormatError(file, f"missing: a KG folder has {MANIFEST_FILE} and {GRAPH_FILE}")
    kg = KnowledgeGraph()
    try:
        con = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:  # pragma: no cover
        raise KGFormatError(file, f"cannot open: {exc}") from None
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        found = meta.get("format_version")
        if found != str(FORMAT_VERSION):
            raise KGFormatError(
                file,
                f"format version {found}, but this kgcode ({kgcode_version()}) reads version "
                f"{FORMAT_VERSION}: rebuild the KG with `kgcode kg build`",
            )
        with gc_paused(freeze=True):
            n_nodes, n_edges = _read_into(kg, con, file)
    except sqlite3.Error as exc:
        raise KGFormatError(file, f"not a readable KG database: {exc}") from None
    finally:
        con.close()
    kg.build_report = manifest.get("build_report") or {}
    kg.manifest = manifest
    logger.info(
        "loaded KG (%d nodes, %d edges) from %s in %.2f s",
        n_nodes,
        n_edges,
        folder,
        time.perf_counter() - start,
    )
    return kg


_ATOMIC = (str, int, float, bool, type(None))


def _read_into(kg: KnowledgeGraph, con: sqlite3.Connection, file: Path) -> tuple[int, int]:
    """Fill an empty graph from the database, one SELECT per table; returns the counts."""
    loads = json.loads
    sources_memo: dict[str, list[str]] = {"": []}
    nodes = []
    for node_id, system, kind, title, billable, syn, attrs, sources in con.execute(
        "SELECT id, system, kind, title, billable, synonyms, attrs, sources FROM nodes ORDER BY rowid"
    ):
        src_list = sources_memo.get(sources)
        if src_list is None:
            src_list = sources_memo[sources] = loads(sources)
        nodes.append(
            (
                node_id,
                {
                    "system": system,
                    "title": title or "",
                    "synonyms": loads(syn) if syn else [],
                    "kind": kind or "concept",
                    "billable": bool(billable),
                    "attrs": loads(attrs) if attrs else {},
                    "sources": list(src_list),
                },
            )
        )
    n_nodes, _ = kg._bulk_insert(nodes, ())
    del nodes
    # Edge attrs repeat a lot (xref match + file, GEM flags): parse each short string once and
    # give every edge its own copy (only when all values are atomic, so nothing is shared).
    attrs_memo: dict[str, dict[str, Any]] = {}
    edges = []
    append = edges.append
    for src, dst, rel, source, attrs in con.execute(
        "SELECT src, dst, relation, source, attrs FROM edges ORDER BY rowid"
    ):
        if attrs:
            cached = attrs_memo.get(attrs)
            if cached is None:
                value = loads(attrs)
                if len(attrs) < 200 and all(type(v) in _ATOMIC for v in value.values()):
                    attrs_memo[attrs] = value
                    value = value.copy()
            else:
                value = cached.copy()
        else:
            value = {}
        append((src, dst, rel, {"relation": rel, "source": source or "", "attrs": value}))
    try:
        _, n_edges = kg._bulk_insert((), edges)
    except KeyError as exc:
        problem = f"an edge names node {exc.args[0]!r}, which is not in the nodes table"
        raise KGFormatError(file, problem) from None
    kg._invalidate()
    return n_nodes, n_edges
