"""Run every benchmark under bench/ (``make bench``); each writes JSON to bench/results/."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("bench")


def main() -> int:
    """Run ``bench/bench_*.py`` in name order; stop at the first failure."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    here = Path(__file__).resolve().parent
    for script in sorted(here.glob("bench_*.py")):
        logger.info("==> %s", script.name)
        rc = subprocess.call([sys.executable, str(script)], cwd=here.parent)
        if rc != 0:
            logger.error("%s failed with exit code %d", script.name, rc)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
