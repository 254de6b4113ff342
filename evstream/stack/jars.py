"""Resolve the pinned Kafka and Apicurio Registry artifacts from Maven Central into a cache.

The poms in ``deploy/maven/`` pin every version. Each resolution lands in a directory named
after the pom's hash, completed atomically, so a warm cache runs no Maven at all and a pom
change resolves afresh.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from evstream.errors import DependencyResolutionError, StackError, ToolNotFoundError

__all__ = ["cache_dir", "deploy_dir", "resolve_kafka", "resolve_registry"]

_COMPLETE = ".complete"


def deploy_dir() -> Path:
    """The stack's poms and config templates, shipped as package data (``evstream/_deploy``).

    ``EVSTREAM_DEPLOY_DIR`` points elsewhere (a folder with the same ``maven/``, ``kafka/`` and
    ``registry/`` layout), for example to try other pins.
    """
    override = os.environ.get("EVSTREAM_DEPLOY_DIR")
    # Package data: a real directory in a wheel install and in an editable one (a symlink).
    path = Path(override) if override else Path(str(resources.files("evstream") / "_deploy"))
    if not (path / "maven").is_dir():
        raise StackError(f"deploy assets not found at {path}; reinstall evstream or set EVSTREAM_DEPLOY_DIR")
    return path


def cache_dir() -> Path:
    """Where resolved jars live: ``EVSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/evstream``."""
    override = os.environ.get("EVSTREAM_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evstream"


def _pom_key(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:12]


def _run_maven(pom: Path, output: Path, *extra: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolNotFoundError(
            "mvn not found on PATH: Maven is needed once to fetch the Kafka/registry jars "
            "(apt-get install maven)"
        )
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={output}",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
        raise DependencyResolutionError(
            f"Maven could not resolve {pom}: {(lines or ['(no output)'])[0][:400]}"
        )


def _resolve(name: str, pom: Path, fill: Callable[[Path], None]) -> Path:
    target = cache_dir() / f"{name}-{_pom_key(pom)}"
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        fill(staging)
        (staging / _COMPLETE).write_text(pom.read_text())
        try:
            staging.rename(target)
        except OSError:
            if not (target / _COMPLETE).exists():  # lost a race to a concurrent resolver: fine
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_kafka() -> Path:
    """Directory holding the Kafka broker and tools jars, resolving them once."""
    pom = deploy_dir() / "maven" / "kafka" / "pom.xml"
    return (
        _resolve("kafka", pom, lambda out: _run_maven(pom, out / "libs", "-DincludeScope=runtime")) / "libs"
    )


def resolve_registry() -> Path:
    """Home of the unpacked Apicurio Registry (holds ``quarkus-run.jar``), resolving once."""
    pom = deploy_dir() / "maven" / "registry" / "pom.xml"

    def fill(out: Path) -> None:
        download = out / "download"
        _run_maven(pom, download)
        archives = sorted(download.glob("*.tar.gz"))
        if len(archives) != 1:
            raise DependencyResolutionError(
                f"expected one registry archive in {download}, found {len(archives)}"
            )
        with tarfile.open(archives[0]) as archive:
            archive.extractall(out / "home", filter="data")
        shutil.rmtree(download)
        if not (out / "home" / "quarkus-run.jar").is_file():
            raise DependencyResolutionError("the registry archive has no quarkus-run.jar")

    return _resolve("apicurio", pom, fill) / "home"
