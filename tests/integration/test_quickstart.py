"""The README quickstart, executed as written, in a scratch project outside the checkout.

The built wheel (no extras) is installed into a fresh venv; the project beside it has its own
``schemas.py``, ``producers.py``, ``consumers.py`` and ``streams.py`` (names evstream must never
shadow or be shadowed by). Every README block tagged ``file=PATH`` is written there and every
``bash run`` block is run in order, with that venv first on PATH and a private stack data dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Modules a user project may well have; evstream must work beside them.
SHADOWS = ("schemas", "producers", "consumers", "streams")


def section(readme: str) -> str:
    """The README's Quickstart section."""
    return readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]


def quickstart_blocks(readme: str) -> list[tuple[str, str, str]]:
    """``(kind, target, text)`` per tagged block of the README's Quickstart section, in order.

    ``kind`` is ``file`` (target: the path to write) or ``run`` (a bash block to execute).
    """
    blocks: list[tuple[str, str, str]] = []
    for _lang, info, text in _BLOCK.findall(section(readme)):
        tags = dict(tag.partition("=")[::2] for tag in info.split())
        if "file" in tags:
            blocks.append(("file", tags["file"], text))
        elif "run" in tags:
            blocks.append(("run", "", text))
    return blocks


def test_readme_quickstart_has_files_and_commands(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    blocks = quickstart_blocks(readme)
    files = [target for kind, target, _ in blocks if kind == "file"]
    assert {"pyproject.toml", "topics.yaml"} <= set(files)
    assert any(kind == "run" for kind, _, _ in blocks)
    assert "pip install 'evstream[testing]'" in section(readme)  # what wheel_venv installs
    body = "\n".join(text for _, _, text in blocks)
    assert len(body.splitlines()) <= 60  # a quickstart, not a manual


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel and no extras (plus pytest for the handler test)."""
    repo_root = Path(__file__).resolve().parents[2]
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVSTREAM_", "VIRTUAL_ENV", "PYTHON"))}
    # Build from a copy of the sources: an in-tree build/ left from an earlier build could add stale
    # modules to the wheel. The room symlinks are copied as links, as git checks them out.
    source = base / "src"
    shutil.copytree(
        repo_root,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", ".stack", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    built = run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(base / "dist"), str(source)],
        source,
        env,
        600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheels = list((base / "dist").glob("evstream-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], base, env, 120)
    assert created.returncode == 0, created.stderr
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "-c",
        str(repo_root / "constraints.txt"),
    ]
    # What the quickstart's install line says: the wheel with its `testing` extra (pytest).
    installed = run([*pip, f"{wheels[0]}[testing]"], base, env, 900)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return venv


def test_the_wheel_installs_no_extras_and_says_which_one_is_missing(wheel_venv: Path, tmp_path: Path) -> None:
    env = {"PATH": f"{wheel_venv / 'bin'}:{os.environ['PATH']}", "HOME": os.environ["HOME"]}
    python = str(wheel_venv / "bin" / "python")
    for heavy in ("faust", "fastapi", "uvicorn", "aiokafka"):
        found = run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({heavy!r}))"], tmp_path, env, 60
        )
        assert found.stdout.strip() == "None", f"{heavy} installed without its extra: {found.stdout}"
    gateway = run([str(wheel_venv / "bin" / "evstream"), "gateway"], tmp_path, env, 60)
    assert gateway.returncode == 2, gateway.stdout + gateway.stderr
    lines = gateway.stderr.strip().splitlines()
    assert len(lines) == 1, gateway.stderr
    assert "evstream[gateway]" in lines[0]


def test_quickstart_runs_as_written_beside_shadowing_modules(
    repo_root: Path, wheel_venv: Path, tmp_path: Path
) -> None:
    project = tmp_path / "myproject"
    project.mkdir()
    for name in SHADOWS:  # a user's own modules with evstream's room names
        (project / f"{name}.py").write_text(f'"""The user\'s own {name} module."""\nOWNER = "user"\n')
    blocks = quickstart_blocks((repo_root / "README.md").read_text())
    stack_dir = tmp_path / "stack"
    env = {
        "PATH": f"{wheel_venv / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ["HOME"],
        "EVSTREAM_STACK_DIR": str(stack_dir),
        "COLUMNS": "200",
    }
    if "EVSTREAM_CACHE_DIR" in os.environ:
        env["EVSTREAM_CACHE_DIR"] = os.environ["EVSTREAM_CACHE_DIR"]
    transcript: list[str] = []
    try:
        for kind, target, text in blocks:
            if kind == "file":
                path = project / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                continue
            done = run(["bash", "-euo", "pipefail", "-c", text], project, env, 600)
            transcript.append(f"$ {text}\n{done.stdout}{done.stderr}")
            assert done.returncode == 0, "\n".join(transcript)[-6000:]
    finally:
        if (stack_dir / "stack.json").exists():
            run([str(wheel_venv / "bin" / "evstream"), "stack", "down"], project, env, 120)
    output = "\n".join(transcript)
    # The user's modules stayed theirs and evstream ran from the wheel, not from the checkout.
    assert str(repo_root) not in output
    assert "placed o-1 for ada: 1999" in output  # the handler ran on the published event
    assert "1 passed" in output  # the handler test ran through the harness
