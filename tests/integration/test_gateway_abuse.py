"""The gateway under hostile requests (issue 13): bounded work, limits, timeouts, honest answers.

One real `evstream gateway` process with short timeouts, on fresh topics; one event type is mapped
to a topic that does not exist (its publishes are 503s). Every refusal writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Endpoints
from tests.gateway_helpers import Gateway, Token, gateway_topics, token, topic_map
from tests.integration.test_gateway import orders
from tests.kafka_helpers import end_offsets

WRITER = token("writer")
ORDERS_ONLY = token("orders-only", "OrderPlaced")
FEW = token("few", rate_limit="5/minute")
TIMEOUT_S = 1.0  # head, body and idle timeouts of this gateway
BIG = 1_048_576  # the default body limit, 1 MiB


@pytest.fixture(scope="module")
def topics(endpoints: Endpoints) -> Iterator[dict[str, str]]:
    with gateway_topics(endpoints.bootstrap_servers, "t-gwa") as names:
        yield names


@pytest.fixture(scope="module")
def gateway(
    endpoints: Endpoints, topics: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    mapped = topic_map(topics["orders"], topics["customers"], topics["tiers"])
    mapped["CustomerTierChanged"] = f"t-gwa-missing-{uuid.uuid4().hex[:8]}"  # never created: 503s
    gw = Gateway(
        endpoints.bootstrap_servers,
        endpoints.registry_url,
        mapped,
        [WRITER, ORDERS_ONLY, FEW],
        tmp_path_factory.mktemp("gateway-abuse") / "gateway.log",
        settings={
            "EVSTREAM_GATEWAY_HEADER_TIMEOUT_S": str(TIMEOUT_S),
            "EVSTREAM_GATEWAY_BODY_TIMEOUT_S": str(TIMEOUT_S),
            "EVSTREAM_GATEWAY_IDLE_TIMEOUT_S": str(TIMEOUT_S),
            "EVSTREAM_GATEWAY_DELIVERY_TIMEOUT_MS": "1000",
        },
        extra_args=["--access-log"],
    ).start(ready=False)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def unchanged(endpoints: Endpoints, topics: dict[str, str]) -> Iterator[None]:
    """The test writes nothing: end offsets of every topic unchanged."""
    before = {t: end_offsets(endpoints.bootstrap_servers, t) for t in topics.values()}
    yield
    assert {t: end_offsets(endpoints.bootstrap_servers, t) for t in topics.values()} == before


def post(gw: Gateway, path: str, tok: Token | None, **options: Any) -> httpx.Response:
    headers = {**(tok.headers if tok else {}), **options.pop("headers", {})}
    return httpx.post(gw.url + path, headers=headers, timeout=30, **options)


def json_body(raw: bytes) -> dict[str, Any]:
    return {"content": raw, "headers": {"Content-Type": "application/json"}}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def amplifying(prefix: bytes, suffix: bytes) -> bytes:
    """Just under 1 MiB of ``{}, {}, ...`` between ``prefix`` and ``suffix``."""
    count = (BIG - len(prefix) - len(suffix)) // 3
    return prefix + b",".join([b"{}"] * count) + suffix


def test_a_small_request_cannot_stall_the_server(gateway: Gateway, unchanged: None) -> None:
    """Item 3: 1 MiB of ``"lines": [{}, {}, ...]`` was a 422 of 86.7 MB after ~9 s."""
    assert gateway.process is not None
    pid = gateway.process.pid
    idle = rss_kb(pid)
    peak, health, stop = [idle], [0.0], threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.url) as client:
            while not stop.is_set():
                started = time.perf_counter()
                assert client.get("/healthz", timeout=10).status_code == 200
                health.append(time.perf_counter() - started)
                peak.append(rss_kb(pid))
                stop.wait(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for path, raw in [
            ("/v1/events/OrderPlaced", amplifying(b'{"lines": [', b"]}")),
            (
                "/v1/events:batch",
                amplifying(b'{"events": [{"event_type": "OrderPlaced", "data": {"lines": [', b"]}}]}"),
            ),
        ]:
            started = time.perf_counter()
            response = post(gateway, path, WRITER, **json_body(raw))
            took = time.perf_counter() - started
            assert response.status_code == 413, response.text[:500]
            assert response.headers["content-type"] == "application/problem+json"
            assert len(response.content) < 16_384
            assert took < 2.0, f"{path}: {took:.2f}s"  # < 200 ms on a quiet machine
    finally:
        stop.set()
        prober.join()
    assert max(health) < 1.0, f"/healthz took up to {max(health):.3f}s"  # < 50 ms when quiet
    assert max(peak) - idle < 50 * 1024, f"RSS grew {(max(peak) - idle) // 1024} MB"

    # within the values limit: a 422 lists the first 20 of its errors, and says how many
    lines = json.dumps({"lines": [{}] * 1000}).encode()
    invalid = post(gateway, "/v1/events/OrderPlaced", WRITER, **json_body(lines))
    assert invalid.status_code == 422
    problem = invalid.json()
    assert len(problem["errors"]) == 20
    assert problem["error_count"] > 3000  # 3 per line, plus the missing top-level fields
    assert len(invalid.content) < 16_384


def test_a_batch_is_authorized_and_charged_by_event_count_before_validation(
    gateway: Gateway, unchanged: None
) -> None:
    """Item 3: the batch route parsed (and answered 422) before its 403; a batch counted as one
    request against the rate."""
    customer = {"event_type": "CustomerRegistered", "data": {"customer_id": 1}}  # invalid data too
    forbidden = post(gateway, "/v1/events:batch", ORDERS_ONLY, json={"events": [customer]})
    assert forbidden.status_code == 403, forbidden.text
    nosy = {"event_type": "NoSuchType<script>", "data": {}}
    hidden = post(gateway, "/v1/events:batch", ORDERS_ONLY, json={"events": [nosy]})
    assert hidden.status_code == 403
    assert "NoSuchType" not in hidden.text

    invalid = {"event_type": "OrderPlaced", "data": {"order_id": "o-1"}}  # fails validation: no write
    beyond = post(gateway, "/v1/events:batch", FEW, json={"events": [invalid] * 6})
    assert beyond.status_code == 413, beyond.text  # more than the token's burst: retrying never helps
    first = post(gateway, "/v1/events:batch", FEW, json={"events": [invalid] * 3})
    assert first.status_code == 422  # 1 + 3 of the 5 events a minute used
    again = post(gateway, "/v1/events:batch", FEW, json={"events": [invalid] * 2})
    assert again.status_code == 429, again.text
    assert int(again.headers["retry-after"]) >= 1


def raw_exchange(gw: Gateway, data: bytes, *, close_after: float | None = None) -> tuple[float, bytes]:
    """Send ``data`` on a fresh connection; read until the server closes it (or ``close_after``)."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    started = time.perf_counter()
    received = b""
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # may be refused before all of it was read
        if close_after is not None:
            time.sleep(close_after)  # the client's own behaviour: it gives up mid-body
            return time.perf_counter() - started, b""
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.perf_counter() - started, received


def test_header_limits_and_timeouts(gateway: Gateway, unchanged: None) -> None:
    """Item 4: a 128 MB header took 17 s; idle and half-sent connections were held 50 s+."""
    head = b"POST /v1/events/OrderPlaced HTTP/1.1\r\nHost: x\r\n"
    took, answer = raw_exchange(gateway, head + b"X-Big: " + b"a" * (8 * BIG) + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"application/problem+json" in answer
    assert took < 2.0
    _, answer = raw_exchange(gateway, head + b"".join(b"X-%d: 1\r\n" % n for n in range(500)) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]

    limit = TIMEOUT_S + 3.0  # the timeout plus a loaded machine's margin
    took, answer = raw_exchange(gateway, b"")  # connects, sends nothing
    assert answer == b""
    assert took < limit
    took, answer = raw_exchange(gateway, head)  # half a head
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < limit
    body_head = head + b"Authorization: Bearer " + WRITER.secret.encode()
    body_head += b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    took, answer = raw_exchange(gateway, body_head + b'{"order_id": ')  # half a body
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer
    assert took < limit

    _, answer = raw_exchange(gateway, b"NOT HTTP\r\n\r\n")  # uvicorn's own 400 was text/plain
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"application/problem+json" in answer


def metric(gw: Gateway, route: str, status: int) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    prefix = f'evstream_gateway_requests_total{{route="{route}",status="{status}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_a_client_gone_mid_body_is_a_499_not_a_500(gateway: Gateway, unchanged: None) -> None:
    """Item 5: it was logged as a 500 with a traceback and counted as status 500."""
    before_499, before_500 = metric(gateway, "OrderPlaced", 499), metric(gateway, "OrderPlaced", 500)
    head = b"POST /v1/events/OrderPlaced HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    head += WRITER.secret.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    raw_exchange(gateway, head + b'{"order_id": ', close_after=0.2)
    deadline = time.monotonic() + 10
    while metric(gateway, "OrderPlaced", 499) == before_499 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(gateway, "OrderPlaced", 499) == before_499 + 1
    assert metric(gateway, "OrderPlaced", 500) == before_500
    assert "Traceback" not in gateway.log.read_text()


def test_an_avro_refusal_says_where_and_nothing_of_the_internals(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str]
) -> None:
    """Item 6: the 422 quoted Python reprs, the schema and the subject, with an empty loc (an
    event the model accepted and Avro could not encode: the strict models now refuse it first)."""
    before = sum(end_offsets(endpoints.bootstrap_servers, topics["orders"]))
    body = orders(1, seed=5)[0]
    body["total"]["amount_minor"] = 2**63
    key = {"Idempotency-Key": f"avro-{uuid.uuid4()}"}
    refused = post(gateway, "/v1/events/OrderPlaced", WRITER, json=body, headers=key)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]  # the strict model refuses it now; the Avro check backs it up
    assert error["loc"] == ["total", "amount_minor"]
    assert str(2**63 - 1) in error["msg"]
    for leak in ("Python", "C long", "schema", "evstream.orders", "record", "{", "t-gwa"):
        assert leak not in refused.json()["detail"], leak
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) == before
    # item 8: the Avro 422 does not bind the key (a pydantic 422 did not either)
    body["total"]["amount_minor"] = 100
    fixed = post(gateway, "/v1/events/OrderPlaced", WRITER, json=body, headers=key)
    assert fixed.status_code == 201, fixed.text
    assert sum(end_offsets(endpoints.bootstrap_servers, topics["orders"])) == before + 1


def test_replays_unknown_types_and_access_logs(gateway: Gateway) -> None:
    """Item 8: a replayed 503 dropped Retry-After; the unknown-type 404 needed no token and echoed
    the path; tokens in query strings reached the access log."""
    tier = {"customer_id": "c-1", "tier": "gold", "orders": 10, "changed_at": "2026-11-27T10:00:00Z"}
    key = {"Idempotency-Key": f"tier-{uuid.uuid4()}", **WRITER.headers}

    async def twice() -> list[httpx.Response]:  # whichever comes second waits and replays the first
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(client.post("/v1/events/CustomerTierChanged", json=tier, headers=key) for _ in "ab")
                )
            )

    both = asyncio.run(twice())
    replays = [r for r in both if r.headers.get("idempotent-replayed") == "true"]
    assert len(replays) == 1, [dict(r.headers) for r in both]
    replayed = replays[0]
    first = next(r for r in both if r is not replayed)
    assert first.status_code == replayed.status_code == 503, first.text
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.headers["retry-after"] == first.headers["retry-after"] == "1"

    anonymous = post(gateway, "/v1/events/NoSuchEvent", None, json={})
    assert anonymous.status_code == 401
    unknown = post(gateway, "/v1/events/NoSuchEvent<b>", WRITER, json={})
    assert unknown.status_code == 404
    assert "NoSuchEvent" not in unknown.text
    assert unknown.headers["content-type"] == "application/problem+json"
    for response in (
        httpx.get(gateway.url + "/v1/events/OrderPlaced", timeout=10),  # 405 was {"detail": ...}
        httpx.get(gateway.url + "/nowhere", timeout=10),
    ):
        assert response.headers["content-type"] == "application/problem+json", response.text
        assert response.json()["status"] == response.status_code
    assert "allow" in httpx.get(gateway.url + "/v1/events/OrderPlaced", timeout=10).headers

    secret = f"leak-{uuid.uuid4().hex}"
    assert httpx.get(f"{gateway.url}/healthz?access_token={secret}", timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while "access_token=" not in gateway.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = gateway.log.read_text()
    assert "access_token=<redacted>" in log
    assert secret not in log


def test_the_document_says_what_is_served(gateway: Gateway) -> None:
    """Item 7 (the contract test checks every answer; this, the document's parts by name)."""
    doc = httpx.get(gateway.url + "/openapi.json", timeout=10).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `evstream gateway token`",
    }
    op = doc["paths"]["/v1/events/OrderPlaced"]["post"]
    assert op["security"] == [{"bearer": []}]
    assert "Idempotency-Key" in {p["name"] for p in op["parameters"]}
    for status in ("400", "401", "403", "408", "409", "413", "415", "422", "429", "431", "500", "503"):
        assert list(op["responses"][status]["content"]) == ["application/problem+json"], status
    assert "Retry-After" in op["responses"]["503"]["headers"]
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    money = doc["components"]["schemas"]["Money"]["properties"]["amount_minor"]
    assert money["maximum"] == 2**63 - 1
    for path in ("/healthz", "/readyz", "/metrics"):
        assert list(doc["paths"][path]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_ambiguous_requests_are_400s_that_name_the_reason(gateway: Gateway, unchanged: None) -> None:
    """Issue 23 (3): a repeated Authorization or Idempotency-Key header, or a JSON object with a
    key twice, was read as one of its values (the first header, the last key)."""
    body = orders(1, seed=41)[0]
    other = token("other")  # unknown to the gateway: which one was meant must not matter
    writer, stranger = (
        ("Authorization", f"Bearer {WRITER.secret}"),
        ("Authorization", f"Bearer {other.secret}"),
    )
    for headers, name in [
        ([writer, stranger], "Authorization"),
        ([writer, writer], "Authorization"),
        ([*WRITER.headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")], "Idempotency-Key"),
        ([*WRITER.headers.items(), ("X-Correlation-Id", "a"), ("X-Correlation-Id", "a")], "X-Correlation-Id"),
    ]:
        for path, payload in [
            ("/v1/events/OrderPlaced", body),
            ("/v1/events:batch", {"events": [{"event_type": "OrderPlaced", "data": body}]}),
        ]:
            refused = httpx.post(gateway.url + path, json=payload, headers=headers, timeout=30)
            found = problem(refused, 400)
            assert found["title"] == "ambiguous request"
            assert name in found["detail"], found

    def obj(*members: str) -> str:  # a JSON object from its members, as written (keys may repeat)
        return "{" + ", ".join(members) + "}"

    def events(*items: str) -> str:
        return '"events": [' + ", ".join(items) + "]"

    event = json.dumps(body)[1:-1]  # the event's members, to repeat one of them
    line = json.dumps(body["lines"][0])[1:-1]
    placed = '"event_type": "OrderPlaced"'
    data = '"data": ' + obj(event)
    for path, raw, key in [
        ("/v1/events/OrderPlaced", obj(event, '"order_id": "o-other"'), "order_id"),
        ("/v1/events/OrderPlaced", obj('"order_id": "o-first"', event), "order_id"),
        (
            "/v1/events/OrderPlaced",
            obj(event.replace('"lines"', '"_x"'), '"lines": [' + obj(line, '"quantity": 1000') + "]"),
            "quantity",
        ),
        (
            "/v1/events:batch",
            obj(events(obj(placed, '"data": ' + obj(event, '"customer_id": "c-2"')))),
            "customer_id",
        ),
        ("/v1/events:batch", obj('"atomic": false', events(obj(placed, data)), '"atomic": true'), "atomic"),
        ("/v1/events:batch", obj(events(obj(placed, '"event_type": "OrderShipped"', data))), "event_type"),
    ]:
        refused = post(gateway, path, WRITER, **json_body(raw.encode()))
        found = problem(refused, 400)
        assert found["title"] == "ambiguous JSON", found
        assert repr(key) in found["detail"], found


def test_control_characters_in_a_kafka_key_are_422s(gateway: Gateway, unchanged: None) -> None:
    """Issue 23 (3): the event's key field (the Kafka key) refuses C0 and C1 control characters
    and DEL; the 422 locates the field like any validation error."""
    body = orders(1, seed=43)[0]
    for bad in ("o-1\x00", "o\n1", "\to-1", "o-1\x1f", "o-1\x7f", "o-1\x85", "o-1\x9f"):
        single = post(gateway, "/v1/events/OrderPlaced", WRITER, json={**body, "order_id": bad})
        found = problem(single, 422)
        assert found["errors"] == [
            {
                "loc": ["order_id"],
                "msg": "The Kafka key must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
                "type": "key_control_character",
            }
        ], found
        assert found["error_count"] == 1
        items = [
            {"event_type": "OrderPlaced", "data": body},
            {"event_type": "OrderPlaced", "data": {**body, "order_id": bad}},
        ]
        batch = post(gateway, "/v1/events:batch", WRITER, json={"events": items, "atomic": True})
        found = problem(batch, 422)
        assert [e["loc"] for e in found["errors"]] == [["events", 1, "data", "order_id"]], found
        assert found["errors"][0]["type"] == "key_control_character"
