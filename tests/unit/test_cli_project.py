"""The user's project: its catalog and schema history come from EVSTREAM_* or [tool.evstream];
``--app-dir`` finds the user's modules; a missing extra is named in one line (exit 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evstream.consumers.console.settings import hash_token
from evstream.errors import ConfigError, MissingExtraError
from evstream.imports import import_object, require_extra
from evstream.producers import EventProducer
from evstream.producers.gateway.settings import GatewaySettings
from evstream.schemas import Catalog
from evstream.schemas.domain import CATALOG
from evstream.settings import NO_CATALOG, ProjectSettings, find_pyproject, project_catalog
from tests.helpers import one_line_error, run_cli

DEMO = "evstream.schemas.domain:CATALOG"
NOWHERE = {"EVSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EVSTREAM_REGISTRY_URL": "http://127.0.0.1:1"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder outside this checkout as the working directory, no EVSTREAM_* project vars."""
    for name in ("EVSTREAM_CATALOG", "EVSTREAM_SCHEMA_DIR", "EVSTREAM_APP_DIR"):
        monkeypatch.delenv(name, raising=False)
    if find_pyproject(tmp_path) is not None:
        pytest.skip("the temporary folder sits below a pyproject.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"EVSTREAM_CATALOG", "EVSTREAM_SCHEMA_DIR"}}
    return env | NOWHERE


# ---------------------------------------------------------------------------- settings


def test_nothing_configured_means_no_catalog(project: Path) -> None:
    settings = ProjectSettings()
    assert settings.catalog is None
    assert settings.schema_dir == project / "schemas" / "avro"
    with pytest.raises(ConfigError, match=r"^no event catalog configured: set EVSTREAM_CATALOG="):
        project_catalog()


def test_pyproject_table_is_found_upwards_and_paths_are_relative_to_it(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "myapp"\n\n[tool.evstream]\ncatalog = "{DEMO}"\nschema_dir = "events/avro"\n'
    )
    deeper = project / "src" / "myapp"
    deeper.mkdir(parents=True)
    os.chdir(deeper)
    settings = ProjectSettings()
    assert settings.catalog == DEMO
    assert settings.schema_dir == project / "events" / "avro"
    assert project_catalog() is CATALOG


def test_schema_dir_defaults_to_the_project_root(project: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "myapp"\n')
    (project / "pkg").mkdir()
    os.chdir(project / "pkg")
    assert ProjectSettings().schema_dir == project / "schemas" / "avro"


def test_environment_wins_over_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "pyproject.toml").write_text('[tool.evstream]\ncatalog = "nowhere:CATALOG"\n')
    monkeypatch.setenv("EVSTREAM_CATALOG", DEMO)
    monkeypatch.setenv("EVSTREAM_SCHEMA_DIR", "elsewhere")
    settings = ProjectSettings()
    assert settings.catalog == DEMO
    assert settings.schema_dir == Path("elsewhere")


def test_unknown_table_keys_are_refused(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.evstream]\ncatalgo = "x:y"\n')
    with pytest.raises(ConfigError, match=re.escape("unknown [tool.evstream] key(s) catalgo")):
        ProjectSettings()


def test_this_checkout_names_the_demo_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library has no default catalog; this repository, as a project, names the demo one."""
    monkeypatch.delenv("EVSTREAM_CATALOG", raising=False)
    monkeypatch.delenv("EVSTREAM_SCHEMA_DIR", raising=False)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root / "tests")
    settings = ProjectSettings()
    assert settings.catalog == DEMO
    assert settings.schema_dir == root / "schemas" / "avro"


def test_producer_resolves_the_project_catalog_only_when_needed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = EventProducer()  # no catalog configured: constructing (and publishing models) is fine
    with pytest.raises(ConfigError, match=re.escape(NO_CATALOG)):
        _ = producer.catalog
    monkeypatch.setenv("EVSTREAM_CATALOG", DEMO)
    assert EventProducer().catalog is CATALOG
    mine = Catalog([])
    assert EventProducer(catalog=mine).catalog is mine


def test_gateway_catalog_defaults_to_the_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=re.escape(NO_CATALOG)):
        GatewaySettings()
    assert GatewaySettings(catalog="myapp.events:CATALOG").catalog == "myapp.events:CATALOG"
    monkeypatch.setenv("EVSTREAM_CATALOG", DEMO)
    assert GatewaySettings().catalog == DEMO


# ---------------------------------------------------------------------------- commands


def test_commands_without_a_catalog_say_how_to_configure_one(tmp_path: Path) -> None:
    if find_pyproject(tmp_path) is not None:
        pytest.skip("the temporary folder sits below a pyproject.toml")
    for args in (["schemas", "check"], ["publish", "orders", "--type", "OrderPlaced", "--data", "{}"]):
        proc = run_cli(*args, env=_clean_env(), cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert one_line_error(proc) == f"error: {NO_CATALOG}"


def test_schema_history_belongs_to_the_project(tmp_path: Path) -> None:
    if find_pyproject(tmp_path) is not None:
        pytest.skip("the temporary folder sits below a pyproject.toml")
    (tmp_path / "pyproject.toml").write_text(f'[tool.evstream]\ncatalog = "{DEMO}"\n')
    proc = run_cli("schemas", "bump", env=_clean_env(), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.avsc"))
    assert written
    assert all(p.startswith("schemas/avro/") and p.endswith("/v1.avsc") for p in written)
    again = run_cli("schemas", "check", env=_clean_env(), cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr


def test_a_project_subfolder_finds_the_project_modules(tmp_path: Path) -> None:
    """From a subfolder, the catalog and handlers resolve from the pyproject.toml's folder."""
    if find_pyproject(tmp_path) is not None:
        pytest.skip("the temporary folder sits below a pyproject.toml")
    (tmp_path / "pyproject.toml").write_text('[tool.evstream]\ncatalog = "mycat_sub:CATALOG"\n')
    (tmp_path / "mycat_sub.py").write_text(f"from {DEMO.split(':', maxsplit=1)[0]} import CATALOG\n")
    sub = tmp_path / "tests" / "deeper"
    sub.mkdir(parents=True)
    (tmp_path / "schemas" / "avro").mkdir(parents=True)
    proc = _isolated_cli("schemas", "bump", cwd=sub)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "schemas" / "avro").rglob("v1.avsc"))  # the project's history, not sub's


def test_a_catalog_module_that_raises_is_one_line_naming_where(tmp_path: Path) -> None:
    (tmp_path / "raising_cat.py").write_text("CATALOG = None\nraise ValueError('boom in user code')\n")
    env = _clean_env() | {"EVSTREAM_CATALOG": "raising_cat:CATALOG", "EVSTREAM_APP_DIR": str(tmp_path)}
    proc = run_cli("schemas", "check", env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert line.startswith("error: cannot load 'raising_cat:CATALOG': ValueError: boom in user code (")
    assert "raising_cat.py:2)" in line


# ---------------------------------------------------------------------------- --app-dir

HANDLERS_MODULE = "from evstream.consumers import Handlers\n\nhandlers = Handlers()\n"


def _isolated_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as the console script runs it: the working directory is NOT on sys.path (-I)."""
    return subprocess.run(
        [sys.executable, "-I", "-c", "from evstream.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_clean_env(),
        timeout=60,
        check=False,
    )


def test_consume_finds_a_module_in_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "mymod_here.py").write_text(HANDLERS_MODULE)
    found = _isolated_cli("consume", "g", "mymod_here:missing", cwd=tmp_path)
    assert one_line_error(found) == (
        "error: cannot load 'mymod_here:missing': module 'mymod_here' has no attribute 'missing'"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = _isolated_cli("consume", "g", "mymod_here:missing", cwd=elsewhere)
    assert "No module named 'mymod_here'" in one_line_error(lost)
    given = _isolated_cli("consume", "g", "mymod_here:missing", "--app-dir", str(tmp_path), cwd=elsewhere)
    assert "has no attribute 'missing'" in one_line_error(given)


def test_worker_takes_app_dir(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "mymod_worker.py").write_text(HANDLERS_MODULE)
    proc = _isolated_cli("worker", "mymod_worker:handlers", "--app-dir", str(app_dir), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert one_line_error(proc) == (
        "error: a Handlers worker needs a consumer group: --group or EVSTREAM_WORKER_GROUP"
    )


def test_import_object_puts_app_dir_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "mymod_inproc.py").write_text("VALUE = 42\n")
    assert import_object("mymod_inproc:VALUE", int, default_attr="x", app_dir=tmp_path) == 42
    assert sys.path[0] == str(tmp_path.resolve())
    monkeypatch.delitem(sys.modules, "mymod_inproc")


# ---------------------------------------------------------------------------- missing extras


def _without(
    modules: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``modules`` made unimportable (as if their extra were not installed)."""
    script = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None\n"
        "from evstream.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=_clean_env() | (env or {}),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("modules", "args", "env", "line"),
    [
        (
            ["fastapi"],
            ["gateway"],
            {},
            "the gateway needs the 'gateway' extra: pip install 'evstream[gateway]'",
        ),
        (
            ["uvicorn"],
            ["gateway"],
            {},
            "the gateway needs the 'gateway' extra: pip install 'evstream[gateway]'",
        ),
        (
            ["faust"],
            ["worker", "evstream.streams.examples.faust_totals:app"],
            {},
            "running faust apps needs the 'faust' extra: pip install 'evstream[faust]'",
        ),
        (
            ["rocksdict"],
            ["worker", "evstream.streams.demo:app"],
            {"EVSTREAM_STREAMS_STORE": "rocksdb://"},
            "the rocksdb:// table store needs the 'rocksdb' extra: pip install 'evstream[rocksdb]'",
        ),
        (
            ["starlette"],
            ["console"],
            {},
            "the console needs the 'console' extra: pip install 'evstream[console]'",
        ),
        (
            ["uvicorn"],
            ["console", "--port", "0"],
            {},
            "the console needs the 'console' extra: pip install 'evstream[console]'",
        ),
    ],
)
def test_missing_extra_is_one_line_and_exit_2(
    modules: list[str], args: list[str], env: dict[str, str], line: str
) -> None:
    proc = _without(modules, *args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert one_line_error(proc) == f"error: {line}"


GATEWAY_EXTRA = ["fastapi", "starlette", "uvicorn", "uvloop", "httptools", "limits"]


def test_gateway_help_and_token_need_no_gateway_extra() -> None:
    """As for the console: only serving needs the extra; its help and a token are plain Python."""
    helped = _without(GATEWAY_EXTRA, "gateway", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "Serve the HTTP publishing gateway" in helped.stdout
    assert "token" in helped.stdout
    proc = _without(
        GATEWAY_EXTRA, "gateway", "token", "--name", "billing", "--types", "OrderPlaced", "-o", "json"
    )
    assert proc.returncode == 0, proc.stderr
    token, entry = proc.stdout.splitlines()
    assert token.startswith("evs_")
    assert json.loads(entry) == {
        "name": "billing",
        "sha256": hash_token(token),
        "event_types": ["OrderPlaced"],
    }
    served = _without(["limits"], "gateway", "--port", "0")  # serving still names the extra
    assert served.returncode == 2, served.stderr
    assert (
        one_line_error(served)
        == "error: the gateway needs the 'gateway' extra: pip install 'evstream[gateway]'"
    )


def test_console_token_needs_no_console_extra() -> None:
    """Making an operator token is plain Python: it works where the server cannot be installed."""
    proc = _without(["starlette", "uvicorn"], "console", "token", "--name", "ops")
    assert proc.returncode == 0, proc.stderr
    token, entry = proc.stdout.splitlines()
    assert len(token) >= 32
    assert json.loads(entry) == {"name": "ops", "sha256": hash_token(token), "permissions": ["read"]}


def test_require_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingExtraError) as caught:
        require_extra("otel", "opentelemetry")
    assert caught.value.extra == "otel"
    assert caught.value.module == "opentelemetry"
    assert str(caught.value) == "OpenTelemetry tracing needs the 'otel' extra: pip install 'evstream[otel]'"
    assert isinstance(caught.value, ConfigError)


def test_a_stream_app_needs_no_faust() -> None:
    """The stream API runs on evstream's own engine: the demo app and its engine import with
    faust, mode and aiokafka unimportable."""
    script = (
        "import sys\n"
        "for name in ('faust', 'mode', 'aiokafka'):\n"
        "    sys.modules[name] = None\n"
        "from evstream.streams.demo import app\n"
        "from evstream.streams.engine.runner import StreamRunner\n"
        "print(app.app_id, StreamRunner.__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["evstream-demo", "StreamRunner"]
