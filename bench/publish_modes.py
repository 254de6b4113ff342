"""Publish modes of EventProducer: ``publish`` (a future per event), ``send`` (no future, outcomes
in ``producer.sent``) and ``publish_bulk`` (1000 events a call, one tally each).

One fresh 6-partition topic per run, ~100 B ``PaymentCaptured`` from a pool, time ends when
``flush()`` returns; prints events/s and the process's CPU us/event. Run one mode per process
and alternate them (or two checkouts with ``PYTHONPATH=<checkout>``, ``publish`` only for a
checkout without the other modes):

    .venv/bin/python -m bench.publish_modes publish|send|bulk [--events 50000]
"""

from __future__ import annotations

import argparse

from confluent_kafka.admin import AdminClient

from bench.consumer import Rate
from bench.peers.common import POOL, Meter, TierError
from bench.producer import new_topic, small
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.stack import LocalStack

MODES = ("publish", "send", "bulk")


def publish_rate(mode: str, bootstrap: str, registry_url: str, topic: str, n: int) -> Rate:
    """One event (registry lookups, metadata) then ``n`` in ``mode`` until ``flush()`` returns:
    (events/s, CPU us/event); ``send``/``bulk`` outcomes must all be acked (:class:`TierError`)."""
    pool = [small(i) for i in range(POOL)]
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        producer.publish(pool[0], topic=topic).result(10)  # registry lookups done
        meter = Meter(n)
        meter.start()
        if mode == "publish":
            for i in range(n):
                producer.publish(pool[i % POOL], topic=topic)
        elif mode == "send":
            for i in range(n):
                producer.send(pool[i % POOL], topic=topic)
        else:
            tallies = [
                producer.publish_bulk([pool[(j + k) % POOL] for k in range(min(1000, n - j))], topic=topic)
                for j in range(0, n, 1000)
            ]
        if producer.flush(60) != 0:
            raise TierError(f"{mode}: flush timed out")
        meter.stop()
        # publish: every future resolved by flush (the topic's end offsets are checked by callers)
        if mode == "publish":
            meter.tick(n)
        else:
            meter.tick(producer.sent.acked if mode == "send" else sum(t.acked for t in tallies))
        return meter.rate()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    stack = LocalStack().state()
    topic = new_topic(AdminClient({"bootstrap.servers": stack.bootstrap_servers}))
    rate, cpu = publish_rate(args.mode, stack.bootstrap_servers, stack.registry_url or "", topic, args.events)
    print(f"{args.mode:8s} {rate:9,.0f} ev/s  CPU {cpu:5.1f} us/event")


if __name__ == "__main__":
    main()
