"""Dead letters name their consumer group; redrive goes to that group's redrive topic only (no Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evstream import DeadLetter
from evstream.consumers import ConsumerSettings, Handlers, RetryTopics, failure_topic_specs
from evstream.consumers.failures import RETRY_PREFIX
from evstream.consumers.replay.deadletters import REDRIVE_COUNT, DeadLetterRecord
from evstream.consumers.replay.redrives import check_targets
from evstream.consumers.routing import add_failure_topics
from evstream.errors import ReplayInputError
from evstream.schemas.domain import OrderPlaced
from evstream.testing import HandlerHarness
from tests.factories import mixed_events

ORDER = next(e for e in mixed_events(12, seed=3) if isinstance(e, OrderPlaced))


def refusing() -> Handlers:
    handlers = Handlers()

    @handlers.on(OrderPlaced)
    def refuse(event: OrderPlaced) -> None:
        raise DeadLetter("downstream refused it")

    return handlers


def letter(h: HandlerHarness, *, offset: int = 7, drop: tuple[str, ...] = ()) -> DeadLetterRecord:
    """The harness's first dead letter as `dlq list` reads it, without the ``drop`` headers."""
    routed = h.dead_letters[0]
    headers = [(k, v) for k, v in routed.headers if k not in drop]
    return DeadLetterRecord(0, offset, routed.key, routed.value, headers)


def test_a_dead_letter_names_the_group_that_failed_it() -> None:
    with HandlerHarness(refusing(), group_id="billing") as h:
        h.send(ORDER)
    (dead,) = h.dead_letters
    assert (dead.topic, dead.group, dead.reason) == ("orders.dlq", "billing", "handler")
    record = letter(h)
    assert record.group == "billing"
    assert record.summary()["group"] == "billing"
    assert record.redrive_target() == "orders.billing.redrive"  # never the shared source topic
    assert record.redrive_target("orders.audit") == "orders.audit"  # an explicit choice wins


def test_a_redriven_copy_keeps_its_envelope_and_origin_and_counts_the_redrive() -> None:
    with HandlerHarness(refusing(), group_id="billing") as h:
        h.send(ORDER, partition=2)
    record = letter(h)
    headers = dict(record.redrive_headers())
    assert headers["ce_id"] == record.header("ce_id").encode()  # dedupe by event id still works
    assert not any(k.startswith("evstream.dlq.") for k in headers)
    assert headers[f"{RETRY_PREFIX}topic"] == b"orders"  # a new failure is dead-lettered as from orders
    assert (headers[f"{RETRY_PREFIX}partition"], headers[f"{RETRY_PREFIX}tier"]) == (b"2", b"0")
    assert headers[f"{RETRY_PREFIX}attempts"] == b"0"
    assert headers[REDRIVE_COUNT] == b"1"


def test_a_dead_letter_without_a_group_needs_an_explicit_target() -> None:
    with HandlerHarness(refusing(), group_id="billing") as h:
        h.send(ORDER)
    old = letter(h, offset=3, drop=("evstream.dlq.group",))  # written before the header existed
    assert (old.group, old.redrive_target()) == ("", None)
    assert old.redrive_target("orders.billing.redrive") == "orders.billing.redrive"
    with pytest.raises(ReplayInputError) as refused:
        check_targets("orders.dlq", [old], set(), set())
    message = str(refused.value)
    assert "\n" not in message
    assert "orders.dlq[0]@3" in message
    assert "--to-topic" in message


def test_a_missing_redrive_topic_refuses_the_run_naming_it() -> None:
    with pytest.raises(ReplayInputError) as refused:
        check_targets(
            "orders.dlq", [], {"orders.billing.redrive", "orders.stock.redrive"}, {"orders.stock.redrive"}
        )
    message = str(refused.value)
    assert "\n" not in message
    assert "redrive topic orders.billing.redrive does not exist" in message
    assert "orders.stock.redrive" not in message
    check_targets("orders.dlq", [], {"orders.billing.redrive"}, {"orders.billing.redrive"})  # all there: fine


def test_the_redrive_topic_is_the_groups_own_and_maps_back_to_its_source() -> None:
    retry = RetryTopics("billing", ("orders", "customers"), (1.0,))
    assert retry.redrive("orders") == "orders.billing.redrive"
    assert retry.source_of("orders.billing.redrive") == "orders"
    assert retry.source_of("orders.stock.redrive") == "orders.stock.redrive"  # not this group's
    assert retry.tier_of("orders.billing.redrive") == 0  # dispatched like a source record


def test_redrive_topics_are_declared_on_request(tmp_path: Path) -> None:
    settings = ConsumerSettings(retry_topic_delays_s=(10,))
    plain = [s.name for s in failure_topic_specs("billing", {"orders": 3}, settings)]
    assert plain == ["orders.billing.retry.10s", "orders.dlq"]
    full = failure_topic_specs("billing", {"orders": 3}, settings, redrive=True)
    assert [(s.name, s.partitions) for s in full][-1] == ("orders.billing.redrive", 3)
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics:\n  - name: orders\n    partitions: 3\n")
    added = add_failure_topics(topics, "billing", ["orders"], settings)
    assert [s.name for s in added] == ["orders.billing.retry.10s", "orders.dlq", "orders.billing.redrive"]
    assert "name: orders.billing.redrive" in topics.read_text()
