"""The knowledge graph: typed multi-relational graph of the code systems.

* :class:`KnowledgeGraph` (``kg.graph``): the networkx graph and its query API (resolve, lookup,
  hierarchy, neighbours, search, SNOMED CT links, stats).
* :func:`build_kg` (``kg.build``): build it from ontology sources.
* :func:`save_kg` / :func:`load_kg` (``kg.store``): the on-disk KG folder.
* :func:`to_hetero_data` / :func:`to_homogeneous` / :class:`NodeIndex` (``kg.pyg``): the PyTorch
  Geometric export; torch is imported only when an export runs.
"""

from kg.build import build_kg
from kg.errors import KGFormatError, UnknownCodeError
from kg.graph import KnowledgeGraph
from kg.pyg import NodeIndex, to_hetero_data, to_homogeneous
from kg.store import load_kg, save_kg

__all__ = [
    "KGFormatError",
    "KnowledgeGraph",
    "NodeIndex",
    "UnknownCodeError",
    "build_kg",
    "load_kg",
    "save_kg",
    "to_hetero_data",
    "to_homogeneous",
]
