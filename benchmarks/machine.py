"""Facts about where a run happened, so results from different machines are never confused.

Machine (CPU, memory, load), software (Python, aiobotocore, kvstore, git revision) and the engine:
DynamoDB Local's version is read from its jar (``pom.properties``), either the one the harness
started or, for an ``--endpoint`` on loopback, the one the Java process listening on that port runs.
Everything here is best effort: a fact that cannot be found is recorded as None, never guessed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import urllib.parse
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["engine_info", "jar_version", "load_avg", "machine_info", "software_info"]

_POM = "META-INF/maven/software/amazon/dynamodb/DynamoDBLocal/pom.properties"


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or None


def _mem_total_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS and load when the run started."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "mem_total_mb": _mem_total_mb(),
        "load_avg_at_start": load_avg(),
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_revision(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def software_info() -> dict[str, Any]:
    """Python and library versions, and the git revision of the working tree."""
    kvstore_version: str | None
    try:
        import kvstore

        kvstore_version = getattr(kvstore, "__version__", None)
    except ImportError:
        kvstore_version = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "aiobotocore": _version("aiobotocore"),
        "botocore": _version("botocore"),
        "aiohttp": _version("aiohttp"),
        "kvstore": kvstore_version,
        "git": _git_revision(Path(__file__).resolve().parent.parent),
    }


def jar_version(jar: Path) -> str | None:
    """DynamoDB Local's version as recorded inside its jar."""
    with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile), zipfile.ZipFile(jar) as zf:
        for line in zf.read(_POM).decode().splitlines():
            if line.startswith("version="):
                return line.partition("=")[2].strip()
    return None


def _listening_jar(port: int) -> Path | None:
    """The DynamoDBLocal.jar of a local Java process started with ``-port <port>`` (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (pid_dir / "cmdline").read_bytes().split(b"\0")
            argv = [a.decode(errors="replace") for a in args if a]
            if not any(a.endswith("DynamoDBLocal.jar") for a in argv):
                continue
            if "-port" not in argv or argv[argv.index("-port") + 1 : argv.index("-port") + 2] != [str(port)]:
                continue
            jar = Path(next(a for a in argv if a.endswith("DynamoDBLocal.jar")))
            if not jar.is_absolute():
                jar = (pid_dir / "cwd").resolve() / jar
            return jar
    return None


def engine_info(endpoint: str, *, jar: Path | None, managed: bool) -> dict[str, Any]:
    """What answers at ``endpoint``: DynamoDB Local's version, and whether the harness started it."""
    info: dict[str, Any] = {"endpoint": endpoint, "managed": managed, "name": None, "version": None, "jar": None}
    if jar is None and not managed:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
            jar = _listening_jar(parts.port)
    if jar is not None:
        info.update({"name": "DynamoDB Local", "version": jar_version(jar), "jar": str(jar)})
    if managed:
        from kvstore.engine import ENGINE_PACKAGE

        info["package"] = ENGINE_PACKAGE
    return info
