"""The HTTP gateway against the real broker and registry: a real `evstream gateway` process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.schemas.domain import OrderPlaced
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.gateway_helpers import Gateway, Token, token, topic_map
from tests.kafka_helpers import end_offsets, read_records, record_at

WRITER = token("writer")
ORDERS_ONLY = token("orders-only", "OrderPlaced")
SLOW = token("slow", rate_limit="3/minute")


@pytest.fixture(scope="module")
def topics(endpoints: Endpoints) -> Iterator[dict[str, str]]:
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"t-gw-{kind}-{suffix}" for kind in ("orders", "customers", "tiers")}
    for future in admin.create_topics([NewTopic(n, num_partitions=3) for n in names.values()]).values():
        future.result(timeout=30)
    for name in names.values():
        end_offsets(endpoints.bootstrap_servers, name)  # waits until every leader answers
    yield names
    for future in admin.delete_topics(list(names.values()), request_timeout=30).values():
        future.result(timeout=30)


@pytest.fixture(scope="module")
def gateway(
    endpoints: Endpoints, topics: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = Gateway(
        endpoints.bootstrap_servers,
        endpoints.registry_url,
        topic_map(topics["orders"], topics["customers"], topics["tiers"]),
        [WRITER, ORDERS_ONLY, SLOW],
        tmp_path_factory.mktemp("gateway") / "gateway.log",
        settings={"EVSTREAM_GATEWAY_MAX_BODY_BYTES": "65536"},
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def orders(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` OrderPlaced events as JSON bodies."""
    placed = [e for e in mixed_events(count * 6, seed=seed) if isinstance(e, OrderPlaced)]
    return [e.model_dump(mode="json") for e in placed[:count]]


def post(gw: Gateway, path: str, tok: Token | None, body: Any = None, **options: Any) -> httpx.Response:
    headers = {**(tok.headers if tok else {}), **options.pop("headers", {})}
    if body is not None and "content" not in options:
        options["json"] = body
    return httpx.post(gw.url + path, headers=headers, timeout=30, **options)


def offsets(endpoints: Endpoints, topics: dict[str, str]) -> dict[str, list[int]]:
    return {kind: end_offsets(endpoints.bootstrap_servers, name) for kind, name in topics.items()}


def test_concurrent_requests_each_get_the_offset_where_a_consumer_finds_the_event(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))
    bodies = orders(1000, seed=11)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, headers=WRITER.headers, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/v1/events/OrderPlaced", json=b, timeout=60) for b in bodies)
            )

    responses = asyncio.run(send_all())
    assert sorted({r.status_code for r in responses}) == [201]
    answers = [r.json() for r in responses]
    assert len({a["event_id"] for a in answers}) == 1000
    assert {a["topic"] for a in answers} == {topics["orders"]}
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) - before == 1000

    records = read_records(endpoints.bootstrap_servers, [topics["orders"]], before + 1000)
    at = {(m.partition(), m.offset()): m for m in records}
    for answer, body in zip(answers, bodies, strict=True):
        record = at[(answer["partition"], answer["offset"])]
        headers = dict(record.headers() or [])
        assert headers["ce_id"] == answer["event_id"].encode()
        assert headers["ce_type"] == b"OrderPlaced"
        assert headers["ce_source"] == b"gateway/writer"
        assert record.key() == body["order_id"].encode()


def test_each_refusal_has_its_status_and_writes_nothing(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    good = orders(1, seed=3)[0]
    customer = {"customer_id": "c-1", "email": "c1@example.com", "name": "C", "country": "DE",
                "registered_at": "2026-11-27T10:00:00Z"}  # fmt: skip
    invalid = {**good, "total": {"amount_minor": -5, "currency": "XXX"}}
    big = {**good, "coupon_code": "x" * 70_000}
    too_long_for_avro = {**good, "total": {**good["total"], "amount_minor": 10**20}}  # the model allows it

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"order_id": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    before = offsets(endpoints, topics)
    cases: list[tuple[int, str, httpx.Response]] = [
        (401, "no token", post(gateway, "/v1/events/OrderPlaced", None, good)),
        (401, "unknown token", post(gateway, "/v1/events/OrderPlaced", token("nobody"), good)),
        (
            401,
            "not bearer",
            post(gateway, "/v1/events/OrderPlaced", None, good, headers={"Authorization": "Basic abc"}),
        ),
        (403, "type not granted", post(gateway, "/v1/events/CustomerRegistered", ORDERS_ONLY, customer)),
        (413, "body too large", post(gateway, "/v1/events/OrderPlaced", WRITER, big)),
        (
            415,
            "form body",
            post(
                gateway,
                "/v1/events/OrderPlaced",
                WRITER,
                content=b"a=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        ),
        (415, "no content type", post(gateway, "/v1/events/OrderPlaced", WRITER, content=b"{}")),
        (
            400,
            "malformed JSON",
            post(
                gateway,
                "/v1/events/OrderPlaced",
                WRITER,
                content=b'{"order_id": ',
                headers={"Content-Type": "application/json"},
            ),
        ),
        (422, "schema-invalid", post(gateway, "/v1/events/OrderPlaced", WRITER, invalid)),
        (422, "wrong type in body", post(gateway, "/v1/events/OrderPlaced", WRITER, customer)),
        (404, "unknown event type", post(gateway, "/v1/events/NoSuchEvent", WRITER, good)),
        (
            422,
            "fits the model, not the Avro long",
            post(gateway, "/v1/events/OrderPlaced", WRITER, too_long_for_avro),
        ),
        (
            413,
            "streamed body too large",
            post(
                gateway,
                "/v1/events/OrderPlaced",
                WRITER,
                content=chunked(),
                headers={"Content-Type": "application/json"},
            ),
        ),
    ]
    for status, what, response in cases:
        assert response.status_code == status, (what, response.text)
        problem = response.json()
        assert problem["status"] == status, what
        assert problem["detail"], what
        assert response.headers["content-type"] == "application/problem+json", what
    assert cases[0][2].headers["www-authenticate"].startswith("Bearer")
    fields = {tuple(e["loc"]) for e in cases[8][2].json()["errors"]}
    assert ("total", "amount_minor") in fields
    assert ("total", "currency") in fields
    assert offsets(endpoints, topics) == before


def test_rate_limit_per_token_answers_429_and_writes_nothing_more(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))
    statuses = [post(gateway, "/v1/events/OrderPlaced", SLOW, b).status_code for b in orders(5, seed=5)]
    assert statuses == [201, 201, 201, 429, 429]
    refused = post(gateway, "/v1/events/OrderPlaced", SLOW, orders(1, seed=6)[0])
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) - before == 3
    # another token is not limited by this one's use
    assert post(gateway, "/v1/events/OrderPlaced", WRITER, orders(1, seed=7)[0]).status_code == 201


def test_idempotency_key_gives_one_record_and_the_same_response(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    body = orders(1, seed=21)[0]
    before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = post(gateway, "/v1/events/OrderPlaced", WRITER, body, headers=key)
    second = post(gateway, "/v1/events/OrderPlaced", WRITER, body, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    reused = post(gateway, "/v1/events/OrderPlaced", WRITER, {**body, "coupon_code": "OTHER"}, headers=key)
    assert reused.status_code == 409
    assert "different body" in reused.json()["detail"]

    async def same_key_at_once() -> list[httpx.Response]:  # concurrent repeats wait for the first
        concurrent = {"Idempotency-Key": f"burst-{uuid.uuid4()}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=WRITER.headers) as client:
            return await asyncio.gather(
                *(client.post("/v1/events/OrderPlaced", json=body, headers=concurrent) for _ in range(10))
            )

    burst = asyncio.run(same_key_at_once())
    assert {r.status_code for r in burst} == {201}
    assert len({r.text for r in burst}) == 1
    assert sum(1 for r in burst if r.headers.get("idempotent-replayed") == "true") == 9
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) - before == 2


def test_a_reserialised_retry_gets_the_stored_answer(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    """Issue 23 (4): the key was bound to the body's bytes, so a client that serialised its retry
    again (other key order, other spacing) got a 409. The key is bound to the validated content."""
    body = orders(1, seed=23)[0]
    before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))
    key = {"Idempotency-Key": f"reserialised-{uuid.uuid4()}", "Content-Type": "application/json"}
    compact = json.dumps(body, separators=(",", ":")).encode()
    shuffled = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    assert compact != shuffled
    first = post(gateway, "/v1/events/OrderPlaced", WRITER, content=compact, headers=key)
    again = post(gateway, "/v1/events/OrderPlaced", WRITER, content=shuffled, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = post(gateway, "/v1/events/OrderPlaced", WRITER, {**body, "coupon_code": "OTHER"}, headers=key)
    assert other.status_code == 409, other.text

    items = [{"event_type": "OrderPlaced", "data": b} for b in orders(2, seed=25)]
    batch_key = {"Idempotency-Key": f"reserialised-batch-{uuid.uuid4()}", "Content-Type": "application/json"}
    batch = {"events": items, "atomic": False}  # not atomic: no commit markers in the offsets
    one = post(gateway, "/v1/events:batch", WRITER, content=json.dumps(batch).encode(), headers=batch_key)
    two = post(
        gateway,
        "/v1/events:batch",
        WRITER,
        content=json.dumps(batch, sort_keys=True, indent=1).encode(),
        headers=batch_key,
    )
    assert one.status_code == two.status_code == 201, two.text
    assert two.json() == one.json()
    assert two.headers["idempotent-replayed"] == "true"
    atomic = post(gateway, "/v1/events:batch", WRITER, {**batch, "atomic": True}, headers=batch_key)
    assert atomic.status_code == 409, atomic.text
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) - before == 3


def test_batches_plain_and_atomic(endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]) -> None:
    items: list[dict[str, Any]] = [{"event_type": "OrderPlaced", "data": b} for b in orders(30, seed=31)]
    before = offsets(endpoints, topics)
    plain = post(gateway, "/v1/events:batch", WRITER, {"events": items[:20]})
    assert plain.status_code == 201, plain.text
    assert [r["event_type"] for r in plain.json()["results"]] == ["OrderPlaced"] * 20
    atomic = post(gateway, "/v1/events:batch", WRITER, {"events": items[20:], "atomic": True})
    assert atomic.status_code == 201, atomic.text
    assert atomic.json()["atomic"] is True
    answered = {r["event_id"] for r in [*plain.json()["results"], *atomic.json()["results"]]}

    records = read_records(
        endpoints.bootstrap_servers,
        [topics["orders"]],
        sum(before["orders"]) + 30,
        **{"isolation.level": "read_committed"},
    )
    found = {dict(m.headers() or [])["ce_id"] for m in records}
    assert {a.encode() for a in answered} <= found
    for result in (plain.json()["results"][0], atomic.json()["results"][-1]):  # the offsets locate them
        record = record_at(
            endpoints.bootstrap_servers, result["topic"], result["partition"], result["offset"]
        )
        assert dict(record.headers() or [])["ce_id"] == result["event_id"].encode()

    after = offsets(endpoints, topics)
    bad = [*items[:3], {"event_type": "OrderPlaced", "data": {**items[0]["data"], "lines": "nope"}}]
    invalid = post(gateway, "/v1/events:batch", WRITER, {"events": bad})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"][:2] == ["events", 3]
    customer = {"event_type": "CustomerRegistered",
                "data": {"customer_id": "c-9", "email": "c9@example.com", "name": "C", "country": "DE",
                         "registered_at": "2026-11-27T10:00:00Z"}}  # fmt: skip
    forbidden = post(gateway, "/v1/events:batch", ORDERS_ONLY, {"events": [items[0], customer]})
    assert forbidden.status_code == 403
    assert "CustomerRegistered" in forbidden.json()["detail"]
    overflow = {
        "event_type": "OrderPlaced",
        "data": {**items[1]["data"], "total": {"amount_minor": 10**20, "currency": "EUR"}},
    }
    for atomic_flag in (False, True):  # the last event cannot be encoded: none of the batch is sent
        refused = post(
            gateway, "/v1/events:batch", WRITER, {"events": [*items[:3], overflow], "atomic": atomic_flag}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["events", 3, "data", "total", "amount_minor"]
    empty = post(gateway, "/v1/events:batch", WRITER, {"events": []})
    assert empty.status_code == 422
    unknown = post(gateway, "/v1/events:batch", WRITER, {"events": [{"event_type": "Nope", "data": {}}]})
    assert unknown.status_code == 422
    assert offsets(endpoints, topics) == after


def test_openapi_documents_one_request_schema_per_event_type(gateway: Gateway) -> None:
    doc = httpx.get(gateway.url + "/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    from evstream.schemas.domain import CATALOG  # noqa: PLC0415

    for model in CATALOG:
        op = doc["paths"][f"/v1/events/{model.event_type()}"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        assert name == model.__name__
        assert set(schemas[name]["properties"]) == set(model.model_fields)
        assert {"201", "401", "403", "413", "415", "422", "429", "503"} <= set(op["responses"])
    assert "BatchRequest" in schemas


def test_ops_endpoints(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
    assert httpx.get(gateway.url + "/readyz", timeout=5).text == "ready\n"
    post(gateway, "/v1/events/OrderPlaced", None, {})
    body = httpx.get(gateway.url + "/metrics", timeout=5).text
    line = next(
        ln
        for ln in body.splitlines()
        if ln.startswith('evstream_gateway_requests_total{route="OrderPlaced",status="401"}')
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_correlation_and_trace_headers_reach_the_record(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"X-Correlation-Id": "checkout-42", "X-Causation-Id": "cart-7", "traceparent": traceparent}
    answer = post(gateway, "/v1/events/OrderPlaced", WRITER, orders(1, seed=71)[0], headers=headers).json()
    ignored = post(
        gateway, "/v1/events/OrderPlaced", WRITER, orders(1, seed=72)[0], headers={"traceparent": "garbage"}
    )
    assert ignored.status_code == 201  # an invalid traceparent starts a new trace (W3C), not an error
    too_long = post(
        gateway,
        "/v1/events/OrderPlaced",
        WRITER,
        orders(1, seed=73)[0],
        headers={"X-Correlation-Id": "x" * 300},
    )
    assert too_long.status_code == 400
    first, second = (
        dict(
            record_at(endpoints.bootstrap_servers, topics["orders"], a["partition"], a["offset"]).headers()
            or []
        )
        for a in (answer, ignored.json())
    )
    assert first["ce_correlationid"] == b"checkout-42"
    assert first["ce_causationid"] == b"cart-7"
    assert first["traceparent"] == traceparent.encode()
    assert "traceparent" not in second


def test_several_worker_processes_serve_the_same_api(
    endpoints: Endpoints, topics: dict[str, str], tmp_path: Path
) -> None:
    gw = Gateway(
        endpoints.bootstrap_servers,
        endpoints.registry_url,
        topic_map(topics["orders"], topics["customers"], topics["tiers"]),
        [WRITER],
        tmp_path / "gateway.log",
        extra_args=["--workers", "2"],
    ).start()
    try:
        before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))

        async def send(bodies: list[dict[str, Any]]) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gw.url, headers=WRITER.headers) as client:
                return await asyncio.gather(*(client.post("/v1/events/OrderPlaced", json=b) for b in bodies))

        responses = asyncio.run(send(orders(40, seed=81)))
        assert [r.status_code for r in responses] == [201] * 40
        assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) - before == 40
    finally:
        gw.stop()
