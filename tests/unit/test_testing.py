"""evstream.testing itself: the README example runs, the plugin picks its stack, imports stay cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evstream.testing import StackEndpoints
from evstream.testing.plugin import environment_endpoints, stack_endpoints

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_runs() -> None:
    text = README.read_text()
    section = text[text.index("## Testing your handlers") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None
    scope: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(example.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    scope["test_refunds"]()


def test_the_plugin_uses_its_own_environment_variables_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("EVSTREAM_BOOTSTRAP_SERVERS", "production:9092")  # a shell set up for a real cluster
    assert environment_endpoints() is None  # is never what a test run talks to
    monkeypatch.setenv("EVSTREAM_TEST_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("EVSTREAM_TEST_REGISTRY_URL", "http://registry:8081")
    expected = StackEndpoints(
        "kafka-1:9092", "http://registry:8081", "environment (EVSTREAM_TEST_BOOTSTRAP_SERVERS)"
    )
    assert environment_endpoints() == expected
    assert list(stack_endpoints(tmp_path_factory)) == [expected]  # nothing started
    assert expected.environment() == {
        "EVSTREAM_BOOTSTRAP_SERVERS": "kafka-1:9092",
        "EVSTREAM_REGISTRY_URL": "http://registry:8081",
    }
    monkeypatch.delenv("EVSTREAM_TEST_BOOTSTRAP_SERVERS")
    assert environment_endpoints() is None


def test_loading_the_plugin_imports_no_kafka_client() -> None:
    code = (
        "import sys, evstream.testing.plugin, evstream.testing; "
        "print(sorted(m for m in ('confluent_kafka', 'evstream.consumers', 'fastavro') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_harness_runs_on_any_schema_store() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

    from evstream.consumers import Handlers  # noqa: PLC0415
    from evstream.schemas import RegistrySchemaStore  # noqa: PLC0415
    from evstream.schemas.domain import OrderPlaced  # noqa: PLC0415
    from evstream.testing import HandlerHarness, InMemorySchemaStore  # noqa: PLC0415
    from tests.factories import mixed_events  # noqa: PLC0415

    handlers = Handlers()
    handlers.on(OrderPlaced)(lambda event: None)
    order = mixed_events(1)[0]
    memory = InMemorySchemaStore()
    with HandlerHarness(handlers, schema_store=memory) as h:
        assert h.send(order).kind == "handled"
    assert memory.subjects() == {f"orders-{OrderPlaced.record_name()}": [1]}
    client = SchemaRegistryClient.new_client({"url": "mock://evstream-test"})
    try:
        with HandlerHarness(handlers, schema_store=RegistrySchemaStore(client)) as h:
            assert h.send(order).kind == "handled"
    finally:
        client.close()


def test_the_harness_registers_under_the_catalogs_subject_strategy() -> None:
    from evstream.consumers import Handlers  # noqa: PLC0415
    from evstream.schemas import Catalog  # noqa: PLC0415
    from evstream.schemas.domain import OrderPlaced  # noqa: PLC0415
    from evstream.testing import HandlerHarness, InMemorySchemaStore  # noqa: PLC0415
    from tests.factories import mixed_events  # noqa: PLC0415

    handlers = Handlers()
    handlers.on(OrderPlaced)(lambda event: None)
    catalog = Catalog([OrderPlaced], subject_strategy="TopicNameStrategy")
    memory = InMemorySchemaStore()
    with HandlerHarness(handlers, schema_store=memory, catalog=catalog) as h:
        assert h.send(mixed_events(1)[0]).kind == "handled"
    assert memory.subjects() == {"orders-value": [1]}  # as the producer writes it under this catalog
