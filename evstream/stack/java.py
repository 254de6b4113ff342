"""Find a Java runtime new enough for each stack component (no downloads, no network)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from evstream.errors import ToolNotFoundError

__all__ = ["KAFKA_MIN_JAVA", "REGISTRY_MIN_JAVA", "find_java", "java_version"]

KAFKA_MIN_JAVA = 17
# Apicurio Registry 3.3 is compiled for Java 21 (class file 65).
REGISTRY_MIN_JAVA = 21

_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')
_JVM_DIRS = (Path("/usr/lib/jvm"), Path("/opt/java"), Path("/usr/local/lib/jvm"))


@lru_cache(maxsize=32)
def java_version(java: Path) -> int:
    """Major version of the ``java`` executable at ``java`` (``1.8`` counts as 8)."""
    try:
        proc = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise ToolNotFoundError(f"cannot run {java}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolNotFoundError(f"{java} -version did not answer within 30s") from exc
    match = _VERSION_RE.search(proc.stderr + proc.stdout)
    if match is None:
        raise ToolNotFoundError(f"cannot tell the version of {java}: {proc.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _candidates(env_var: str, scan_jvm_dirs: bool) -> list[Path]:
    found: list[Path] = []
    for home in (os.environ.get(env_var), os.environ.get("JAVA_HOME")):
        if home:
            found.append(Path(home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    for root in _JVM_DIRS if scan_jvm_dirs else ():
        if root.is_dir():
            found.extend(sorted(root.glob("*/bin/java"), reverse=True))
    unique: dict[Path, Path] = {}
    for path in found:
        if path.is_file() and os.access(path, os.X_OK):
            unique.setdefault(path.resolve(), path)
    return list(unique.values())


def find_java(min_version: int, *, env_var: str, purpose: str, scan_jvm_dirs: bool = False) -> Path:
    """Return a ``java`` of at least ``min_version`` for ``purpose``.

    Looks at ``$<env_var>/bin/java``, ``$JAVA_HOME/bin/java``, ``java`` on PATH, then (with
    ``scan_jvm_dirs``) the usual JVM directories, and takes the first that is new enough.
    """
    candidates = _candidates(env_var, scan_jvm_dirs)
    if not candidates:
        raise ToolNotFoundError(
            f"java not found: {purpose} needs Java {min_version}+ "
            f"(install OpenJDK {min_version} or set {env_var} to a JDK home)"
        )
    seen = []
    for java in candidates:
        version = java_version(java)
        if version >= min_version:
            return java
        seen.append(f"{java} is {version}")
    raise ToolNotFoundError(
        f"{purpose} needs Java {min_version}+ but only found {', '.join(seen)}; "
        f"set {env_var} to a newer JDK home"
    )
