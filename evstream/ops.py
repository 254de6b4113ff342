"""The operations surface of a worker process: ``/healthz``, ``/readyz`` and ``/metrics``.

A small threaded HTTP server (standard library) next to whatever the process runs:

- ``/healthz``: 200 while the process serves requests (liveness);
- ``/readyz``: 200 once the readiness check passes and every started
  :class:`~evstream.producers.EventProducer` of the process is healthy, else 503 with the reason
  (for example "recovering tables", "waiting for partition assignment" or a producer's fatal error);
- ``/metrics``: the process's Prometheus metrics (text exposition format).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["OpsServer", "Readiness"]

Readiness = Callable[[], str | None]  # None when ready, else why not


class OpsServer:
    """Serves the three endpoints on ``host:port`` (port 0: any free port) in a daemon thread."""

    def __init__(self, host: str, port: int, ready: Readiness) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port."""
        from evstream.producers.producer import producer_health  # noqa: PLC0415 - confluent-kafka

        component = self.ready

        def check() -> str | None:
            return component() or producer_health()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    try:
                        reason = check()
                    except Exception as exc:  # a failing check means not ready, never a crash
                        reason = f"readiness check failed: {exc!r}"
                    if reason is None:
                        self._send(200, b"ready\n", "text/plain")
                    else:
                        self._send(503, f"not ready: {reason}\n".encode(), "text/plain")
                elif self.path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="evstream-ops", daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
