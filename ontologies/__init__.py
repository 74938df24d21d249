"""Ontology loaders: each code system or mapping source is one :class:`OntologySource`.

Importing this package registers the built-in sources in :data:`ontology_registry`.
"""

# Importing the modules registers their sources.
from ontologies import doid, gems, icd9cm, icd10cm, mondo, owl, snomed_rf2, umls_owlready  # noqa: E402, F401, I001
from ontologies.base import (
    RELATIONS,
    Concept,
    OntologySource,
    Relation,
    SourceFile,
    SourceFormatError,
    SourceInfo,
)
from ontologies.codes import SYSTEMS, InvalidCodeError, split_id, standardize, try_standardize
from ontologies.registry import ontology_registry, register_source, resolve_source

__all__ = [
    "RELATIONS",
    "SYSTEMS",
    "Concept",
    "InvalidCodeError",
    "OntologySource",
    "Relation",
    "SourceFile",
    "SourceFormatError",
    "SourceInfo",
    "ontology_registry",
    "register_source",
    "resolve_source",
    "split_id",
    "standardize",
    "try_standardize",
]
