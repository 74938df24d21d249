"""Shared fixtures. Tests never reach a model or dataset hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def _shared_data() -> Path | None:
    env = os.environ.get("KGCODE_DATA_DIR")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the small hand-written fixture files."""
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder (``../shared/data`` or ``$KGCODE_DATA_DIR``); skips when absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("real data folder ../shared/data (or $KGCODE_DATA_DIR) is absent")
    return path


@pytest.fixture(scope="session")
def real_build(data_dir: Path):  # noqa: ANN201 - kgcode.pipeline.BuildResult, imported lazily
    """The default KG built once per test session from the real code systems and data folder.

    Shared by every real-data test: treat it as read-only.
    """
    from kgcode.pipeline import build_default_kg

    return build_default_kg(data_dir, progress=False)


@pytest.fixture(scope="session")
def real_kg(real_build):  # noqa: ANN001, ANN201 - see real_build
    """The real KnowledgeGraph of :func:`real_build` (read-only)."""
    return real_build.kg
