"""Registry from a text encoder's name to its class (configs store names, never import paths)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from text_encoder.base import TextEncoder

__all__ = [
    "register_text_encoder",
    "resolve_text_encoder",
    "text_encoder_from_config",
    "text_encoder_registry",
]

text_encoder_registry: dict[str, type[TextEncoder]] = {}


def register_text_encoder(cls: type[TextEncoder]) -> type[TextEncoder]:
    """Class decorator: register a :class:`TextEncoder` under its ``name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"text encoder {cls.__name__} needs a class attribute `name` (its registry name)")
    if name in text_encoder_registry and text_encoder_registry[name] is not cls:
        raise ValueError(f"text encoder {name!r} is registered twice")
    text_encoder_registry[name] = cls
    return cls


def resolve_text_encoder(encoder: str | type[TextEncoder] | TextEncoder, **kwargs: Any) -> TextEncoder:
    """Turn a name, a class or an instance into a text encoder instance.

    Args:
        encoder: registry name (``"hf"``), a class, or an instance (returned as is).
        **kwargs: constructor arguments when a name or class is given.

    Returns:
        The encoder instance.

    Raises:
        KeyError: the name is not registered (the message lists the known names).
        ValueError: keyword arguments were given together with an instance.
    """
    if isinstance(encoder, TextEncoder):
        if kwargs:
            raise ValueError(
                f"got an encoder instance and keyword arguments {sorted(kwargs)}: pass one or the other"
            )
        return encoder
    if isinstance(encoder, type):
        return encoder(**kwargs)
    try:
        cls = text_encoder_registry[encoder]
    except KeyError:
        known = ", ".join(sorted(text_encoder_registry)) or "none"
        raise KeyError(f"unknown text encoder {encoder!r}: known encoders are {known}") from None
    return cls(**kwargs)


def text_encoder_from_config(config: Mapping[str, Any]) -> TextEncoder:
    """Rebuild an encoder from :meth:`TextEncoder.get_config` output.

    Args:
        config: ``{"name": ..., "kwargs": {...}}``.

    Returns:
        A fresh encoder (weights loaded lazily, from the same model folder).
    """
    if "name" not in config:
        raise ValueError(f"text encoder config {dict(config)!r} has no 'name'")
    return resolve_text_encoder(config["name"], **dict(config.get("kwargs", {})))
