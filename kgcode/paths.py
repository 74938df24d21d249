"""Where kgcode keeps its files: the user cache dir, the last built KG, the data folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "default_data_dir",
    "default_kg_dir",
    "last_kg_dir",
    "remember_kg",
]


def cache_dir() -> Path:
    """The user's kgcode cache folder.

    ``$KGCODE_HOME`` when set, else ``$XDG_CACHE_HOME/kgcode``, else ``~/.cache/kgcode``.

    Returns:
        The folder (not created here).
    """
    env = os.environ.get("KGCODE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kgcode"


def default_kg_dir() -> Path:
    """Where ``kgcode kg build`` writes when no ``--out`` is given."""
    return cache_dir() / "kg" / "default"


def _pointer() -> Path:
    return cache_dir() / "last_kg.txt"


def remember_kg(path: str | Path) -> None:
    """Record ``path`` as the last built KG (atomically).

    Args:
        path: the KG folder just written.
    """
    pointer = _pointer()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.tmp-{os.getpid()}")
    tmp.write_text(str(Path(path).resolve()) + "\n", encoding="utf-8")
    os.replace(tmp, pointer)


def last_kg_dir() -> Path | None:
    """The last KG built on this machine, or ``None`` when there is none."""
    pointer = _pointer()
    if pointer.is_file():
        path = Path(pointer.read_text(encoding="utf-8").strip())
        if path.is_dir():
            return path
    fallback = default_kg_dir()
    return fallback if fallback.is_dir() else None


def default_data_dir() -> Path | None:
    """The open data folder: ``$KGCODE_DATA_DIR``, else ``../shared/data`` when it exists.

    ``../shared/data`` is looked up from the current folder, then from the source checkout.

    Returns:
        The folder, or ``None`` when none exists.
    """
    env = os.environ.get("KGCODE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None
