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
import time

from confluent_kafka.admin import AdminClient

from bench.producer import new_topic, small
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.stack import LocalStack


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["publish", "send", "bulk"])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    n = args.events
    stack = LocalStack().state()
    topic = new_topic(AdminClient({"bootstrap.servers": stack.bootstrap_servers}))
    pool = [small(i) for i in range(10_000)]
    with EventProducer(
        kafka=kafka_settings(stack.bootstrap_servers), registry=registry_settings(stack.registry_url or "")
    ) as producer:
        producer.publish(pool[0], topic=topic).result(10)  # registry lookups done
        wall, cpu = time.perf_counter(), time.process_time()
        if args.mode == "publish":
            for i in range(n):
                producer.publish(pool[i % len(pool)], topic=topic)
        elif args.mode == "send":
            for i in range(n):
                producer.send(pool[i % len(pool)], topic=topic)
        else:
            tallies = [
                producer.publish_bulk([pool[(j + k) % len(pool)] for k in range(1000)], topic=topic)
                for j in range(0, n, 1000)
            ]
        assert producer.flush(60) == 0
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if args.mode == "send":
            assert producer.sent.acked == n, producer.sent
        if args.mode == "bulk":
            assert sum(t.acked for t in tallies) == n
    print(f"{args.mode:8s} {n / wall:9,.0f} ev/s  CPU {cpu / n * 1e6:5.1f} us/event")


if __name__ == "__main__":
    main()
