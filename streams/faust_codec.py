"""A faust codec that reads and writes evstream events, for users' own ``faust.App``\\ s.

The same bytes as ``EventProducer``, ``ConsumerRunner`` and evstream's stream apps
(:class:`evstream.streams.topics.StreamCodec` does the work)::

    codec = EventCodec("orders", resolve=lambda: (avro_codec, catalog))
    orders = app.topic("orders", value_serializer=codec)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.serializers.codecs import Codec

from evstream.schemas import AvroCodec, Catalog
from evstream.streams.topics import StreamCodec

__all__ = ["EventCodec"]


class EventCodec(Codec):
    """Event <-> bytes for one topic (the topic names the subject, as in ``EventProducer``).

    Give ``codec`` and ``catalog``, or ``resolve`` returning both on first use.
    """

    def __init__(
        self,
        topic: str,
        codec: AvroCodec | None = None,
        catalog: Catalog | None = None,
        *,
        resolve: Callable[[], tuple[AvroCodec, Catalog]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.stream = StreamCodec(topic, codec, catalog, resolve=resolve)

    def _dumps(self, obj: Any) -> bytes:
        return self.stream.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.stream.decode(s)
