"""Compose the parts: which sources make the default KG, and building it end to end."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ontologies import OntologySource, resolve_source

if TYPE_CHECKING:
    from kg import KnowledgeGraph

__all__ = ["BuildResult", "build_default_kg", "default_sources"]

logger = logging.getLogger(__name__)


def default_sources(
    data_dir: str | Path | None,
    *,
    icd10cm_xml: str | Path | None = None,
    extra_sources: Sequence[OntologySource] = (),
) -> tuple[list[OntologySource], list[str]]:
    """The sources of the default KG.

    ICD-10-CM (CDC tabular XML), ICD-9-CM and the CMS GEMs always; Disease Ontology and Mondo
    when ``data_dir`` holds their folders (``doid/``, ``mondo/``).

    Args:
        data_dir: the open data folder (``../shared/data``), or ``None``.
        icd10cm_xml: a CDC ICD-10-CM tabular XML to use instead of the bundled April 2026 one.
        extra_sources: more sources, appended (e.g. a user's licensed SNOMED CT RF2 snapshot).

    Returns:
        ``(sources, left_out)``: the sources, and one line per source left out and why.
    """
    sources: list[OntologySource] = [
        resolve_source("icd10cm", xml_path=icd10cm_xml),
        resolve_source("icd9cm"),
        resolve_source("gem"),
    ]
    left_out: list[str] = []
    for name, folder in (("doid", "doid"), ("mondo", "mondo")):
        where = Path(data_dir) / folder if data_dir is not None else None
        if where is not None and where.is_dir():
            sources.append(resolve_source(name, data_dir=Path(data_dir)))
        else:
            label = "Disease Ontology" if name == "doid" else "Mondo"
            left_out.append(
                f"{label} left out: no folder {where if where else f'<data-dir>/{folder}'}"
                " (no DOID/MONDO concepts and no SNOMED CT ids in this KG)"
            )
    sources.extend(extra_sources)
    return sources, left_out


@dataclass
class BuildResult:
    """What a build produced."""

    kg: KnowledgeGraph
    seconds: float
    left_out: list[str] = field(default_factory=list)


def build_default_kg(
    data_dir: str | Path | None,
    *,
    icd10cm_xml: str | Path | None = None,
    extra_sources: Sequence[OntologySource] = (),
    progress: bool | None = None,
) -> BuildResult:
    """Build the default KG from the real code systems.

    Args:
        data_dir: the open data folder, or ``None`` (ICD-10-CM, ICD-9-CM and GEMs only).
        icd10cm_xml: optional CDC tabular XML path.
        extra_sources: more sources, appended to the default ones.
        progress: show progress bars (``None``: only on a terminal).

    Returns:
        The graph, the build time and what was left out.
    """
    from kg import build_kg

    start = time.perf_counter()
    sources, left_out = default_sources(data_dir, icd10cm_xml=icd10cm_xml, extra_sources=extra_sources)
    for line in left_out:
        logger.info(line)
    kg = build_kg(sources, progress=progress)
    seconds = time.perf_counter() - start
    kg.build_report.setdefault("notes", []).extend(left_out)
    kg.build_report["build_seconds"] = round(seconds, 3)
    return BuildResult(kg=kg, seconds=seconds, left_out=left_out)
