"""The registry pattern every family uses, and the built-in ontology sources."""

from __future__ import annotations

import pytest

from ontologies import ontology_registry, resolve_source
from ontologies.registry import Registry


class _Base:
    name = "base"


def test_registry_resolves_names_classes_and_instances() -> None:
    reg: Registry[_Base] = Registry("widget", _Base)

    @reg.register
    class Spoon(_Base):
        name = "spoon"

        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert reg.resolve("spoon", size=3).size == 3
    assert isinstance(reg.resolve(Spoon), Spoon)
    inst = Spoon()
    assert reg.resolve(inst) is inst
    assert "spoon" in reg and reg.names() == ["spoon"] and reg["spoon"] is Spoon
    with pytest.raises(KeyError, match="unknown widget 'fork': known are spoon"):
        reg.resolve("fork")
    with pytest.raises(ValueError, match="registered twice"):

        @reg.register
        class OtherSpoon(_Base):
            name = "spoon"


def test_builtin_sources_are_registered() -> None:
    assert {"icd10cm", "icd9cm", "gem", "doid", "mondo", "owl"} <= set(ontology_registry.names())
    with pytest.raises(KeyError, match="unknown ontology source"):
        resolve_source("no-such-source")
