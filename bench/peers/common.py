"""What every tier process of bench/peers shares, in any venv: the stdlib, pydantic and
confluent-kafka only (the peers' venvs have no evstream).

A tier process is ``<python> -m bench.peers.<module> <tier> --bootstrap B --registry R --topic T
--events N`` run from the repository root; it prints one ``RESULT {json}`` line (events,
seconds, CPU seconds) and exits 0, or exits 1 with one line saying what went wrong (a count that
is not N is a failure, never a result).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

# evstream's ProducerSettings defaults, in librdkafka's spelling: every produce tier uses them
# (bench.peers checks they still are evstream's).
PRODUCER = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 10,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "partitioner": "murmur2_random",
}
POOL = 10_000  # produce tiers cycle a pool of models built before the clock
IDLE_S = 60.0  # a consume tier that gets nothing for this long (after a record or at start) fails
AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"
    GBP = "GBP"


class Method(StrEnum):
    CARD = "CARD"
    PAYPAL = "PAYPAL"
    BANK_TRANSFER = "BANK_TRANSFER"


class Money(BaseModel):
    amount_minor: int = Field(ge=0)
    currency: Currency


class Payment(BaseModel):
    """The peers' typed model of evstream's ``PaymentCaptured`` (same fields and constraints,
    pydantic's default lax mode, as a user of a peer library would write it)."""

    order_id: str = Field(min_length=1, max_length=64)
    payment_id: str = Field(min_length=1)
    amount: Money
    method: Method
    captured_at: datetime


def ids(i: int) -> dict[str, str]:
    """The i-th event's ids (``bench.producer.small(i)`` has the same): ~100 B of Avro in all."""
    return {
        "order_id": f"order-{i % 10_000:05d}-2026-11-27-web-checkout",
        "payment_id": f"pay-{i:09d}-card-authorisation-3ds2-eu-west-1",
    }


def payment(i: int) -> Payment:
    """The i-th event of the pool, as the peers' model."""
    amount = Money(amount_minor=1999, currency=Currency.EUR)
    return Payment(**ids(i), amount=amount, method=Method.CARD, captured_at=AT)


class TierError(Exception):
    """A tier did not do what it was asked (wrong count, no progress): the run fails."""


class Meter:
    """Wall and process CPU time (all threads: librdkafka's included) from :meth:`start` (or
    the first :meth:`tick`) to the tick that reaches ``expected`` (or :meth:`stop`).

    With ``BENCH_PROFILE=<file>`` in the environment, that window (and only it) of the thread
    that starts the meter runs under cProfile (that thread's CPU time), written to the file at
    :meth:`stop`.
    """

    last: Meter | None = None  # the last one stopped: its thread's CPU goes in the RESULT line

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.wall = self.cpu = 0.0
        self.wall_end = self.cpu_end = 0.0
        self._progress = (0, time.monotonic())
        self.thread_cpu = 0.0  # CPU seconds of the metering thread in the window
        self._profile_to = os.environ.get("BENCH_PROFILE")
        self._profile = cProfile.Profile(time.thread_time) if self._profile_to else None  # CPU, not wall

    def start(self) -> None:
        if self._profile is not None:
            self._profile.enable()
        self.wall, self.cpu, self.thread_cpu = time.perf_counter(), time.process_time(), time.thread_time()

    def stop(self) -> None:
        self.wall_end, self.cpu_end = time.perf_counter(), time.process_time()
        self.thread_cpu = time.thread_time() - self.thread_cpu
        Meter.last = self
        if self._profile is not None and self._profile_to:
            self._profile.disable()
            self._profile.dump_stats(self._profile_to)

    def tick(self, n: int = 1) -> bool:
        """Count ``n`` events; True once ``expected`` are counted."""
        if not self.wall:
            self.start()
        self.seen += n
        if self.seen < self.expected:
            return False
        if not self.wall_end:
            self.stop()
        return True

    def waiting(self) -> None:
        """Call when a poll returned nothing: :class:`TierError` after ``IDLE_S`` without a record."""
        now = time.monotonic()
        seen, since = self._progress
        if seen != self.seen:
            self._progress = (self.seen, now)
        elif now - since > IDLE_S:
            raise TierError(f"read {self.seen:,} of {self.expected:,}, then nothing for {IDLE_S:.0f} s")

    def check(self, what: str = "events") -> None:
        if self.seen != self.expected:
            raise TierError(f"{what}: {self.seen:,} of {self.expected:,}")

    def rate(self) -> tuple[float, float]:
        """(events/s, CPU us/event); the count checked first."""
        self.check()
        return self.seen / (self.wall_end - self.wall), (self.cpu_end - self.cpu) / self.seen * 1e6


def produce_loop(produce: Callable[[int], None], poll: Callable[[float], object], count: int) -> None:
    """``produce(i)`` for i in range(count), serving delivery reports as it goes; a full local
    queue waits for deliveries."""
    for i in range(count):
        while True:
            try:
                produce(i)
                break
            except BufferError:
                poll(0.05)
        poll(0)


def tier_main(tiers: Mapping[str, Callable[[argparse.Namespace], tuple[float, float]]]) -> None:
    """Parse a tier process's arguments, run the tier, print its RESULT line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("tier", choices=sorted(tiers))
    for name in ("--bootstrap", "--registry", "--topic"):
        parser.add_argument(name, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--schema", default="", help="the Avro schema (JSON) produce tiers register")
    args = parser.parse_args()
    try:
        rate, cpu = tiers[args.tier](args)
    except TierError as exc:
        print(f"{args.tier}: {exc}", file=sys.stderr)
        sys.exit(1)
    result = {"tier": args.tier, "rate": rate, "cpu_us": cpu}
    if Meter.last is not None:  # the metering (main) thread's share; the rest is librdkafka's and helpers'
        result["thread_cpu_us"] = Meter.last.thread_cpu / Meter.last.seen * 1e6
    print("RESULT " + json.dumps(result), flush=True)
