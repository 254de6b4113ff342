"""Each package's public API sits behind its __init__ with a sorted, complete __all__."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

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
    "evstream.testing",
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


FRONT_DOOR = [
    "AsyncEventProducer",
    "Catalog",
    "ConsumerRunner",
    "DeadLetter",
    "Event",
    "EventProducer",
    "Handlers",
    "KafkaSettings",
    "MessageContext",
    "MissingExtraError",
    "ProjectSettings",
    "RegistrySettings",
    "project_catalog",
]


def test_front_door_names() -> None:
    from evstream.consumers import ConsumerRunner, Handlers  # noqa: PLC0415
    from evstream.producers import EventProducer  # noqa: PLC0415
    from evstream.schemas import Catalog, Event  # noqa: PLC0415

    assert set(FRONT_DOOR) <= set(evstream.__all__)
    assert (evstream.Event, evstream.Catalog, evstream.EventProducer) == (Event, Catalog, EventProducer)
    assert (evstream.Handlers, evstream.ConsumerRunner) == (Handlers, ConsumerRunner)
    assert issubclass(evstream.MissingExtraError, evstream.ConfigError)


def test_import_evstream_is_light() -> None:
    """The front door loads its names on first use: importing it loads no client library."""
    heavy = ["confluent_kafka", "pydantic", "fastavro", "faust", "fastapi", "evstream.settings"]
    script = f"import json, sys, evstream\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
