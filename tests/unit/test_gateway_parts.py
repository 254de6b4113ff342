"""Gateway parts without a broker: tokens, settings, idempotency store, error mapping, CLI."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from limits import parse
from pydantic import ValidationError

from evstream.errors import ConfigError, DeliveryIndeterminateError, GatewayRequestError
from evstream.producers import EventProducer
from evstream.producers.gateway import (
    GatewaySettings,
    IdempotencyStore,
    TokenSpec,
    TokenStore,
    event_id_for,
    hash_token,
    new_token,
)
from evstream.producers.gateway.http import from_validation
from evstream.producers.gateway.idempotency import Stored
from evstream.producers.gateway.publisher import Outgoing, Publisher
from evstream.producers.gateway.ratelimit import RateLimiter
from evstream.schemas import Event
from evstream.schemas.domain import CATALOG, OrderPlaced
from tests.helpers import run_cli


def spec(name: str, secret: str, *types: str, rate: str | None = None) -> TokenSpec:
    return TokenSpec(name=name, sha256=hash_token(secret), event_types=list(types) or ["*"], rate_limit=rate)


def test_tokens_are_random_and_only_their_digest_is_needed() -> None:
    a, b = new_token(), new_token()
    assert a != b
    assert a.startswith("evs_")
    assert len(a) > 40
    store = TokenStore([spec("billing", a, "OrderPlaced"), spec("admin", b)], "10/second")
    billing = store.authenticate(f"Bearer {a}")
    assert billing is not None
    assert billing.name == "billing"
    assert billing.may_publish("OrderPlaced")
    assert not billing.may_publish("CustomerRegistered")
    admin = store.authenticate(f"bearer  {b} ")
    assert admin is not None
    assert admin.may_publish("CustomerRegistered")
    assert str(billing.rate) == "10 per 1 second"
    for bad in (None, "", f"Basic {a}", "Bearer", "Bearer ", f"Bearer {a}x", a):
        assert store.authenticate(bad) is None, bad


def test_settings_check_rates_tokens_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a rate"):
        GatewaySettings(rate_limit="fast")
    with pytest.raises(ValidationError, match="not a rate"):
        spec("x", "y", rate="lots")
    with pytest.raises(ValidationError, match="sha256"):
        TokenSpec(name="x", sha256="not-hex", event_types=["*"])
    with pytest.raises(ValidationError, match="unique"):
        GatewaySettings(tokens=[spec("x", "a"), spec("x", "b")])
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(yaml.safe_dump({"tokens": [spec("file", "s", "OrderPlaced").model_dump()]}))
    settings = GatewaySettings(tokens=[spec("env", "t")], tokens_file=tokens_file)
    assert [t.name for t in settings.all_tokens()] == ["env", "file"]
    tokens_file.write_text("tokens: [{name: broken}]")
    with pytest.raises(ConfigError, match="tokens file"):
        settings.all_tokens()
    with pytest.raises(ConfigError, match="tokens file"):
        GatewaySettings(tokens_file=tmp_path / "missing.yaml").all_tokens()


def test_event_ids_from_idempotency_keys_are_stable_and_scoped() -> None:
    assert event_id_for("a", "OrderPlaced", "k", "f") == event_id_for("a", "OrderPlaced", "k", "f")
    assert event_id_for("a", "OrderPlaced", "k", "f") != event_id_for("b", "OrderPlaced", "k", "f")
    assert event_id_for("a", "OrderPlaced", "k", "f") != event_id_for("a", "batch", "k", "f")
    assert event_id_for("a", "OrderPlaced", "k", "f") != event_id_for("a", "OrderPlaced", "k", "g")


OK = Stored("fp", 201, b"{}")


def test_idempotency_store_runs_once_and_repeats_the_result() -> None:
    async def scenario() -> None:
        store = IdempotencyStore(ttl_s=60, max_keys=2)
        scope = ("a", "OrderPlaced", "k1")
        assert await store.claim(scope, "fp") is None  # the first runs
        waiter = asyncio.create_task(store.claim(scope, "fp"))  # a concurrent repeat waits
        other_body = asyncio.create_task(store.claim(scope, "other"))
        await asyncio.sleep(0)
        assert not waiter.done()
        with pytest.raises(GatewayRequestError, match="different body"):
            await other_body
        store.finish(scope, OK)
        assert await waiter == OK
        assert await store.claim(scope, "fp") == OK
        with pytest.raises(GatewayRequestError) as reused:
            await store.claim(scope, "other")
        assert reused.value.status == 409
        for n in range(3):  # past max_keys the oldest go
            assert await store.claim(("a", "x", str(n)), "f") is None
            store.finish(("a", "x", str(n)), Stored("f", 201, b""))
        assert len(store) == 2
        assert await store.claim(scope, "fp") is None

    asyncio.run(scenario())


def test_a_failure_goes_to_waiters_then_runs_again_and_keeps_its_body() -> None:
    async def scenario() -> None:
        store = IdempotencyStore(ttl_s=60, max_keys=10)
        scope = ("a", "OrderPlaced", "k2")
        assert await store.claim(scope, "fp") is None
        waiter = asyncio.create_task(store.claim(scope, "fp"))
        await asyncio.sleep(0)
        failed = Stored("fp", 503, b"{}", "application/problem+json")
        store.finish(scope, failed)
        assert await waiter == failed  # a concurrent repeat does not publish again meanwhile
        with pytest.raises(GatewayRequestError):  # the key stays bound to the failed body
            await store.claim(scope, "corrected")
        assert await store.claim(scope, "fp") is None  # a later repeat runs again
        store.finish(scope, OK)
        assert await store.claim(scope, "fp") == OK

        cancelled = ("a", "OrderPlaced", "k3")
        assert await store.claim(cancelled, "fp") is None
        waiter = asyncio.create_task(store.claim(cancelled, "fp"))
        await asyncio.sleep(0)
        store.finish(cancelled, None)  # the first ended without a response: the waiter runs
        assert await waiter is None
        waiter_of_waiter = asyncio.create_task(store.claim(cancelled, "fp"))
        await asyncio.sleep(0)
        waiter_of_waiter.cancel()  # a cancelled waiter does not disturb the running one
        with pytest.raises(asyncio.CancelledError):
            await waiter_of_waiter
        store.finish(cancelled, OK)
        assert await store.claim(cancelled, "fp") == OK

    asyncio.run(scenario())


def test_idempotency_keys_expire() -> None:
    async def scenario() -> None:
        store = IdempotencyStore(ttl_s=0.05, max_keys=10)
        scope = ("a", "b", "c")
        assert await store.claim(scope, "f") is None
        store.finish(scope, Stored("f", 201, b""))
        assert await store.claim(scope, "f") is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            if await store.claim(scope, "f") is None:  # expired: runs again
                store.finish(scope, None)
                assert await store.claim(scope, "another body is fine now") is None
                return
        raise AssertionError("the key did not expire")

    asyncio.run(scenario())


def test_rate_limiter_admits_a_burst_then_one_per_interval() -> None:
    limiter = RateLimiter()
    rate = parse("3/minute")
    assert [limiter.admit("a", rate) for _ in range(3)] == [None, None, None]
    wait = limiter.admit("a", rate)
    assert wait is not None
    assert 19 < wait <= 20  # the next slot: one every 20 s
    assert limiter.admit("b", rate) is None  # per key
    fast = parse("1000/second")
    admitted = sum(limiter.admit("c", fast) is None for _ in range(5000))
    assert 1000 <= admitted <= 1100  # a burst of 1000, plus what refilled meanwhile


def test_validation_errors_map_to_400_or_422() -> None:
    with pytest.raises(ValidationError) as broken:
        OrderPlaced.model_validate_json(b'{"order_id": ')
    assert from_validation(broken.value, "OrderPlaced").status == 400
    with pytest.raises(ValidationError) as invalid:
        OrderPlaced.model_validate_json(b'{"order_id": "o-1"}')
    error = from_validation(invalid.value, "OrderPlaced")
    assert error.status == 422
    assert error.errors is not None
    assert {tuple(e["loc"]) for e in error.errors} >= {("customer_id",), ("total",)}  # type: ignore[arg-type]


def test_token_command_prints_a_token_and_its_entry() -> None:
    result = run_cli(
        "gateway", "token", "--name", "billing", "--types", "OrderPlaced,OrderShipped", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    secret, entry_line = result.stdout.strip().splitlines()
    entry = json.loads(entry_line)
    assert entry == {
        "name": "billing",
        "sha256": hash_token(secret),
        "event_types": ["OrderPlaced", "OrderShipped"],
    }
    yaml_out = run_cli("gateway", "token", "--name", "ops")
    assert yaml.safe_load("\n".join(yaml_out.stdout.splitlines()[1:]))["tokens"][0]["event_types"] == ["*"]


def test_gateway_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    result = run_cli("gateway", "--port", "8080", env={"EVSTREAM_GATEWAY_RATE_LIMIT": "fast"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid EVSTREAM_GATEWAY_RATE_LIMIT: Value error, "
        "'fast' is not a rate like '100/second' or '5000/minute'"
    ]
    missing = run_cli("gateway", env={"EVSTREAM_GATEWAY_TOKENS_FILE": str(tmp_path / "nope.yaml")})
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: tokens file")
    helped = run_cli("gateway", "--help")
    assert "Tokens come from EVSTREAM_GATEWAY_TOKENS" in helped.stdout


def test_json_values_are_counted_without_parsing() -> None:
    from evstream.producers.gateway.http import check_values, count_values, upper_bound  # noqa: PLC0415

    cases: list[object] = [
        {},
        [],
        1,
        "a,{[",
        {"a": [1, 2, {"b": 'x,{["\\'}], "c": {}, "d": [], "e": "q\\\\"},
        {"lines": [{}] * 50, "k": [[], [[]], {"x": None}]},
    ]
    for value in cases:
        body = json.dumps(value).encode()
        expected = _values(value)
        assert count_values(body) == expected, body
        assert upper_bound(body) >= expected
    check_values(json.dumps({"a": "," * 10_000}).encode(), 64, "event")  # commas in strings are free
    with pytest.raises(GatewayRequestError) as refused:
        check_values(json.dumps([1] * 100).encode(), 64, "OrderPlaced")
    assert refused.value.status == 413


def _values(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_values(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_values(v) for v in value)
    return 1


def test_a_422_lists_the_first_errors_and_their_count() -> None:
    with pytest.raises(ValidationError) as caught:
        OrderPlaced.model_validate_json(json.dumps({"lines": [{}] * 100}))
    error = from_validation(caught.value, "OrderPlaced", limit=20)
    assert error.status == 422
    assert error.errors is not None
    assert len(error.errors) == 20
    assert getattr(error, "error_count") == caught.value.error_count() > 300  # noqa: B009


def test_rate_limiter_charges_batches_by_event_count() -> None:
    limiter = RateLimiter()
    rate = parse("10/minute")
    assert limiter.admit("t", rate, 6) is None
    assert limiter.admit("t", rate, 4) is None
    wait = limiter.admit("t", rate, 1)
    assert wait is not None
    assert 5 < wait <= 6  # one event's interval
    assert limiter.admit("u", rate, 11) is not None  # beyond the burst: never (the gateway says 413)


def test_avro_unfit_values_are_located() -> None:
    from evstream.producers.gateway.avro import bound_integers, explicit_patterns, unfit  # noqa: PLC0415

    order = {
        "order_id": "o",
        "lines": [{"unit_price": {"amount_minor": 5}}, {"unit_price": {"amount_minor": 2**63}}],
    }
    schema = OrderPlaced.avro_schema_dict()
    found = unfit(schema, {**order, "total": {"amount_minor": 1, "currency": "EUR"}})
    assert found is not None
    assert found[0] == ["lines", 1, "unit_price", "amount_minor"]
    assert "Avro long" in found[1]
    assert unfit(schema, {"coupon_code": "\ud800"}) == (
        ["coupon_code"],
        "Input should be a string encodable as UTF-8 (no lone surrogates)",
    )
    assert unfit(schema, {"coupon_code": None, "total": {"amount_minor": -(2**63)}}) is None
    defs = {"Money": {"properties": {"amount_minor": {"type": "integer", "minimum": 0}}}}
    bound_integers(defs, [schema])
    assert defs["Money"]["properties"]["amount_minor"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 2**63 - 1,
        "description": "An integer literal (no fraction or exponent: 5, not 5.0) within Avro long.",
    }
    doc = {"a": {"pattern": r"^[^@\s]+\s[a]$"}}
    explicit_patterns(doc)
    assert "\\s" not in doc["a"]["pattern"]
    assert doc["a"]["pattern"].startswith(r"^[^@\t\n")


def test_access_logs_keep_no_query_values() -> None:
    from evstream.producers.gateway.server import redact_query  # noqa: PLC0415

    assert redact_query("/healthz") == "/healthz"
    assert (
        redact_query("/x?access_token=s3cret&b=2&c") == "/x?access_token=<redacted>&b=<redacted>&c=<redacted>"
    )


def test_an_avro_encode_refusal_is_located_without_internals() -> None:
    from evstream.errors import EncodeError  # noqa: PLC0415
    from evstream.producers.gateway.publisher import not_encodable  # noqa: PLC0415

    valid = OrderPlaced.model_validate(
        {"order_id": "o-1", "customer_id": "c-1", "placed_at": "2026-11-27T10:00:00Z",
         "shipping_country": "DE",
         "lines": [{"sku": "S", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "EUR"}}],
         "total": {"amount_minor": 1, "currency": "EUR"}}
    )  # fmt: skip
    event = valid.model_copy(update={"total": valid.total.model_copy(update={"amount_minor": 2**63})})
    codec = EncodeError("orders-evstream.orders.OrderPlaced: record does not match schema OrderPlaced: "
                        "Python int too large to convert to C long")  # fmt: skip
    error = not_encodable(codec, event, ["events", 3, "data"])
    assert error.status == 422
    assert error.errors == [
        {
            "loc": ["events", 3, "data", "total", "amount_minor"],
            "msg": f"Input should be between {-(2**63)} and {2**63 - 1} (Avro long)",
            "type": "avro_range",
        }
    ]
    for leak in ("Python", "C long", "schema", "orders-evstream"):
        assert leak not in error.detail


DEMO = "evstream.schemas.domain:CATALOG"
ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "placed_at": "2026-11-27T10:00:00Z",
    "shipping_country": "DE",
    "lines": [{"sku": "S", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "EUR"}}],
    "total": {"amount_minor": 1, "currency": "EUR"},
}


def _order() -> OrderPlaced:
    return OrderPlaced.model_validate(ORDER)


class _HangingTransactions:
    """A transactional producer whose commit, then abort, time out: the block ends only when
    ``release`` is set, then raises what EventProducer raises when the abort timed out too."""

    healthy = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = False

    def encoder(self, topic: str, model: type[Event]) -> Callable[[dict[str, Any]], bytes]:
        return lambda data: b"encoded"

    def publish(self, event: Event, **envelope: Any) -> None:
        return None

    @contextmanager
    def transaction(self, timeout: float) -> Iterator[_HangingTransactions]:
        yield self
        self.release.wait(30)
        raise DeliveryIndeterminateError("commit timed out, then the abort did: it may or may not be visible")

    def close(self, timeout: float | None = None) -> int:
        self.closed = True
        return 0


class _QuickPublisher(Publisher):
    @property
    def deadline_s(self) -> float:
        return 0.05  # the request's deadline passes while the transaction hangs (a broker pause)


def test_an_atomic_batch_outliving_its_request_leaves_no_unretrieved_task_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The transaction's task runs on after the 503 (``written: unknown``); its late failure is
    retrieved and logged as one warning line, not "Task exception was never retrieved"."""
    unhandled: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        publisher = _QuickPublisher(GatewaySettings(catalog=DEMO), CATALOG)
        hanging = _HangingTransactions()
        publisher._atomic = cast(EventProducer, hanging)
        with pytest.raises(GatewayRequestError) as answered:
            await publisher.publish_atomic([Outgoing(_order(), "orders", "gateway/test")])
        assert answered.value.status == 503
        assert "written: unknown" in answered.value.detail
        del answered  # its traceback holds the request's frame, and so the task
        hanging.release.set()
        await publisher._atomic_lock.acquire()  # released when the transaction's task is done
        publisher._atomic_lock.release()
        gc.collect()  # an unretrieved exception is reported when its task is collected

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert unhandled == []
    assert "never retrieved" not in caplog.text
    late = [r for r in caplog.records if r.name == "evstream.gateway" and "atomic batch" in r.getMessage()]
    assert len(late) == 1, caplog.text
    assert late[0].levelno == logging.WARNING
    assert late[0].exc_info is None
    assert "written: unknown" in late[0].getMessage()


def test_ambiguous_json_keys_and_canonical_content() -> None:
    from evstream.producers.gateway.http import canonical, check_key, check_unique_keys  # noqa: PLC0415

    check_unique_keys(b'{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}')  # one per object: fine
    check_unique_keys(b"{not json")  # left to the model's validation (400 malformed JSON)
    for raw, key in [(b'{"a": 1, "a": 1}', "a"), (b'{"x": [{"b": {"c": 1, "c": 2}}]}', "c")]:
        with pytest.raises(GatewayRequestError) as refused:
            check_unique_keys(raw)
        assert refused.value.status == 400
        assert refused.value.title == "ambiguous JSON"
        assert repr(key) in refused.value.detail
    assert canonical(json.loads('{"b": [1, {"y": 2, "x": 1}], "a": "é"}')) == canonical(
        {"a": "é", "b": [1, {"x": 1, "y": 2}]}
    )
    for allowed in ("o-1", "o 1", "ø-\u00a0-€", "订单-1", ""):
        assert check_key("order_id", allowed, []) is None, allowed
    for refused_char in ("\x00", "\t", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f"):
        error = check_key("order_id", f"o{refused_char}1", ["events", 2, "data"])
        assert error is not None, repr(refused_char)
        assert error["loc"] == ["events", 2, "data", "order_id"]
        assert error["type"] == "key_control_character"
