"""Consumer pieces that need no broker: settings, retry-topic names, envelopes, causation, logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from evstream.consumers import ConsumerSettings, RetryTopics
from evstream.consumers.routing import delay_label
from evstream.errors import EnvelopeError
from evstream.logs import EventContextFilter, configure_logging
from evstream.schemas import Envelope
from evstream.schemas.causation import child_traceparent, current_cause, handling

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("seconds", "label"), [(0.5, "500ms"), (1, "1s"), (10, "10s"), (60, "1m"), (90, "90s"), (7200, "2h")]
)
def test_delay_labels(seconds: float, label: str) -> None:
    assert delay_label(seconds) == label


def test_retry_topics_are_per_group_and_tiered() -> None:
    tiers = RetryTopics("billing", ("orders", "customers"), (1.0, 10.0, 60.0))
    assert tiers.topic("orders", 1) == "orders.billing.retry.1s"
    assert tiers.topic("orders", 3) == "orders.billing.retry.1m"
    assert len(tiers.all()) == 6
    assert tiers.tier_of("customers.billing.retry.10s") == 2
    assert tiers.tier_of("orders") == 0
    assert RetryTopics("g", ("orders",), ()).all() == []


def test_consumer_settings_read_the_environment_and_refuse_bad_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVSTREAM_CONSUMER_RETRY_TOPIC_DELAYS_S", "[1, 10, 60]")
    monkeypatch.setenv("EVSTREAM_CONSUMER_GROUP_INSTANCE_ID", "worker-1")
    settings = ConsumerSettings()
    assert settings.retry_topic_delays_s == (1.0, 10.0, 60.0)
    conf = settings.librdkafka("billing")
    assert conf["group.instance.id"] == "worker-1"
    assert conf["enable.auto.offset.store"] is False
    with pytest.raises(ValueError, match="retry topic delays must be > 0"):
        ConsumerSettings(retry_topic_delays_s=(1.0, 0.0))
    with pytest.raises(ValueError, match="at most 10 retry tiers"):
        ConsumerSettings(retry_topic_delays_s=tuple(float(i + 1) for i in range(11)))
    assert "group.instance.id" not in ConsumerSettings(group_instance_id=None).librdkafka("g")


def test_envelope_from_headers_round_trips_and_names_what_is_wrong() -> None:
    sent = Envelope(event_type="OrderPlaced", correlation_id="c-1", traceparent=TRACE)
    back = Envelope.from_headers(sent.to_headers())
    assert back == sent
    with pytest.raises(EnvelopeError, match="missing envelope header"):
        Envelope.from_headers([("ce_type", b"OrderPlaced")])
    naive = [*sent.to_headers()[:4], ("ce_time", b"2026-11-27T10:00:00")]
    with pytest.raises(EnvelopeError, match="timezone"):
        Envelope.from_headers(naive)
    with pytest.raises(EnvelopeError, match="traceparent"):
        Envelope.from_headers([*sent.to_headers()[:-1], ("traceparent", b"nonsense")])
    with pytest.raises(EnvelopeError, match="malformed"):
        Envelope.from_headers(
            [("ce_id", b"not-a-uuid"), ("ce_type", b"X"), ("ce_time", b"2026-11-27T10:00Z")]
        )


def test_causation_continues_the_trace_lazily() -> None:
    child = child_traceparent(TRACE)
    assert child.split("-")[1] == TRACE.split("-")[1]
    assert child.split("-")[2] != TRACE.split("-")[2]
    assert len(child_traceparent(None).split("-")[1]) == 32
    event = Envelope(event_type="OrderPlaced", traceparent=TRACE)
    assert current_cause() is None
    with handling(event) as cause:
        assert current_cause() is cause
        assert (cause.causation_id, cause.correlation_id) == (str(event.event_id), str(event.event_id))
        assert cause.traceparent == cause.traceparent  # made up once, then stable
        assert cause.traceparent.split("-")[1] == TRACE.split("-")[1]
    assert current_cause() is None


def test_json_logs_carry_the_handled_event(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", "INFO")
        event = Envelope(event_type="OrderPlaced", correlation_id="checkout-9", traceparent=TRACE)
        with handling(event):
            logging.getLogger("svc").info("reserved stock")
        logging.getLogger("svc").info("idle")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["message"] == "reserved stock"
    assert inside["level"] == "INFO"
    assert inside["event_id"] == str(event.event_id)
    assert inside["correlation_id"] == "checkout-9"
    assert inside["trace_id"] == TRACE.split("-")[1]
    assert outside["event_id"] == ""


def test_context_filter_outside_a_handler_sets_empty_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert EventContextFilter().filter(record)
    assert (record.event_id, record.correlation_id, record.trace_id) == ("", "", "")  # type: ignore[attr-defined]
