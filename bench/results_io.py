"""What the bench scripts share: writing a result file atomically (not a benchmark itself)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench")


def write_result(path: Path, result: Any) -> None:
    """Write ``result`` as indented JSON to ``path`` through a temporary file and a rename, so a
    killed run never leaves half a file.

    Args:
        path: the JSON file (its folder is created).
        result: anything :func:`json.dumps` takes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    logger.info("wrote %s", path)
