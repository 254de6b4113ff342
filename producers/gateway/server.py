"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol with limits it does not have.

uvicorn's httptools protocol (the fast one) accepts headers of any size and count, and waits
forever for a head or a body that is sent slowly or not at all. This one adds, per connection:

- ``max_header_bytes`` for the request line and headers, and ``max_headers`` fields: 431;
- ``header_timeout_s`` for a request's head, from the connection or the previous response (408);
- ``body_timeout_s`` for its body, from the end of its head (408);
- ``idle_timeout_s`` before a connection without a request in progress is closed (uvicorn's
  keep-alive timeout; here it also covers a connection that never sent a byte).

Every response it writes itself (400 for unparsable HTTP, 408, 431) is problem+json, and the
connection is closed after it. Bytes are counted before they are parsed, so a 128 MB header costs
the gateway at most ``max_header_bytes`` plus one read. Limits come from :meth:`configure`, which
the app factory calls in every worker process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from evstream.producers.gateway.settings import GatewaySettings

__all__ = ["GatewayHttpProtocol", "RedactQuery", "redact_query"]

log = logging.getLogger("evstream.gateway")


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the head exceeds a limit."""


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with header limits and head/body/idle timeouts.

    A request costs no timer: each connection keeps a deadline for the phase it is in (idle before
    its first byte, head, body) and one sweep per process, a few times a second, answers those past
    theirs. Between requests uvicorn's keep-alive timer (``idle_timeout_s``) applies.
    """

    limits: ClassVar[GatewaySettings] = GatewaySettings()
    _live: ClassVar[set[GatewayHttpProtocol]] = set()
    _sweeper: ClassVar[asyncio.TimerHandle | None] = None

    @classmethod
    def configure(cls, settings: GatewaySettings) -> None:
        """Serve with ``settings``' limits (this process); access logs without query values."""
        cls.limits = settings
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, RedactQuery) for f in access.filters):
            access.addFilter(RedactQuery())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_timeout_s  # type: ignore[assignment]  # call_later takes floats
        self._in_head = True
        self._started = False  # a byte of the current head arrived
        self._head_bytes = 0
        self._too_big = False
        self._deadline: float | None = None
        self._phase = "idle"

    # ------------------------------------------------------------------ deadlines

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in [c for c in cls._live if c._deadline is not None and c._deadline <= now]:
            connection._expired()
        limits = cls.limits
        shortest = min(limits.idle_timeout_s, limits.header_timeout_s, limits.body_timeout_s)
        cls._sweeper = (
            loop.call_later(min(1.0, max(0.05, shortest / 4)), cls._sweep, loop) if cls._live else None
        )

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase == "idle":
            self.transport.close()
            return
        cycle = self.cycle
        if self._phase == "body" and cycle is not None:
            if cycle.response_started:  # answered already (e.g. 413): only the rest never came
                self.transport.close()
                return
            # the endpoint is waiting for the body: it sees a disconnect, its answer is dropped
            self.scope["evstream.body_timeout"] = True  # type: ignore[typeddict-unknown-key]
            cycle.disconnected = True
            cycle.message_event.set()
        self.refuse(408, "request timeout", f"the request's {self._phase} did not arrive within the limit")

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.limits.idle_timeout_s
        cls = type(self)
        cls._live.add(self)
        if cls._sweeper is None:
            cls._sweep(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self)._live.discard(self)
        self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if not self._started:
                self._started = True
                self._phase = "head"
                self._deadline = self.loop.time() + self.limits.header_timeout_s
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self.refuse(431, "request header fields too large", self._too_large())

    def _too_large(self) -> str:
        return (
            f"the request line and headers may hold at most {self.limits.max_header_bytes} bytes "
            f"in at most {self.limits.max_headers} fields"
        )

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            self._head_bytes > limits.max_header_bytes  # the reads may hold some body too: count
            and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > limits.max_header_bytes
        ):
            self._too_big = True
            raise _HeadTooLarge  # httptools raises HttpParserCallbackError: send_400_response
        self._in_head = False
        self._head_bytes = 0
        self._started = False
        self._phase = "body"
        self._deadline = self.loop.time() + limits.body_timeout_s
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_big:
            self.refuse(431, "request header fields too large", self._too_large())
        else:
            self.refuse(400, "bad request", "the request is not valid HTTP/1.1")

    def refuse(self, status: int, title: str, detail: str) -> None:
        """Answer ``status`` as problem+json and close the connection."""
        self._deadline = None
        log.info("refused a connection's request with %d: %s", status, detail)
        body = json.dumps(
            {"type": "about:blank", "title": title, "status": status, "detail": detail}
        ).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def redact_query(path: str) -> str:
    """``path`` with every query parameter's value replaced (tokens must not reach access logs)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    names = [part.split("=", 1)[0] for part in query.split("&")]
    return base + "?" + "&".join(f"{name}=<redacted>" for name in names)


class RedactQuery(logging.Filter):
    """A filter for ``uvicorn.access``: query strings are logged without their values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = redact_query(str(args[2]))
            record.args = tuple(args)
        return True
