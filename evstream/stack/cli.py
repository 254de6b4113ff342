"""``evstream stack``: bring the local Kafka + registry stack up, show it, stop it, wipe it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from evstream.cli_options import Output
from evstream.output import OutputFormat, console, err_console, print_json, table
from evstream.stack import jars, security
from evstream.stack.manager import LocalStack, ProcessStatus, default_data_dir
from evstream.stack.state import StackState

app = typer.Typer(
    help="Run a local Kafka (KRaft) broker or 3-node cluster plus Apicurio Registry as JVM processes "
    "(no Docker). Jars come from Maven Central once and are cached. The stack is durable: `down` then "
    "`up` restarts the same cluster with its topics, records, offsets and schemas; `reset` wipes it.",
    no_args_is_help=True,
)
node_app = typer.Typer(help="Stop or start one Kafka node of a running stack (its data is kept).")
app.add_typer(node_app, name="node")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the stack keeps configs, data, logs, cluster.json and stack.json "
        "(env EVSTREAM_STACK_DIR; default ~/.local/state/evstream/stack).",
        show_default=False,
    ),
]
StopTimeout = Annotated[float, typer.Option("--timeout", help="Seconds between SIGTERM and SIGKILL.")]


def _security(state: StackState) -> dict[str, object] | None:
    """What a client of a secured stack needs: where things are, never the secrets themselves."""
    if state.security_dir is None:
        return None
    found = security.StackSecrets(state.security_dir, "", "", "")
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": security.MECHANISM,
        "ca_file": str(found.ca_file),
        "admin_user": security.ADMIN_USER,
        "app_user": security.APP_USER,
        "secrets_file": str(found.secrets_file),
        "password_files": {
            user: str(found.password_file(user)) for user in (security.ADMIN_USER, security.APP_USER)
        },
    }


def _endpoints(state: StackState) -> dict[str, object]:
    return {
        "bootstrap_servers": state.bootstrap_servers,
        "registry_url": state.registry_url,
        "nodes": len(state.nodes),
        "cluster_id": state.cluster_id,
        "data_dir": str(state.data_dir),
        "pids": {f"kafka-{n.node_id}": n.pid for n in state.nodes}
        | ({"registry": state.registry.pid} if state.registry else {}),
        "security": _security(state),
    }


def _print_endpoints(state: StackState, output: OutputFormat, notices: list[str]) -> None:
    info = _endpoints(state)
    if output is OutputFormat.json:
        print_json(info | {"notices": notices})
        return
    for notice in notices:
        err_console.print(f"note: {notice}", markup=False, soft_wrap=True)
    console.print(f"bootstrap servers: [bold]{info['bootstrap_servers']}[/bold]")
    console.print(f"registry url:      [bold]{info['registry_url'] or '(no registry)'}[/bold]")
    console.print(f"cluster id:        {info['cluster_id']}")
    console.print(f"data dir:          {info['data_dir']}", markup=False)
    console.print(
        f"export EVSTREAM_BOOTSTRAP_SERVERS={state.bootstrap_servers}"
        + (f" EVSTREAM_REGISTRY_URL={state.registry_url}" if state.registry_url else ""),
        soft_wrap=True,
    )
    sec = _security(state)
    if sec is not None:
        files = sec["password_files"]
        assert isinstance(files, dict)
        console.print(
            f"export EVSTREAM_SECURITY_PROTOCOL=SASL_SSL EVSTREAM_SASL_MECHANISM={security.MECHANISM} "
            f"EVSTREAM_SASL_USERNAME={security.APP_USER} "
            f"EVSTREAM_SASL_PASSWORD_FILE={files[security.APP_USER]} "
            f"EVSTREAM_SSL_CA_LOCATION={sec['ca_file']}",
            soft_wrap=True,
            markup=False,
        )
        console.print(
            f"admin user: {security.ADMIN_USER} (password in {files[security.ADMIN_USER]})", markup=False
        )


@app.command()
def up(
    nodes: Annotated[
        int | None,
        typer.Option(
            help="1 for a single node, 3 for an RF=3 / min ISR 2 cluster (default: what the data dir "
            "was formatted with, else 1).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Bootstrap port of the first broker (default: the previous one, else a free port)."
        ),
    ] = None,
    registry_port: Annotated[
        int | None, typer.Option(help="Registry HTTP port (default: the previous one, else a free port).")
    ] = None,
    no_registry: Annotated[bool, typer.Option("--no-registry", help="Start Kafka only.")] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Format a new stack with a SASL_SSL listener (SCRAM-SHA-512, a CA made in the data dir), "
            "an admin and an 'app' user, and ACLs enforced (StandardAuthorizer, deny by default). "
            "A secured data dir always restarts secured.",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    output: Output = OutputFormat.table,
) -> None:
    """Start the stack (formatting storage only the first time) and wait until it is ready.

    A stopped stack restarts with its data and previous ports (a port now taken by something else
    is replaced, and says so). If only some processes died, only those are started. Running it
    while everything runs just prints the endpoints.
    """
    stack = LocalStack(data_dir, start_timeout=timeout)
    state = stack.up(
        nodes=nodes, port=port, registry=not no_registry, registry_port=registry_port, secure=secure
    )
    _print_endpoints(state, output, stack.notices)
    if output is OutputFormat.table:
        console.print("stop it with: evstream stack down  (data kept; `evstream stack reset` wipes it)")


def _print_status(rows: list[ProcessStatus], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json([{"name": r.name, "pid": r.pid, "alive": r.alive, "endpoint": r.endpoint} for r in rows])
        return
    table(
        None,
        ["process", "pid", "state", "endpoint"],
        [[r.name, r.pid, "running" if r.alive else "stopped", r.endpoint] for r in rows],
    )
    dead = [r.name for r in rows if not r.alive]
    if dead:
        err_console.print(
            f"note: {', '.join(dead)} not running; `evstream stack up` starts just those, with their data",
            markup=False,
            soft_wrap=True,
        )


@app.command()
def status(data_dir: DataDir = None, output: Output = OutputFormat.table) -> None:
    """Show the processes of the stack and where they listen. Exits 1 when nothing runs."""
    _print_status(LocalStack(data_dir).status(), output)


@app.command()
def down(
    data_dir: DataDir = None,
    timeout: StopTimeout = 30.0,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also wipe the data (as `stack reset --yes`).")
    ] = False,
    output: Output = OutputFormat.table,
) -> None:
    """Stop only the processes this stack started (by recorded pid); the data stays for the next `up`.

    Exits 1 when nothing runs (unless --purge).
    """
    stack = LocalStack(data_dir, stop_timeout=timeout)
    stopped = stack.down(purge=purge)
    if output is OutputFormat.json:
        print_json({"stopped": [r.name for r in stopped], "purged": purge})
        return
    if stopped:
        console.print(f"stopped {', '.join(r.name for r in stopped)}")
    if purge:
        console.print(f"wiped {stack.data_dir}", markup=False)
    else:
        console.print(f"data kept in {stack.data_dir}; `evstream stack up` resumes it", markup=False)


@app.command()
def reset(
    data_dir: DataDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    timeout: StopTimeout = 30.0,
) -> None:
    """Stop the stack and delete its data: topics, records, offsets and schemas. Asks first.

    Without a terminal to ask on, --yes is required (exit 2 otherwise).
    """
    stack = LocalStack(data_dir, stop_timeout=timeout)
    if not yes:
        if not sys.stdin.isatty():
            err_console.print(
                f"error: refusing to wipe {stack.data_dir} without confirmation; pass --yes",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        typer.confirm(
            f"Delete every topic, record, offset and schema of the stack in {stack.data_dir}?", abort=True
        )
    stopped = stack.reset()
    if stopped:
        console.print(f"stopped {', '.join(r.name for r in stopped)}")
    console.print(f"wiped {stack.data_dir}", markup=False)


@app.command()
def restart(
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    output: Output = OutputFormat.table,
) -> None:
    """Stop every process of the stack and start it again with the same data and ports."""
    stack = LocalStack(data_dir, start_timeout=timeout)
    state = stack.restart()
    _print_endpoints(state, output, stack.notices)


@node_app.command("stop")
def node_stop(
    node_id: Annotated[int, typer.Argument(help="The node to stop (1, or 1-3 in a 3-node stack).")],
    data_dir: DataDir = None,
    kill: Annotated[
        bool, typer.Option("--kill", help="SIGKILL (a crash) instead of a clean SIGTERM.")
    ] = False,
    timeout: StopTimeout = 30.0,
) -> None:
    """Stop one Kafka node; its data stays (`stack node start N` or `stack up` brings it back)."""
    LocalStack(data_dir, stop_timeout=timeout).stop_node(
        node_id, sig=signal.SIGKILL if kill else signal.SIGTERM
    )
    console.print(f"stopped kafka-{node_id}")


@node_app.command("start")
def node_start(
    node_id: Annotated[int, typer.Argument(help="The node to start again.")],
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until the cluster sees it.")] = 120.0,
) -> None:
    """Start one stopped Kafka node with its data and wait until the cluster sees it."""
    LocalStack(data_dir, start_timeout=timeout).start_node(node_id)
    console.print(f"started kafka-{node_id}")


@app.command()
def fetch(
    no_registry: Annotated[bool, typer.Option("--no-registry", help="Fetch the Kafka jars only.")] = False,
) -> None:
    """Resolve the pinned Kafka and registry artifacts into the cache (a warm cache runs no Maven)."""
    console.print(f"kafka jars: {jars.resolve_kafka()}")
    if not no_registry:
        console.print(f"registry:   {jars.resolve_registry()}")


__all__ = ["app", "default_data_dir"]
