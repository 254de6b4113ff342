"""The root command: lazy (its help imports no client library), every command listed once, and
every option's help present in the rendered ``--help`` (rich markup cannot swallow it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer.main
from typer import _click as click
from typer.core import TyperGroup
from typer.testing import CliRunner

from evstream.cli import COMMANDS, app
from tests.helpers import run_cli

HEAVY = ["confluent_kafka", "faust", "fastapi", "uvicorn", "pydantic", "evstream.schemas"]
BOX = re.compile(r"[│╭╮╰╯─┃━]")


def test_root_help_lists_every_command_once() -> None:
    proc = run_cli("--help", env={"COLUMNS": "200"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = [
        match.group(1)
        for line in proc.stdout.splitlines()
        if (match := re.match(r"^│ (\S+)\s{2,}\S", line)) and not match.group(1).startswith("-")
    ]
    assert listed == list(COMMANDS)
    for name, entry in COMMANDS.items():
        assert proc.stdout.count(entry.summary) == 1, name


def test_root_help_imports_no_heavy_module() -> None:
    """A deterministic stand-in for "evstream --help starts fast": what it imports, not how long."""
    script = (
        "import json, sys, typer.main\n"
        "from typer import _click as click\n"
        "from evstream.cli import app\n"
        "root = typer.main.get_command(app)\n"
        "root.get_help(click.Context(root, info_name='evstream'))\n"  # rich prints it to stdout
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    *help_lines, loaded = proc.stdout.splitlines()
    assert all(name in "\n".join(help_lines) for name in COMMANDS)
    assert json.loads(loaded) == []


def _walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, command
    if isinstance(command, TyperGroup):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from _walk(sub, [*path, name])


ALL_COMMANDS = list(_walk(typer.main.get_command(app), []))


def _flat(text: str) -> str:
    return " ".join(BOX.sub(" ", text).split())


def test_every_root_command_loads() -> None:
    loaded = {path[0] for path, _ in ALL_COMMANDS if path}
    assert loaded == set(COMMANDS)


@pytest.mark.parametrize(
    ("path", "command"), ALL_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_every_option_has_help_and_help_shows_it(
    path: list[str], command: click.Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping or ellipsis inside a help cell
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    for param in command.params:
        text = getattr(param, "help", None) or ""
        assert text.strip(), f"evstream {' '.join(path)}: {param.name} has no help"
        # Only rich's escape may remain (\[...] renders as [...]); anything else must show verbatim.
        assert _flat(text.replace("\\[", "[")) in shown, f"evstream {' '.join(path)}: {param.name}"
