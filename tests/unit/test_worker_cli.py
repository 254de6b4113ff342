"""`evstream worker` refuses what it cannot run with one line and exit 2, before any connection."""

from __future__ import annotations

import pytest

from tests.helpers import one_line_error, run_cli

NOWHERE = {"EVSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EVSTREAM_REGISTRY_URL": "http://127.0.0.1:1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module:app"], "cannot load 'no_such_module:app'"),
        (
            ["evstream.schemas.domain:CATALOG"],
            "cannot run a Catalog: give an evstream.streams.App, a faust.App or a consumers.Handlers",
        ),
        (["tests.integration.sample_handlers:handlers"], "a Handlers worker needs a consumer group"),
        (["evstream.streams.demo:app", "--port", "70000"], "invalid EVSTREAM_WORKER_HTTP_PORT"),
    ],
)
def test_bad_targets_exit_2_with_one_line(args: list[str], message: str) -> None:
    proc = run_cli("worker", *args, env=NOWHERE, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc)
