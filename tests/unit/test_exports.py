"""Each package's public API sits behind its __init__ with a sorted, complete __all__."""

from __future__ import annotations

import importlib
import inspect

import pytest

import evstream

PACKAGES = [
    "evstream",
    "evstream.stack",
    "evstream.topics",
    "evstream.schemas",
    "evstream.producers",
    "evstream.producers.gateway",
    "evstream.consumers",
    "evstream.streams",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ names {member!r}, which does not exist"


@pytest.mark.parametrize("name", ["evstream", "evstream.stack", "evstream.topics"])
def test_public_names_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public <= set(module.__all__), f"{name} exposes {public - set(module.__all__)} outside __all__"


def test_every_error_is_an_evstream_error() -> None:
    errors = [getattr(evstream, n) for n in evstream.__all__ if n.endswith("Error")]
    assert len(errors) >= 14
    for error in errors:
        assert issubclass(error, evstream.EvstreamError), error


def test_bad_input_errors_are_value_errors() -> None:
    assert issubclass(evstream.ConfigError, ValueError)
    assert issubclass(evstream.UnknownConfigKeyError, ValueError)
    assert issubclass(evstream.TopicsFileError, ValueError)
    assert issubclass(evstream.StackTimeoutError, TimeoutError)
    assert not issubclass(evstream.StackError, ValueError)
