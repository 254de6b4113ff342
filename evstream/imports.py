"""Load user objects named ``module:attribute`` (catalogs, handlers, apps) with one clear error."""

from __future__ import annotations

import importlib
from typing import TypeVar

from evstream.errors import ConfigError

__all__ = ["import_object"]

T = TypeVar("T")


def import_object(spec: str, expected: type[T], *, default_attr: str) -> T:
    """Import ``module:attribute`` (``default_attr`` when omitted) and check it is an ``expected``."""
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr or default_attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {spec!r}: {exc}") from exc
    if not isinstance(found, expected):
        raise ConfigError(
            f"{spec!r} is a {type(found).__name__}, not a {expected.__module__}.{expected.__name__}"
        )
    return found
