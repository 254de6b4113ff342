"""Handlers used by the `evstream consume` subprocess tests: append each handled event id to a file."""

from __future__ import annotations

import os
import time
from pathlib import Path

from evstream.consumers import Handlers, MessageContext
from evstream.schemas.domain import (
    CustomerRegistered,
    CustomerUpdated,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
)
from evstream.schemas.events import Event

handlers = Handlers()


@handlers.on(OrderPlaced, PaymentCaptured, OrderShipped, OrderCancelled, CustomerRegistered, CustomerUpdated)
def record(event: Event, ctx: MessageContext) -> None:
    work = float(os.environ.get("EVSTREAM_TEST_HANDLER_WORK_S", "0"))
    if work:
        time.sleep(work)  # simulated work per event, so a test can kill the worker mid-stream
    out = Path(os.environ["EVSTREAM_TEST_HANDLED_FILE"])
    with out.open("a") as handle:
        handle.write(f"{ctx.envelope.event_id} {ctx.topic} {ctx.partition} {ctx.offset}\n")
