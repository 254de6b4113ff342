"""pytest plugin (entry point ``evstream``): a real broker + registry for a user's own tests.

Installed with evstream; nothing starts unless a test asks for the ``evstream_stack`` fixture
(session-scoped: one stack for the whole run). The broker is chosen in this order:

1. ``EVSTREAM_TEST_BOOTSTRAP_SERVERS`` (and ``EVSTREAM_TEST_REGISTRY_URL``) when set — a variable
   of its own, so that a shell which exports ``EVSTREAM_BOOTSTRAP_SERVERS`` for a real cluster never
   points a test run at it;
2. else the local JVM stack running in ``EVSTREAM_STACK_DIR`` (``evstream stack up``);
3. else a private local stack started in a temporary folder for the session and stopped (and so
   wiped) at its end — it holds only what the session wrote.

.. code-block:: python

    def test_publish_and_consume(evstream_stack, monkeypatch):
        for name, value in evstream_stack.environment().items():
            monkeypatch.setenv(name, value)  # evstream's settings now point at the stack
        ...

For handler logic alone no broker is needed: see :class:`evstream.testing.HandlerHarness`.
This module imports nothing heavy: pytest loads it in every run of every project that has
evstream installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = ["StackEndpoints", "environment_endpoints", "evstream_stack", "local_stack_endpoints"]


@dataclass(frozen=True)
class StackEndpoints:
    """Where the session's broker and registry listen, and who provided them (``source``)."""

    bootstrap_servers: str
    registry_url: str
    source: str

    def environment(self) -> dict[str, str]:
        """The ``EVSTREAM_*`` variables that point evstream's settings at this stack."""
        return {
            "EVSTREAM_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "EVSTREAM_REGISTRY_URL": self.registry_url,
        }


def environment_endpoints() -> StackEndpoints | None:
    """The broker named by ``EVSTREAM_TEST_BOOTSTRAP_SERVERS`` (and ``EVSTREAM_TEST_REGISTRY_URL``)."""
    servers = os.environ.get("EVSTREAM_TEST_BOOTSTRAP_SERVERS")
    if not servers:
        return None
    registry = os.environ.get("EVSTREAM_TEST_REGISTRY_URL", "")
    return StackEndpoints(servers, registry, "environment (EVSTREAM_TEST_BOOTSTRAP_SERVERS)")


def local_stack_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """Yield the local stack running in ``EVSTREAM_STACK_DIR``, else start a private one in a
    temporary folder and stop it after the ``yield``."""
    from evstream.errors import StackError  # noqa: PLC0415 - keep plugin import cheap for every pytest run
    from evstream.stack import LocalStack  # noqa: PLC0415

    shared = LocalStack()
    try:
        state = shared.state()
    except StackError:
        private = LocalStack(tmp_path_factory.mktemp("evstream-stack"))
        state = private.up(nodes=1)
        try:
            yield StackEndpoints(state.bootstrap_servers, state.registry_url or "", "private local stack")
        finally:
            private.down(purge=True)  # a throwaway stack in a temporary folder: nothing to keep
        return
    yield StackEndpoints(
        state.bootstrap_servers, state.registry_url or "", f"local stack in {shared.data_dir}"
    )


def stack_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """Yield the endpoints (see the module docstring for the order); stop a private stack after."""
    found = environment_endpoints()
    if found is not None:
        yield found
        return
    yield from local_stack_endpoints(tmp_path_factory)


@pytest.fixture(scope="session")
def evstream_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """A real Kafka broker + schema registry for the test session (see the module docstring)."""
    yield from stack_endpoints(tmp_path_factory)
