"""kgcode: knowledge-graph-enhanced ICD-10-CM / ICD-9-CM coding of clinical notes.

The top-level packages hold the parts (``ontologies``, ``kg``, ``text_encoder``, ``gnn``,
``fusion``); this package composes them: the pipeline, the command line and the HTTP service.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgcode")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
