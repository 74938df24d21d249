"""Registries from a short name to a class (configs store names, never import paths).

:class:`Registry` is the one pattern every swappable family uses (ontology sources here; text
encoders, graph encoders and fusion heads in their packages).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ontologies.base import OntologySource

__all__ = ["Registry", "ontology_registry", "register_source", "resolve_source"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class for one family, with a resolver in PyKEEN's style.

    Args:
        family: what the family is called in messages (``"ontology source"``).
        base: the family's base class; ``resolve`` returns instances of it as they are.

    Example:
        >>> reg = Registry("widget", object)
        >>> @reg.register
        ... class Spoon:
        ...     name = "spoon"
        >>> type(reg.resolve("spoon")).__name__
        'Spoon'
    """

    def __init__(self, family: str, base: type[T]) -> None:
        self.family = family
        self.base = base
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under its ``name`` attribute."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``.

        Raises:
            KeyError: unknown name (the message lists the known names).
        """
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise KeyError(f"unknown {self.family} {name!r}: known are {known}") from None

    def resolve(self, query: str | type[T] | T, **kwargs: Any) -> T:
        """Turn a name, a class or an instance into an instance.

        Args:
            query: registry name, class, or instance (returned as is).
            **kwargs: constructor arguments when a name or class is given.

        Returns:
            The instance.
        """
        if isinstance(query, self.base):
            return query
        cls = query if isinstance(query, type) else self.get(query)
        return cls(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def __getitem__(self, name: str) -> type[T]:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self):  # noqa: ANN204 - iterator of names
        return iter(self.names())


ontology_registry: Registry[OntologySource] = Registry("ontology source", OntologySource)
register_source = ontology_registry.register


def resolve_source(
    source: str | type[OntologySource] | OntologySource, **kwargs: Any
) -> OntologySource:
    """Turn a name (``"icd10cm"``), a class or an instance into a source instance.

    Args:
        source: registry name, class, or instance (returned as is).
        **kwargs: constructor arguments when a name or class is given.

    Returns:
        The source instance.
    """
    return ontology_registry.resolve(source, **kwargs)
