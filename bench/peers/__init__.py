"""evstream's consume and produce hot paths side by side with the libraries a user would pick
instead (issue 17): one broker, one run, each tier in its own process, interleaved rounds.

One command (local stack up; it makes the peers' venvs on first use)::

    flock /tmp/evstream-bench.lock .venv/bin/python -m bench.peers --events 200000 --rounds 3

(``--tiers a,b`` runs a subset, ``--topic T`` reuses a filled consume topic; the flock only keeps
benchmarks of several people on one machine from overlapping.)

Tiers, on ~100 B Avro ``PaymentCaptured`` events (registry-framed, Confluent wire format):

========== ================================================================ ====================
workload   tier                                                             venv
========== ================================================================ ====================
consume    raw confluent-kafka ``consume(1000)``, bytes only                 evstream's .venv
consume    ``DeserializingConsumer`` + ``AvroDeserializer`` + ``model_validate`` evstream's .venv
consume    FastStream 0.7 (confluent) subscriber, one by one; batch subscriber bench/.venv-faststream
consume    Quix Streams 3 dataframe, ``AvroDeserializer`` -> ``model_validate``  bench/.venv-quix
consume    evstream ``ConsumerRunner``: ``@handlers.on``; ``@handlers.on_batch`` evstream's .venv
produce    raw ``Producer.produce`` of pre-encoded Avro                     evstream's .venv
produce    ``SerializingProducer`` + ``AvroSerializer`` (``model_dump``)      evstream's .venv
produce    FastStream publisher (``AvroSerializer`` bytes, ``no_confirm``)    bench/.venv-faststream
produce    Quix Streams producer + ``AvroSerializer``                       bench/.venv-quix
produce    evstream ``EventProducer.publish``; ``publish_bulk`` (1000 a call) evstream's .venv
========== ================================================================ ====================

The peers' venvs come from pinned requirements: bench/peers/requirements-faststream.txt and
bench/quix/requirements.txt (the Quix venv is the one bench/streams.py uses). A venv is remade
when its requirements file changes.

**Consume.** One topic (6 partitions) is filled once per invocation by evstream's
``EventProducer`` (``bench.consumer.fill``): the layout every consumer reads is evstream's, i.e.
Confluent-framed Avro values (the peers' ``AvroDeserializer`` reads the schema id and fetches it
from the registry; the subject name does not matter), keyed by order id, with evstream's envelope
headers (``ce_*``), which the peers ignore and evstream needs to dispatch. Every run uses a fresh
consumer group and reads all N records; the clock and the process CPU (``time.process_time()``:
every thread, librdkafka's included) run from the first record to the N-th. A peer ends each
record as a validated pydantic model (``bench.peers.common.Payment``, same fields and constraints
as ``PaymentCaptured``); raw only counts bytes. FastStream runs with its per-message log lines
off (``logger=None``), its fastest setting.

**Produce.** A fresh 6-partition topic per run; every tier uses evstream's producer defaults
(``bench.peers.common.PRODUCER``: acks=all, idempotence, lz4, linger 10 ms, checked against
``ProducerSettings`` at start), cycles a pool of 10,000 models built before the clock, sends one
warm-up event (schema registered, metadata known) and is timed from the first of N events until
every delivery is reported (``flush()``; FastStream: its delivery futures). The peers register
the schema under ``<topic>-value`` through their serializer, evstream under
``<topic>-<record name>``. Afterwards the topic must hold exactly N + 1 records and its last one
must decode through the registry into the model.

**Counts.** A tier that reads or writes anything but N fails the run with a message naming the
tier and round (and a consume tier with nothing new for 60 s fails).

The table printed at the end (medians, and each round's value) is what bench/RESULTS.md gets,
followed by issue 17's deliverable-5 ratios, each stated met or missed.
"""
