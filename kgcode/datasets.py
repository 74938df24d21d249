"""Reading coded clinical notes: CodiEsp, JSON lines, MIMIC (III or IV), PubTator (NCBI disease).

Every reader returns ``(notes, report)``: a list of :class:`Note` (text plus system-qualified gold
codes, normalised with :func:`ontologies.codes.standardize`) and a :class:`DatasetReport` that
counts notes and codes and lists every row that could not be used, with its file, line and reason.
A bad row never stops a read; the report says what was skipped.

Example:
    >>> notes, report = read_dataset("tests/fixtures/codiesp_mini")  # doctest: +SKIP
    >>> notes[0].codes                                                 # doctest: +SKIP
    ['ICD10CM:N44.8', 'ICD10CM:R52']
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ontologies.codes import InvalidCodeError, canonical_system, standardize

__all__ = [
    "DatasetReport",
    "InvalidRow",
    "Note",
    "code_counts",
    "read_codiesp",
    "read_dataset",
    "read_jsonl",
    "read_mimic",
    "read_pubtator",
    "silver_icd10cm",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class Note:
    """One clinical note and its gold codes.

    Attributes:
        id: the note's identifier (CodiEsp case id, JSONL ``id``, MIMIC ``hadm_id``).
        text: the note text, as read.
        codes: system-qualified gold codes (``ICD10CM:E11.9``, ``ICD9CM:250.00``), in file order,
            without duplicates; empty for an unlabelled note.
    """

    id: str
    text: str
    codes: list[str] = field(default_factory=list)


@dataclass
class InvalidRow:
    """A row that was skipped (or a code that was dropped from a note).

    Attributes:
        file: the file it is in.
        line: 1-based line number (for CSV: the line the record starts on); ``None`` when not known.
        reason: what is wrong, in words.
    """

    file: str
    line: int | None
    reason: str


@dataclass
class DatasetReport:
    """What a reader read.

    Attributes:
        source: the path read.
        n_notes: notes returned.
        n_codes: code assignments (note, code) in the notes returned, after normalisation and
            de-duplication.
        n_distinct: distinct codes among them.
        invalid: rows or codes skipped, with reasons.
        counts: other tallies (e.g. ``duplicate_codes``, ``notes_without_codes``,
            ``diagnoses_without_note``).
    """

    source: str
    n_notes: int = 0
    n_codes: int = 0
    n_distinct: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, file: PathLike, line: int | None, reason: str) -> None:
        """Record a skipped row."""
        self.invalid.append(InvalidRow(str(file), line, reason))

    def tally(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self.counts[name] = self.counts.get(name, 0) + n

    def finish(self, notes: list[Note]) -> DatasetReport:
        """Fill the note and code counts from ``notes``; returns ``self``."""
        self.n_notes = len(notes)
        self.n_codes = sum(len(n.codes) for n in notes)
        self.n_distinct = len({c for n in notes for c in n.codes})
        empty = sum(1 for n in notes if not n.codes)
        if empty:
            self.counts["notes_without_codes"] = empty
        if self.invalid:
            logger.warning("%s: %d invalid rows (first: %s)", self.source, len(self.invalid), self.invalid[0])
        return self

    def summary(self) -> str:
        """One line for logs."""
        extra = "".join(f", {k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.source}: {self.n_notes} notes, {self.n_codes} codes ({self.n_distinct} distinct), "
            f"{len(self.invalid)} invalid{extra}"
        )


def _add_code(note: Note, code: str, seen: dict[str, set[str]], report: DatasetReport) -> None:
    known = seen.setdefault(note.id, set(note.codes))
    if code in known:
        report.tally("duplicate_codes")
        return
    known.add(code)
    note.codes.append(code)


# --------------------------------------------------------------------------- CodiEsp


def read_codiesp(split_dir: PathLike, *, lang: str = "en") -> tuple[list[Note], DatasetReport]:
    """Read one CodiEsp split folder (``train``, ``dev``, or any folder in that layout).

    The folder holds ``text_files_en/<case>.txt`` (English, one sentence a line; ``text_files/`` for
    ``lang="es"``) and one ``*D.tsv`` (``case id<TAB>code``, lower-case dotted ICD-10 diagnosis
    codes). Codes are normalised with ``standardize(code, "ICD10CM")``. Notes without codes are kept;
    codes of a case with no text file and malformed codes are reported.

    Args:
        split_dir: the split folder.
        lang: ``"en"`` (machine translation) or ``"es"`` (original Spanish).

    Returns:
        Notes sorted by case id, and the report.

    Raises:
        FileNotFoundError: the text folder or the ``*D.tsv`` is missing.
    """
    if lang not in ("en", "es"):
        raise ValueError(f"unknown CodiEsp language {lang!r}: expected 'en' or 'es'")
    root = Path(split_dir)
    text_dir = root / ("text_files_en" if lang == "en" else "text_files")
    if not text_dir.is_dir():
        raise FileNotFoundError(f"CodiEsp split {str(root)!r} has no {text_dir.name}/ folder")
    tsvs = sorted(root.glob("*D.tsv"))
    if len(tsvs) != 1:
        found = ", ".join(p.name for p in tsvs) or "none"
        raise FileNotFoundError(
            f"CodiEsp split {str(root)!r}: expected exactly one diagnosis file *D.tsv, found {found}"
        )
    report = DatasetReport(source=str(root))
    notes = {
        p.stem: Note(id=p.stem, text=p.read_text(encoding="utf-8")) for p in sorted(text_dir.glob("*.txt"))
    }
    seen: dict[str, set[str]] = {}
    with tsvs[0].open(encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
                report.add(tsvs[0], lineno, f"expected 'case id<TAB>code', got {line!r}")
                continue
            case, raw = parts[0].strip(), parts[1].strip()
            if case not in notes:
                report.add(tsvs[0], lineno, f"case {case!r} has no text file in {text_dir.name}/")
                continue
            try:
                code = standardize(raw, "ICD10CM")
            except InvalidCodeError as err:
                report.add(tsvs[0], lineno, str(err))
                continue
            _add_code(notes[case], code, seen, report)
    out = list(notes.values())
    return out, report.finish(out)


# --------------------------------------------------------------------------- JSON lines


def _system_for_line(obj: dict, default_system: str) -> str:
    """The system bare codes of one JSONL record are read in."""
    system = obj.get("system")
    version = obj.get("icd_version")
    from_version = None
    if version is not None:
        if str(version).strip() not in ("9", "10"):
            raise ValueError(f"icd_version {version!r}: expected 9 or 10")
        from_version = "ICD9CM" if str(version).strip() == "9" else "ICD10CM"
    if system is not None:
        if not isinstance(system, str):
            raise ValueError(f"system {system!r}: expected a string such as 'ICD10CM'")
        name = canonical_system(system)
        if from_version and from_version != name:
            raise ValueError(f"system {system!r} disagrees with icd_version {version!r}")
        return name
    return from_version or default_system


def _standardize_any(raw: str, system: str) -> str:
    """A prefixed code keeps its own system (a prefix wins); a bare code is read in ``system``."""
    if ":" in raw or "_" in raw:  # ICD codes never hold either: it is a prefix
        return standardize(raw)
    return standardize(raw, system)


def read_jsonl(path: PathLike, *, default_system: str = "ICD10CM") -> tuple[list[Note], DatasetReport]:
    """Read notes from a JSON-lines file.

    Each line is ``{"id": ..., "text": ..., "codes": [...]}``. Codes may carry a system prefix
    (``ICD9CM:250.00``), which wins over the line's declared system; bare codes are read in the
    line's ``system`` (``"ICD9CM"``) or ``icd_version`` (9 or 10), else in ``default_system``.
    ``codes`` may be missing (an unlabelled note). A missing ``id`` becomes ``"line-<n>"``. Blank
    lines are skipped.

    Lines that are not a JSON object, lack ``text`` or have an empty text, repeat an earlier ``id``
    or name an unknown system are reported and skipped; malformed codes are reported and dropped
    from their note, which is still read. A ``.jsonl.gz`` file is read compressed.

    Args:
        path: the file.
        default_system: the system of bare codes on lines that declare none.

    Returns:
        Notes in file order, and the report.
    """
    path = Path(path)
    default_system = canonical_system(default_system)
    report = DatasetReport(source=str(path))
    notes: list[Note] = []
    ids: set[str] = set()
    seen: dict[str, set[str]] = {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                report.add(path, lineno, f"not JSON ({err})")
                continue
            if not isinstance(obj, dict):
                report.add(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
                continue
            text = obj.get("text")
            if text is None:
                report.add(path, lineno, "missing 'text'")
                continue
            if not isinstance(text, str):
                report.add(path, lineno, f"'text' is {type(text).__name__}, expected a string")
                continue
            if not text.strip():
                report.add(path, lineno, "empty 'text'")
                continue
            raw_id = obj.get("id")
            note_id = f"line-{lineno}" if raw_id is None or str(raw_id).strip() == "" else str(raw_id)
            if note_id in ids:
                report.add(path, lineno, f"duplicate id {note_id!r}")
                continue
            try:
                system = _system_for_line(obj, default_system)
            except (ValueError, InvalidCodeError) as err:
                report.add(path, lineno, str(err))
                continue
            codes = obj.get("codes") or []
            if isinstance(codes, str):
                codes = [codes]
            if not isinstance(codes, list):
                report.add(path, lineno, f"'codes' is {type(codes).__name__}, expected a list")
                continue
            note = Note(id=note_id, text=text)
            for raw in codes:
                try:
                    _add_code(note, _standardize_any(str(raw), system), seen, report)
                except InvalidCodeError as err:
                    report.add(path, lineno, str(err))
            ids.add(note_id)
            notes.append(note)
    return notes, report.finish(notes)


# --------------------------------------------------------------------------- MIMIC


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return path.open(encoding="utf-8", newline="")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV with lower-cased column names, with the line each record starts on."""
    # Discharge summaries exceed csv's 128 KiB field limit; the old limit is restored afterwards.
    old = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            start = reader.line_num + 1
            for row in reader:
                yield start, dict(zip(header, row, strict=False))
                start = reader.line_num + 1
    finally:
        csv.field_size_limit(old)


def _require(path: Path, columns: Iterable[str], alternatives: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Map each needed column to the name used in ``path``'s header."""
    with _open_text(path) as fh:
        header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    found: dict[str, str] = {}
    for col in columns:
        for name in (col, *alternatives.get(col, ())):
            if name in header:
                found[col] = name
                break
        else:
            names = " or ".join((col, *alternatives.get(col, ())))
            raise ValueError(f"{str(path)!r} has no column {names} (columns: {', '.join(header)})")
    return found


def read_mimic(notes_csv: PathLike, diagnoses_csv: PathLike) -> tuple[list[Note], DatasetReport]:
    """Read MIMIC notes and their admissions' diagnosis codes.

    ``notes_csv`` needs ``hadm_id`` and ``text`` (MIMIC-IV ``discharge.csv``, MIMIC-III
    ``NOTEEVENTS.csv``; column names in any case). ``diagnoses_csv`` needs ``hadm_id``, ``icd_code``
    and ``icd_version`` (MIMIC-IV ``diagnoses_icd.csv``: 9 -> ``ICD9CM``, 10 -> ``ICD10CM``), or
    ``icd9_code`` (MIMIC-III, all ICD-9-CM). Undotted codes (``4019``, ``E119``) are normalised with
    :func:`~ontologies.codes.standardize`. Several notes of one admission are joined, in file order,
    with a blank line between them; the note id is the ``hadm_id``. ``.csv.gz`` files are read
    compressed. Diagnoses of admissions without a note are counted (``diagnoses_without_note``).

    Args:
        notes_csv: the notes table.
        diagnoses_csv: the diagnoses table.

    Returns:
        Notes in order of first appearance, and the report.
    """
    notes_path, diag_path = Path(notes_csv), Path(diagnoses_csv)
    report = DatasetReport(source=f"{notes_path} + {diag_path}")
    ncol = _require(notes_path, ("hadm_id", "text"), {})
    texts: dict[str, list[str]] = {}
    for n, row in _csv_rows(notes_path):
        hadm = _hadm(row.get(ncol["hadm_id"], ""))
        text = row.get(ncol["text"], "")
        if not hadm:
            report.add(notes_path, n, "missing hadm_id")
            continue
        if not text.strip():
            report.add(notes_path, n, f"empty text for hadm_id {hadm}")
            continue
        texts.setdefault(hadm, []).append(text)
    notes = {h: Note(id=h, text="\n\n".join(parts)) for h, parts in texts.items()}
    merged = sum(len(p) - 1 for p in texts.values())
    if merged:
        report.tally("notes_merged", merged)

    with _open_text(diag_path) as fh:
        header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    mimic3 = "icd9_code" in header and "icd_code" not in header
    dcol = _require(diag_path, ("hadm_id",) + (("icd9_code",) if mimic3 else ("icd_code", "icd_version")), {})
    seen: dict[str, set[str]] = {}
    for n, row in _csv_rows(diag_path):
        hadm = _hadm(row.get(dcol["hadm_id"], ""))
        if mimic3:
            raw, version = row.get(dcol["icd9_code"], ""), "9"
        else:
            raw, version = row.get(dcol["icd_code"], ""), row.get(dcol["icd_version"], "").strip()
        if not hadm:
            report.add(diag_path, n, "missing hadm_id")
            continue
        if version not in ("9", "10"):
            report.add(diag_path, n, f"icd_version {version!r}: expected 9 or 10")
            continue
        if hadm not in notes:
            report.tally("diagnoses_without_note")
            continue
        try:
            code = standardize(raw, "ICD9CM" if version == "9" else "ICD10CM")
        except InvalidCodeError as err:
            report.add(diag_path, n, str(err))
            continue
        _add_code(notes[hadm], code, seen, report)
    out = list(notes.values())
    return out, report.finish(out)


def _hadm(value: str) -> str:
    """``hadm_id`` as written, without a float's ``.0`` (pandas exports write ``123.0``)."""
    value = value.strip()
    if value.endswith(".0") and value[:-2].isdigit():
        return value[:-2]
    return value


# --------------------------------------------------------------------------- dispatch


def _find_csv(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


# --------------------------------------------------------------------------- PubTator (NCBI disease)


def read_pubtator(path: PathLike) -> tuple[list[Note], DatasetReport]:
    """Read a PubTator file (the NCBI disease corpus): title + abstract, disease mentions' ids.

    Each document is ``PMID|t|title``, ``PMID|a|abstract`` and one tab-separated line per mention
    (``PMID, start, end, text, type, ids``); ``ids`` are MeSH (``D012345``) or OMIM
    (``OMIM:123456``) ids, several joined by ``|`` or ``+``. The note's codes are those ids,
    system-qualified (``MESH:D012345``, ``OMIM:123456``), in order, without duplicates; map them to
    ICD-10-CM with :func:`silver_icd10cm`.

    Args:
        path: the ``.txt`` file.

    Returns:
        ``(notes, report)``; the text is ``title + "\n" + abstract``.
    """
    p = Path(path)
    report = DatasetReport(str(p))
    notes: dict[str, Note] = {}
    parts: dict[str, dict[str, str]] = {}
    seen: dict[str, set[str]] = {}
    with open(p, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            if "|t|" in line[:20] or "|a|" in line[:20]:
                pmid, kind, text = line.split("|", 2)
                parts.setdefault(pmid, {})[kind] = text
                notes.setdefault(pmid, Note(pmid, ""))
                continue
            cols = line.split("\t")
            if len(cols) < 6 or cols[0] not in notes:
                report.add(p, lineno, "expected a title/abstract line or a 6-column mention line")
                continue
            for raw_id in cols[5].replace("+", "|").split("|"):
                raw_id = raw_id.strip()
                if not raw_id:
                    continue
                code = raw_id if raw_id.startswith("OMIM:") else f"MESH:{raw_id.removeprefix('MESH:')}"
                _add_code(notes[cols[0]], code, seen, report)
    for pmid, note in notes.items():
        note.text = "\n".join(t for t in (parts[pmid].get("t"), parts[pmid].get("a")) if t)
    return list(notes.values()), report.finish(list(notes.values()))


def silver_icd10cm(
    notes: Iterable[Note], kg: object, *, matches: Collection[str] = ("exact", "dbxref")
) -> tuple[list[Note], DatasetReport]:
    """Map MeSH / OMIM-coded notes to ICD-10-CM through the KG's Disease Ontology and Mondo links.

    An id maps to the ICD-10-CM categories and codes that a DO or Mondo concept cross-referencing it
    (``xref`` with a match in ``matches``) also cross-references, the concept's ``equivalent``
    DO/Mondo twin included. Ids with no such path are dropped (counted in the report).

    Args:
        notes: notes whose codes are ``MESH:``/``OMIM:`` ids (e.g. from :func:`read_pubtator`).
        kg: a :class:`kg.graph.KnowledgeGraph`.
        matches: the cross-reference match types followed, both hops.

    Returns:
        ``(notes, report)``: new notes with ICD-10-CM codes (a note may end up with none);
        ``counts`` has ``ids_mapped`` and ``ids_unmapped``.
    """
    g = kg.graph  # type: ignore[attr-defined]
    wanted = set(matches)
    cache: dict[str, list[str]] = {}

    def concepts(node: str) -> set[str]:
        found = set()
        for src, keydict in g._pred.get(node, {}).items():
            data = keydict.get("xref")
            if data is not None and data.get("attrs", {}).get("match") in wanted:
                found.add(src)
        for c in list(found):
            for other, keydict in {**g._succ.get(c, {}), **g._pred.get(c, {})}.items():
                if "equivalent" in keydict:
                    found.add(other)
        return found

    def icd(node: str) -> list[str]:
        if node not in cache:
            out: list[str] = []
            for c in sorted(concepts(node)):
                for dst, keydict in g._succ.get(c, {}).items():
                    data = keydict.get("xref")
                    if (data is not None and dst.startswith("ICD10CM:") and dst not in out
                            and g.nodes[dst].get("kind") in ("category", "code")
                            and data.get("attrs", {}).get("match") in wanted):
                        out.append(dst)
            cache[node] = out
        return cache[node]

    report = DatasetReport("silver ICD-10-CM via DO/Mondo")
    out_notes = []
    for note in notes:
        codes: list[str] = []
        for code in note.codes:
            mapped = icd(code) if code in g else []
            report.tally("ids_mapped" if mapped else "ids_unmapped")
            codes += [c for c in mapped if c not in codes]
        out_notes.append(Note(note.id, note.text, codes))
    return out_notes, report.finish(out_notes)


def read_dataset(path: PathLike, **kwargs: object) -> tuple[list[Note], DatasetReport]:
    """Read a dataset, choosing the reader from what ``path`` is.

    * a folder with ``text_files_en/`` (or ``text_files/``) and a ``*D.tsv``: :func:`read_codiesp`;
    * a ``.jsonl`` (or ``.jsonl.gz``) file: :func:`read_jsonl`;
    * a folder with ``notes.csv`` and ``diagnoses.csv`` (or ``.csv.gz``): :func:`read_mimic`;
    * a PubTator ``.txt`` file (NCBI disease): :func:`read_pubtator` (MeSH/OMIM ids; see
      :func:`silver_icd10cm`).

    Args:
        path: the file or folder.
        **kwargs: passed to the reader (e.g. ``lang="es"``, ``default_system="ICD9CM"``).

    Returns:
        ``(notes, report)``.

    Raises:
        ValueError: ``path`` matches none of the layouts (the message lists them).
    """
    p = Path(path)
    if p.is_file() and (p.name.endswith(".jsonl") or p.name.endswith(".jsonl.gz")):
        return read_jsonl(p, **kwargs)  # type: ignore[arg-type]
    if p.is_file() and p.suffix == ".txt" and _is_pubtator(p):
        return read_pubtator(p)
    if p.is_dir():
        if any(p.glob("*D.tsv")) and ((p / "text_files_en").is_dir() or (p / "text_files").is_dir()):
            return read_codiesp(p, **kwargs)  # type: ignore[arg-type]
        notes_csv, diag_csv = _find_csv(p, "notes"), _find_csv(p, "diagnoses")
        if notes_csv and diag_csv:
            return read_mimic(notes_csv, diag_csv)
    raise ValueError(
        f"cannot tell what dataset {str(p)!r} is: expected a CodiEsp split folder (text_files_en/ and "
        "*D.tsv), a .jsonl file, a folder with notes.csv and diagnoses.csv, or a PubTator .txt file"
    )


def _is_pubtator(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return "|t|" in line[:20]
    return False


def code_counts(notes: Iterable[Note]) -> Counter[str]:
    """How many notes carry each code (e.g. training frequencies for :func:`kgcode.metrics.bucket_metrics`).

    Args:
        notes: the notes.

    Returns:
        ``Counter`` from code id to number of notes.
    """
    return Counter(c for n in notes for c in n.codes)
