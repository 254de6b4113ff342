"""Private stacks for the fault scenarios (the session's shared stack is never signalled)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evstream.stack import LocalStack
from tests.reliability.faults import Private


@pytest.fixture(scope="session")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A private one-node Kafka with its own registry: registry and broker faults go here."""
    stack = LocalStack(tmp_path_factory.mktemp("solo"), start_timeout=240)
    stack.up(nodes=1)
    try:
        yield Private(stack)
    finally:
        stack.down(purge=True)
