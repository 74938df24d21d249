"""Errors a user of the knowledge graph can cause: an unknown code, a KG folder of another format.

Both are :class:`ValueError` subclasses with a one-line message, so the command line can
report them as one line. A *malformed* code is :class:`ontologies.codes.InvalidCodeError`,
raised as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["KGFormatError", "UnknownCodeError"]


class UnknownCodeError(ValueError):
    """A well-formed code that is not in the knowledge graph.

    It plays the part of a :class:`KeyError` for lookups, but is a :class:`ValueError` so its
    message is shown as written (``KeyError`` quotes its message).

    Attributes:
        code: the system-qualified id that was looked up (``ICD10CM:E11.99``).
        suggestions: up to five nearby ids that are in the graph, nearest first.

    Example:
        >>> str(UnknownCodeError("ICD10CM:E11.99", ["ICD10CM:E11.9", "ICD10CM:E11.69"]))
        "unknown code 'ICD10CM:E11.99': nearest valid codes: ICD10CM:E11.9, ICD10CM:E11.69"
    """

    def __init__(self, code: str, suggestions: Sequence[str] = ()) -> None:
        self.code = code
        self.suggestions: list[str] = list(suggestions)
        if self.suggestions:
            message = f"unknown code {code!r}: nearest valid codes: {', '.join(self.suggestions)}"
        else:
            message = f"unknown code {code!r}: no similar code in the knowledge graph"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[UnknownCodeError], tuple[str, list[str]]]:
        return (type(self), (self.code, self.suggestions))


class KGFormatError(ValueError):
    """A KG folder that cannot be read: a missing file, or a file of another format version.

    Attributes:
        path: the file (or folder) at fault.
        problem: what is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple[type[KGFormatError], tuple[str, str]]:
        return (type(self), (self.path, self.problem))
