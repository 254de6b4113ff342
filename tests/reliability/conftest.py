"""Private stacks for the fault scenarios (the session's shared stack is never signalled)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evstream.stack import LocalStack
from tests.reliability.faults import Private


@pytest.fixture(scope="session")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A private one-node Kafka with its own registry: registry and broker faults go here."""
    stack = LocalStack(tmp_path_factory.mktemp("solo"), start_timeout=240, stop_timeout=10)
    stack.up(nodes=1)
    try:
        yield Private(stack)
    finally:
        stack.down(purge=True)


@pytest.fixture(scope="session")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A private 3-node cluster (no registry: schemas go to the session's) for broker faults."""
    stack = LocalStack(tmp_path_factory.mktemp("trio"), start_timeout=240)
    stack.up(nodes=3, registry=False)
    try:
        yield stack
    finally:
        stack.down(purge=True)


FIGURES: dict[str, dict[str, object]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, object]:
    """This scenario's figures, printed at the end of the run (and copied to README.md by hand)."""
    return FIGURES.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, values in FIGURES.items():
        if values:
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
