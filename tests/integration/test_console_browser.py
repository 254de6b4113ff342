"""The web console in a real browser (Playwright driving Debian's chromium) on the real stack.

Chromium is launched by its executable path (``.ci/run`` installs Debian's package; Playwright
downloads no browser). Without chromium the tests skip, except in CI (``CI=true``) where that is
a failure. ``EVSTREAM_CONSOLE_SCREENSHOTS=DIR`` saves screenshots of the main pages there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, KafkaError, Message, SerializingProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from evstream import DeadLetter, KafkaSettings, RegistrySettings
from evstream.consumers import Handlers, MessageContext
from evstream.consumers.console import Backend, ConsoleSettings, ConsoleToken, hash_token, new_token
from evstream.consumers.replay.deadletters import read_dead_letters
from evstream.producers.demo import DEMO_DEAD_LETTER_REASON, leave_for_console
from evstream.schemas import derived_event_id
from evstream.schemas.domain import CATALOG, OrderPlaced
from evstream.schemas.events import Event
from evstream.schemas.story import demo_story
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import ALL, publish, runner
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.kafka_helpers import committed_offsets, end_offsets

CHROMIUM = os.environ.get("EVSTREAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError(f"chromium not found at {CHROMIUM}: .ci/run installs Debian's chromium")
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

ADMIN, READER = new_token(), new_token()
WIDTH = 1400  # the records table fits a window this wide
SHOTS = os.environ.get("EVSTREAM_CONSOLE_SCREENSHOTS")


@dataclass
class Served:
    url: str
    backend: Backend
    samples: dict[str, Any]  # the lag sampler's series, by group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def console(endpoints: Endpoints) -> Iterator[Served]:
    from evstream.consumers.console.app import create_app  # noqa: PLC0415 - needs starlette

    settings = ConsoleSettings(
        tokens=[
            ConsoleToken(name="ops-admin", sha256=hash_token(ADMIN), permissions=["read", "admin"]),
            ConsoleToken(name="viewer", sha256=hash_token(READER), permissions=["read"]),
        ],
        sample_interval_s=0.5,
    )
    backend = Backend(
        KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        RegistrySettings(url=endpoints.registry_url),
        CATALOG,
        topics_file=Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml",
    )
    port = _free_port()
    app = create_app(backend, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20, what="the console to start")
    try:
        yield Served(f"http://127.0.0.1:{port}", backend, app.state.console.sampler.samples)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"))


def fits_the_window(page: Page) -> None:
    """The records table, its last column (event, envelope, headers) included, is inside the
    window: nothing scrolls sideways."""
    width = page.viewport_size["width"] if page.viewport_size else WIDTH
    assert width == WIDTH
    for locator in (page.locator("#records"), page.locator("#records thead th").last):
        box = locator.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width, (box, width)
    opened = page.locator("#records details[open] .headers")
    for i in range(opened.count()):
        box = opened.nth(i).bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= width, (box, width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def audit_actions(page: Page, url: str) -> list[str]:
    page.goto(f"{url}/audit")
    return [td.inner_text() for td in page.locator("#audit tbody tr td:nth-child(3)").all()]


def login(page: Page, url: str, token: str = ADMIN) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=token]", token)
    page.click("#login")
    page.wait_for_url(f"{url}/")
    assert "log out" in page.inner_text("header")


def consumed_group(
    endpoints: Endpoints, topic: str, events: int, *, seed: int
) -> tuple[str, list[uuid.UUID]]:
    ids = publish(endpoints, topic, mixed_events(events, seed=seed))
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event) -> None:
        pass

    group = f"g-{uuid.uuid4().hex[:8]}"
    runner(endpoints, group, handlers, topic).run(until_idle_s=1)
    return group, ids


def test_every_page_renders_real_data_and_the_browser_finds_an_event_by_id(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory, registry: SchemaRegistryClient
) -> None:
    topic = new_topic(partitions=3, config={"retention.ms": "86400000"})
    group, ids = consumed_group(endpoints, topic, 90, seed=51)
    publish(endpoints, topic, mixed_events(12, seed=52))  # the group is now 12 behind
    url = console.url

    page.goto(f"{url}/")
    overview = page.inner_text("#overview")
    assert "brokers" in overview
    assert endpoints.bootstrap_servers.split(",")[0] in overview
    assert "reachable" in overview
    shot(page, "overview")

    page.goto(f"{url}/topics")
    assert topic in page.inner_text("#topics")
    page.goto(f"{url}/topics/{topic}")
    rows = page.locator("#partitions tbody tr")
    assert rows.count() == 3
    assert sum(int(rows.nth(i).locator("td").nth(5).inner_text()) for i in range(3)) == 102
    assert "records/s" in page.inner_text("#rate")
    assert page.inner_text("#plan")  # declared vs actual (this topic is not declared)
    sources = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(2).inner_text()
        for row in page.locator("#configs tbody tr").all()
    }
    assert sources["retention.ms"] == "DYNAMIC_TOPIC_CONFIG"  # the source's name, not 1
    assert all(re.fullmatch(r"[A-Z_]+_CONFIG", s) for s in sources.values()), sources
    shot(page, "topic")

    page.goto(f"{url}/topics/{topic}/records")
    assert "scanned" in page.inner_text("#summary")
    assert page.locator("#records tbody tr").count() == 50  # the newest page
    fits_the_window(page)  # compact rows: every column, headers too, inside 1,400 px
    page.locator("#records summary").first.click()
    expect(page.locator("#records .headers").first).to_be_visible(timeout=5000)
    fits_the_window(page)  # and a record opened on its event, envelope and headers as well
    wanted = ids[37]
    page.fill("input[name=event_id]", str(wanted))
    page.locator("button", has_text="show").click()
    page.wait_for_load_state()
    found = page.locator("#records tbody tr")
    assert found.count() == 1
    found.locator("summary").click()
    text = found.inner_text()
    assert str(wanted) in text  # the envelope's event id
    assert '"order_id"' in text  # a decoded field of the catalog model
    assert "traceparent" in text
    shot(page, "browser")

    page.goto(f"{url}/groups/{group}")
    lag_rows = page.locator("#lag tbody tr")
    assert lag_rows.count() == 3
    assert sum(int(lag_rows.nth(i).locator("td").nth(4).inner_text()) for i in range(3)) == 12
    assert "total lag 12" in page.inner_text("#group-state")
    wait_until(lambda: len(console.samples.get(group, ())) >= 2, timeout=10, what="lag samples")
    page.reload()
    assert page.locator("#lag-chart polyline").count() == 1
    shot(page, "group")
    page.locator("#group-state a.replay", has_text=topic).click()  # plan a replay of this group
    page.wait_for_url(re.compile(r"/replay\?"))
    assert page.input_value("input[name=group]") == group
    assert page.input_value("input[name=topic]") == topic  # its topic filled in too
    assert page.locator("#replay-plan tbody tr").count() == 3

    page.goto(f"{url}/schemas?q=OrderPlaced")
    assert "OrderPlaced" in page.inner_text("#subjects")
    page.locator("#subjects a").first.click()
    assert "compatibility" in page.inner_text("#compat")
    # a subject opens on its last change (v1 -> v2), one with a single version on that version
    subject = f"console-{uuid.uuid4().hex[:8]}-value"
    second = json.loads(INVOICE)
    second["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    for schema in (INVOICE, json.dumps(second)):
        registry.register_schema(subject, Schema(schema, "AVRO"))
    single = f"console-{uuid.uuid4().hex[:8]}-value"
    registry.register_schema(single, Schema(INVOICE, "AVRO"))
    page.goto(f"{url}/schemas?q={subject}")
    page.locator("#subjects a", has_text=subject).click()
    assert page.inner_text("#diff-heading") == "diff v1 → v2"
    assert '+      "name": "note",' in page.inner_text("#diff")
    assert "identical" not in page.inner_text("main")
    shot(page, "schema-diff")
    page.goto(f"{url}/schemas/subject/{single}")
    assert "one version: v1" in page.inner_text("#diff-heading")
    assert page.locator("#diff").count() == 0
    assert "invoice_no" in page.inner_text("main")
    page.goto(f"{url}/schemas/usage?topic={topic}")
    assert "OrderPlaced" in page.inner_text("#usage")
    shot(page, "schemas")


def test_dlq_redrive_through_the_ui_moves_records_and_the_loop_guard_refuses_the_next(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    publish(endpoints, topic, mixed_events(20, seed=53))
    handlers = Handlers()

    @handlers.on(*ALL)
    def refuse(event: Event, ctx: MessageContext) -> None:
        raise DeadLetter("downstream refused it")

    group = f"g-{uuid.uuid4().hex[:8]}"
    assert runner(endpoints, group, handlers, topic, redrive=True).run(until_idle_s=1).dead_lettered == 20
    back = f"{topic}.{group}.redrive"  # redrive goes to the failing group only
    ends = sum(end_offsets(endpoints.bootstrap_servers, back))
    login(page, console.url)
    page.goto(f"{console.url}/dlq/{dlq}")
    assert page.locator("#dead-letters tbody tr").count() == 20
    assert "downstream refused it" in page.inner_text("#dead-letters")
    assert group in page.inner_text("#dead-letters")  # the group that failed them
    shot(page, "dlq")
    page.fill("input[name=max_redrives]", "1")
    page.click("#dry-run")
    assert "would send 20" in page.inner_text("#result")
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends  # a dry run moves nothing
    page.click("#redrive")
    assert "sent 20" in page.inner_text("#result")
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends + 20
    page.go_back()
    page.click("#redrive")  # the same confirmation again: refused, nothing sent
    assert "used already" in page.inner_text("main")
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends + 20

    # still failing downstream: the redriven records come back with redrive count 1
    assert runner(endpoints, group, handlers, topic).run(until_idle_s=3).dead_lettered == 20
    dlq_end = sum(end_offsets(endpoints.bootstrap_servers, dlq))
    page.goto(f"{console.url}/dlq/{dlq}")
    page.fill("input[name=max_redrives]", "1")
    page.click("#dry-run")
    assert "would send 0" in page.inner_text("#result")
    refused = page.inner_text("#refused")
    assert refused.count("redriven 1 times already (max 1)") == 20  # the loop guard
    assert page.locator("#redrive").count() == 0
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends + 20
    assert sum(end_offsets(endpoints.bootstrap_servers, dlq)) == dlq_end
    page.goto(f"{console.url}/audit")
    assert "ops-admin" in page.inner_text("#audit")
    shot(page, "audit")
    actions = audit_actions(page, console.url)
    assert {"login", "dlq redrive (dry run)", "dlq redrive"} <= set(actions)
    assert all(a == a.lower() for a in actions), actions  # one capitalisation: lowercase


def test_dlq_redrive_of_two_ticked_records_sends_exactly_those_once(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    publish(endpoints, topic, mixed_events(6, seed=56))
    handlers = Handlers()

    @handlers.on(*ALL)
    def refuse(event: Event, ctx: MessageContext) -> None:
        raise DeadLetter("downstream refused it")

    group = f"g-{uuid.uuid4().hex[:8]}"
    assert runner(endpoints, group, handlers, topic, redrive=True).run(until_idle_s=1).dead_lettered == 6
    back = f"{topic}.{group}.redrive"  # redrive goes to the failing group only
    letters = read_dead_letters(KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers), dlq)
    chosen, others = [letters[1], letters[4]], [letters[0], letters[2], letters[3], letters[5]]
    ends = sum(end_offsets(endpoints.bootstrap_servers, back))
    login(page, console.url)
    page.goto(f"{console.url}/dlq/{dlq}")
    assert page.locator("#dead-letters input[name=record]").count() == 6
    for r in chosen:
        page.check(f'#dead-letters input[value="{r.partition}:{r.offset}"]')
    page.click("#dry-run-selected")
    assert "would send 2" in page.inner_text("#result")
    listed = page.inner_text("#redriven")
    assert page.locator("#redriven tbody tr").count() == 2
    assert all(r.event_id in listed for r in chosen)
    assert back in listed  # where each goes: the failing group's redrive topic
    assert not any(r.event_id in listed for r in others)
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends  # a dry run moves nothing
    page.click("#redrive")
    assert "sent 2" in page.inner_text("#result")
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends + 2
    page.go_back()
    page.click("#redrive")  # the same confirmation again: refused, nothing sent
    assert "used already" in page.inner_text("main")
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == ends + 2
    # the shared position did not move: a filtered redrive still finds every dead letter
    assert committed_offsets(endpoints.bootstrap_servers, f"evstream-redrive.{dlq}", dlq, 1) == [-1001]


def test_replay_through_the_ui_moves_offsets_as_planned_and_is_refused_while_active(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    group, _ids = consumed_group(endpoints, topic, 60, seed=54)
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 3) == end_offsets(
        endpoints.bootstrap_servers, topic
    )
    login(page, console.url)
    page.goto(f"{console.url}/replay?group={group}&topic={topic}&kind=shift&value=-5")
    plan_rows = page.locator("#replay-plan tbody tr")
    assert plan_rows.count() == 3
    targets = [int(plan_rows.nth(i).locator("td").nth(2).inner_text()) for i in range(3)]
    assert "15 event(s) will be replayed" in page.inner_text("#plan-summary")
    shot(page, "replay")
    page.click("#apply")
    assert "applied" in page.inner_text("#result")
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 3) == targets

    member = Consumer({"bootstrap.servers": endpoints.bootstrap_servers, "group.id": group})
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment()
        page.goto(f"{console.url}/replay?group={group}&topic={topic}&kind=earliest")
        assert "active member" in page.inner_text("#active")
        response = page.expect_response(lambda r: r.url.endswith("/replay/apply"))
        with response as info:
            page.click("#apply")
        assert info.value.status == 409
        assert "active member" in page.inner_text("#error")
        assert committed_offsets(endpoints.bootstrap_servers, group, topic, 3) == targets
    finally:
        member.close()


def test_mutations_without_an_admin_token_are_refused_and_change_nothing(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    group, _ids = consumed_group(endpoints, topic, 6, seed=55)
    before = committed_offsets(endpoints.bootstrap_servers, group, topic, 1)
    ends = end_offsets(endpoints.bootstrap_servers, topic)
    with httpx.Client(base_url=console.url, timeout=20) as client:
        anonymous = client.post(f"/dlq/{dlq}/redrive", data={"mode": "dry"})
        assert anonymous.status_code == 401
        plan_page = client.get("/replay", params={"group": group, "topic": topic, "kind": "earliest"})
        assert plan_page.status_code == 200
        assert client.post("/replay/apply", data={"plan": "{}", "sig": "x"}).status_code == 401
        viewer = client.post(
            f"/dlq/{dlq}/redrive", data={"mode": "dry"}, headers={"Authorization": f"Bearer {READER}"}
        )
        assert viewer.status_code == 403
        forged = client.post(
            "/replay/apply", data={"plan": "{}", "sig": "x"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert forged.status_code == 403  # not a plan this console signed
        for path in ("/", "/topics", f"/topics/{topic}", f"/groups/{group}", "/dlq", "/audit"):
            text = client.get(path).text
            assert ADMIN not in text
            assert READER not in text
            assert hash_token(ADMIN) not in text
    # a logged-in session without the form's CSRF token is refused too
    login(page, console.url)
    status = page.evaluate(
        """async ([path]) => (await fetch(path, {method: 'POST',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'mode=dry'})).status""",
        [f"/dlq/{dlq}/redrive"],
    )
    assert status == 403
    # the refusals are audited under the same lowercase action names as the successes
    actions = audit_actions(page, console.url)
    assert {"dlq redrive", "replay apply"} <= set(actions)
    assert all(a == a.lower() for a in actions), actions
    refused = page.locator("#audit tbody tr", has_text="refused 401")
    assert refused.count() >= 2
    assert {refused.nth(i).locator("td").nth(2).inner_text() for i in range(refused.count())} <= {
        "dlq redrive",
        "replay apply",
        "login",
    }
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 1) == before
    assert end_offsets(endpoints.bootstrap_servers, topic) == ends


# A service outside evstream: its own record type, unknown to the catalog.
INVOICE = json.dumps(
    {
        "type": "record",
        "name": "Invoice",
        "namespace": "com.acme.billing",
        "fields": [{"name": "invoice_no", "type": "string"}, {"name": "amount_cents", "type": "long"}],
    }
)


def confluent_produce(
    endpoints: Endpoints,
    registry: SchemaRegistryClient,
    topic: str,
    schema: str,
    key: str,
    value: dict[str, Any],
) -> tuple[int, int]:
    """Produce one record as a Confluent service does (``SerializingProducer`` + ``AvroSerializer``,
    auto-registered under the topic's subject, no headers); its offset and the schema id it carries."""
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    producer = SerializingProducer(
        {
            "bootstrap.servers": endpoints.bootstrap_servers,
            "key.serializer": StringSerializer(),
            "value.serializer": AvroSerializer(registry, schema),
        }
    )
    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(delivered) == 1
    msg = delivered[0]
    assert not msg.headers()  # no evstream envelope at all
    framed = msg.value()
    assert isinstance(framed, bytes)
    assert framed[0] == 0  # Confluent's wire format: magic byte, 4-byte schema id, Avro body
    return msg.offset() or 0, int.from_bytes(framed[1:5], "big")


def only_row(page: Page) -> dict[str, Locator]:
    """The single row of the records table, by column name."""
    rows = page.locator("#records tbody tr")
    assert rows.count() == 1, page.inner_text("#records")
    row = rows.first
    row.locator("summary").click()  # open the record: event, envelope and headers
    expect(row.locator(".headers")).to_be_visible(timeout=5000)
    names = ["partition", "offset", "timestamp", "key", "type"]
    found = {name: row.locator("td").nth(i) for i, name in enumerate([*names, "record"])}
    return found | {name: row.locator(f".{name}") for name in ("envelope", "event", "headers")}


def test_the_browser_decodes_a_foreign_confluent_record_found_by_key_or_offset(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory, registry: SchemaRegistryClient
) -> None:
    topic = new_topic(partitions=1)
    publish(endpoints, topic, mixed_events(8, seed=57))  # evstream's own records around it
    mark = uuid.uuid4().hex[:10]
    placed = {
        "order_id": f"foreign-{mark}",
        "customer_id": "c-confluent",
        "lines": [{"sku": "SKU-9", "quantity": 3, "unit_price": {"amount_minor": 4321, "currency": "EUR"}}],
        "total": {"amount_minor": 12963, "currency": "EUR"},
        "placed_at": datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        "shipping_country": "NL",
        "coupon_code": None,
    }
    placed_at, placed_id = confluent_produce(
        endpoints, registry, topic, json.dumps(OrderPlaced.avro_schema_dict()), f"k-{mark}", placed
    )
    publish(endpoints, topic, mixed_events(4, seed=58))
    invoice_at, invoice_id = confluent_produce(
        endpoints,
        registry,
        topic,
        INVOICE,
        f"inv-{mark}",
        {"invoice_no": f"INV-{mark}", "amount_cents": 98765},
    )
    assert placed_id != invoice_id
    assert registry.get_latest_version(f"{topic}-value").schema_id == invoice_id  # TopicNameStrategy

    # by key: read into the catalog's OrderPlaced although it carries no envelope headers
    page.goto(f"{console.url}/topics/{topic}/records")
    page.fill("input[name=key]", f"k-{mark}")
    page.locator("button", has_text="show").click()
    page.wait_for_load_state()
    row = only_row(page)
    assert row["offset"].inner_text() == str(placed_at)
    assert row["type"].inner_text() == "OrderPlaced (foreign)"
    event = json.loads(row["event"].locator("pre").inner_text())
    assert event["order_id"] == f"foreign-{mark}"
    assert event["customer_id"] == "c-confluent"
    assert event["lines"][0]["unit_price"]["amount_minor"] == 4321
    assert event["shipping_country"] == "NL"
    envelope = json.loads(row["envelope"].locator("pre").inner_text())
    assert envelope["event_id"] == str(derived_event_id(topic, 0, placed_at))  # from its position
    assert envelope["event_type"] == "OrderPlaced"
    assert f"schema id {placed_id}" in row["record"].locator("summary").inner_text()
    assert row["headers"].locator("pre").inner_text().strip() == ""  # no headers at all
    shot(page, "browser-foreign")

    # by offset: a record type the catalog does not know, shown with its writer schema
    page.goto(
        f"{console.url}/topics/{topic}/records?partition=0&from_offset={invoice_at}&to_offset={invoice_at}"
    )
    row = only_row(page)
    assert row["key"].inner_text() == f"inv-{mark}"
    assert row["type"].inner_text() == "Invoice (foreign)"
    assert json.loads(row["event"].locator("pre").inner_text()) == {
        "invoice_no": f"INV-{mark}",
        "amount_cents": 98765,
    }
    assert "writer schema shown" in row["envelope"].inner_text()
    assert f"schema id {invoice_id}" in row["record"].locator("summary").inner_text()


def test_what_the_demo_leaves_shows_on_the_groups_dead_letters_and_replay_pages(
    console: Served, page: Page, endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    publish(endpoints, topic, demo_story(3))  # 10 events
    group = f"demo-mailer-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers)
    left = leave_for_console(kafka, RegistrySettings(url=endpoints.registry_url), topic=topic, group=group)
    assert (left.handled, left.dead_lettered, left.lag, left.earlier) == (5, 1, 5, False)
    again = leave_for_console(kafka, RegistrySettings(url=endpoints.registry_url), topic=topic, group=group)
    assert (again.handled, again.lag, again.earlier) == (0, 5, True)  # a second run consumes nothing
    assert sum(end_offsets(endpoints.bootstrap_servers, dlq)) == 1

    page.goto(f"{console.url}/groups")
    page.locator("#groups a", has_text=group).click()
    assert "total lag 5" in page.inner_text("#group-state")
    lags = [r.locator("td").nth(4).inner_text() for r in page.locator("#lag tbody tr").all()]
    assert len(lags) == 3
    assert "-" not in lags  # every partition has a committed offset: the lag is a number
    shot(page, "demo-group")
    page.locator("#group-state a.replay", has_text=topic).click()
    page.wait_for_url(re.compile(r"/replay\?"))
    assert page.input_value("input[name=topic]") == topic
    assert "event(s) will be replayed" in page.inner_text("#plan-summary")
    shot(page, "demo-replay")

    page.goto(f"{console.url}/dlq")
    page.locator("#dlqs a", has_text=dlq).click()
    letters = page.locator("#dead-letters tbody tr")
    assert letters.count() == 1
    assert DEMO_DEAD_LETTER_REASON in letters.inner_text()
    assert group in letters.inner_text()
    shot(page, "demo-dlq")
