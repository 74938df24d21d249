"""What every ``kgcode`` command shares: the ``--kg`` option, loading the KG, user errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kgcode import paths as kg_paths

__all__ = ["kg_option", "load_kg_option", "user_errors"]


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause: reported as one line with exit code 2, never a traceback."""
    from kg.errors import KGFormatError, UnknownCodeError
    from ontologies import InvalidCodeError, SourceFormatError

    return (InvalidCodeError, UnknownCodeError, SourceFormatError, KGFormatError, FileNotFoundError,
            FileExistsError)


def kg_option(func: Any) -> Any:
    """The ``--kg DIR`` option of every command that reads a KG."""
    return click.option(
        "--kg",
        "kg_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="KG folder (default: the last KG built on this machine).",
    )(func)


def load_kg_option(kg_dir: Path | None) -> Any:
    """Load the KG named by ``--kg``, or the last one built.

    Raises:
        click.UsageError: no ``--kg`` and no KG built yet.
    """
    from kg import load_kg

    if kg_dir is None:
        kg_dir = kg_paths.last_kg_dir()
        if kg_dir is None:
            raise click.UsageError("no KG built yet: run `kgcode kg build` first or pass --kg DIR")
    return load_kg(kg_dir)
