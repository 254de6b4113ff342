"""``evstream stack``: bring the local Kafka + registry stack up, show it, take it down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evstream.output import OutputFormat, console, print_json, table
from evstream.stack import jars
from evstream.stack.manager import LocalStack, ProcessStatus, default_data_dir
from evstream.stack.state import StackState

app = typer.Typer(
    help="Run a local Kafka (KRaft) broker or 3-node cluster plus Apicurio Registry as JVM processes "
    "(no Docker). Jars come from Maven Central once and are cached.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the stack keeps configs, data, logs and stack.json "
        "[env EVSTREAM_STACK_DIR; default ~/.local/state/evstream/stack].",
        show_default=False,
    ),
]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")]


def _endpoints(state: StackState) -> dict[str, object]:
    return {
        "bootstrap_servers": state.bootstrap_servers,
        "registry_url": state.registry_url,
        "nodes": len(state.nodes),
        "data_dir": str(state.data_dir),
        "pids": {f"kafka-{n.node_id}": n.pid for n in state.nodes}
        | ({"registry": state.registry.pid} if state.registry else {}),
    }


def _print_endpoints(state: StackState, output: OutputFormat) -> None:
    info = _endpoints(state)
    if output is OutputFormat.json:
        print_json(info)
        return
    console.print(f"bootstrap servers: [bold]{info['bootstrap_servers']}[/bold]")
    console.print(f"registry url:      [bold]{info['registry_url'] or '(no registry)'}[/bold]")
    console.print(f"data dir:          {info['data_dir']}")
    console.print(
        f"export EVSTREAM_BOOTSTRAP_SERVERS={state.bootstrap_servers}"
        + (f" EVSTREAM_REGISTRY_URL={state.registry_url}" if state.registry_url else ""),
        soft_wrap=True,
    )


@app.command()
def up(
    nodes: Annotated[int, typer.Option(help="1 for a single node, 3 for an RF=3 / min ISR 2 cluster.")] = 1,
    data_dir: DataDir = None,
    port: Annotated[
        int | None, typer.Option(help="Bootstrap port of the first broker (default: a free port).")
    ] = None,
    registry_port: Annotated[
        int | None, typer.Option(help="Registry HTTP port (default: a free port).")
    ] = None,
    no_registry: Annotated[bool, typer.Option("--no-registry", help="Start Kafka only.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    output: Output = OutputFormat.table,
) -> None:
    """Start the stack and wait until Kafka answers metadata and the registry answers its API.

    Running it again while the stack runs just prints its endpoints.
    """
    stack = LocalStack(data_dir, start_timeout=timeout)
    state = stack.up(nodes=nodes, port=port, registry=not no_registry, registry_port=registry_port)
    _print_endpoints(state, output)
    if output is OutputFormat.table:
        console.print("stop it with: evstream stack down  (or make down)")


def _print_status(rows: list[ProcessStatus], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json([{"name": r.name, "pid": r.pid, "alive": r.alive, "endpoint": r.endpoint} for r in rows])
    else:
        table(
            None,
            ["process", "pid", "state", "endpoint"],
            [[r.name, r.pid, "running" if r.alive else "stopped", r.endpoint] for r in rows],
        )


@app.command()
def status(data_dir: DataDir = None, output: Output = OutputFormat.table) -> None:
    """Show the processes of the stack and where they listen. Exits 1 when nothing runs."""
    _print_status(LocalStack(data_dir).status(), output)


@app.command()
def down(
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 30.0,
    output: Output = OutputFormat.table,
) -> None:
    """Stop only the processes this stack started (by recorded pid). Exits 1 when nothing runs."""
    stopped = LocalStack(data_dir, stop_timeout=timeout).down()
    if output is OutputFormat.json:
        print_json({"stopped": [r.name for r in stopped]})
    else:
        console.print(f"stopped {', '.join(r.name for r in stopped)}")


@app.command()
def fetch(
    no_registry: Annotated[bool, typer.Option("--no-registry", help="Fetch the Kafka jars only.")] = False,
) -> None:
    """Resolve the pinned Kafka and registry artifacts into the cache (a warm cache runs no Maven)."""
    console.print(f"kafka jars: {jars.resolve_kafka()}")
    if not no_registry:
        console.print(f"registry:   {jars.resolve_registry()}")


__all__ = ["app", "default_data_dir"]
