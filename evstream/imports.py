"""Load user objects named ``module:attribute`` (catalogs, handlers, apps) with one clear error,
and say which extra to install when an optional dependency is missing."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import TypeVar

from evstream.errors import ConfigError, MissingExtraError

__all__ = ["EXTRAS", "import_object", "missing_extra", "require_extra"]

T = TypeVar("T")

# Top-level import name -> the extra (pyproject.toml [project.optional-dependencies]) that installs it.
EXTRAS: dict[str, str] = {
    "faust": "faust",
    "mode": "faust",
    "aiokafka": "faust",
    "fastapi": "gateway",
    "starlette": "gateway",
    "uvicorn": "gateway",
    "uvloop": "gateway",
    "httptools": "gateway",
    "rocksdict": "rocksdb",
    "opentelemetry": "otel",
}
# What each extra enables, for the error message ("<feature> needs the 'x' extra").
_FEATURES = {
    "faust": "running faust apps",
    "gateway": "the gateway",
    "rocksdb": "the rocksdb:// table store",
    "otel": "OpenTelemetry tracing",
}


def require_extra(extra: str, *modules: str, feature: str | None = None) -> None:
    """Import ``modules``; :class:`MissingExtraError` naming ``extra`` if one is not installed."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(feature or _FEATURES.get(extra, extra), extra, name) from exc


def missing_extra(exc: ImportError, *, feature: str | None = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` that ``exc`` means when it is about a module of an extra."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return MissingExtraError(feature or _FEATURES[extra], extra, exc.name or top)


def _put_on_path(app_dir: str | Path) -> None:
    """Put ``app_dir`` first on ``sys.path`` (as ``uvicorn --app-dir`` does), once."""
    folder = str(Path(app_dir).resolve())
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def import_object(spec: str, expected: type[T], *, default_attr: str, app_dir: str | Path | None = None) -> T:
    """Import ``module:attribute`` (``default_attr`` when omitted) and check it is an ``expected``.

    With ``app_dir``, that folder is put first on ``sys.path`` before importing, so
    ``mymod:handlers`` finds ``mymod.py`` there. A module that fails because an extra is missing
    raises :class:`MissingExtraError`; anything else that cannot be loaded :class:`ConfigError`.
    """
    if app_dir is not None:
        _put_on_path(app_dir)
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigError(f"cannot load {spec!r}: expected module:attribute")
    try:
        found = getattr(importlib.import_module(module_name), attr or default_attr)
    except ImportError as exc:
        extra = missing_extra(exc)
        if extra is not None:
            raise extra from exc
        raise ConfigError(f"cannot load {spec!r}: {exc}") from exc
    except AttributeError as exc:
        raise ConfigError(f"cannot load {spec!r}: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: one line, where it was
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        place = f" ({frame.filename}:{frame.lineno})" if frame is not None else ""
        raise ConfigError(f"cannot load {spec!r}: {type(exc).__name__}: {exc}{place}") from exc
    if not isinstance(found, expected):
        raise ConfigError(
            f"{spec!r} is a {type(found).__name__}, not a {expected.__module__}.{expected.__name__}"
        )
    return found
