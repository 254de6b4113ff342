"""Handlers for `evstream worker` without faust (tests/integration/test_handlers_worker.py)."""

from __future__ import annotations

import os
from pathlib import Path

from evstream.consumers import Handlers, MessageContext
from evstream.schemas.events import Event

TOPIC = "worker-without-faust"


class ProbeHappened(Event, topic=TOPIC, key="probe_id", avro_namespace="evstream.tests.worker"):
    """One probe event."""

    probe_id: str


handlers = Handlers()


@handlers.on(ProbeHappened)
def record(event: ProbeHappened, ctx: MessageContext) -> None:
    with Path(os.environ["EVSTREAM_TEST_HANDLED_FILE"]).open("a") as out:
        out.write(f"{event.probe_id} {ctx.envelope.event_id}\n")
