"""The embedded DynamoDB Local: no telemetry, dies with its parent, closes its log file.

These start their own engines in child processes (not the session engine): the point is what
happens to the JVM when the Python process that started it is SIGKILLed.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.engine import LocalEngine, free_port, java_command

ROOT = Path(__file__).resolve().parent.parent

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="DynamoDB Local needs java")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: A cold JVM on a shared 2-core machine: generous.
START_WAIT = 120.0
#: How long a JVM may outlive its SIGKILLed parent (SIGTERM, or the watchdog's poll, then JVM exit).
DEATH_WAIT = 15.0


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _read_line_with(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Read ``proc``'s stdout (unbuffered) until a line containing ``needle``; fail after ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if needle in line:
                return line
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no line with {needle!r} within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"parent exited (code {proc.wait()}) before printing {needle!r}")
            buf += chunk


def _jvm_children(parent: int) -> list[int]:
    """Pids of the DynamoDB Local JVMs whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"DynamoDBLocal.jar" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test if they are still there (never leave a JVM behind)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, bufsize=0)


def _kill_parent_and_check(parent: subprocess.Popen[bytes], jvm: int) -> None:
    assert _alive(jvm)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_dead(jvm, DEATH_WAIT), f"DynamoDB Local (pid {jvm}) outlived its SIGKILLed parent"


@needs_java
def test_engine_runs_without_telemetry(tmp_path: Path) -> None:
    jar = tmp_path / "DynamoDBLocal.jar"
    assert "-disableTelemetry" in java_command(jar, 8000)
    assert "-disableTelemetry" in java_command(jar, 8000, in_memory=False, db_path=tmp_path)


_PARENT = textwrap.dedent("""
    import sys, threading, time
    from kvstore.engine import LocalEngine

    engines = []
    if sys.argv[1] == "thread":  # the starting thread exits at once: the engine must survive that
        t = threading.Thread(target=lambda: engines.append(LocalEngine.start()))
        t.start()
        t.join()
    else:
        engines.append(LocalEngine.start())
    print("ENGINE", engines[0].process.pid, engines[0].guard, flush=True)
    time.sleep(600)
""")


@needs_java
@linux_only
@pytest.mark.parametrize(("where", "guard"), [("main", "pdeathsig"), ("thread", "watchdog")])
def test_engine_dies_with_sigkilled_python_parent(where: str, guard: str, reaper: list[int]) -> None:
    parent = _spawn([sys.executable, "-c", _PARENT, where])
    reaper.append(parent.pid)
    _, pid, used = _read_line_with(parent, b"ENGINE ", START_WAIT).split()
    jvm = int(pid)
    reaper.append(jvm)
    assert used.decode() == guard
    if where == "thread":
        time.sleep(1.5)  # PR_SET_PDEATHSIG would have fired when the starting thread ended
        assert _alive(jvm), "the engine died with the thread that started it"
    _kill_parent_and_check(parent, jvm)


@needs_java
@linux_only
def test_engine_dies_with_sigkilled_kvstore_local(reaper: list[int]) -> None:
    port = free_port()
    parent = _spawn([sys.executable, "-m", "kvstore", "local", "--port", str(port)])
    reaper.append(parent.pid)
    _read_line_with(parent, b"is listening on", START_WAIT)
    jvms = _jvm_children(parent.pid)
    reaper.extend(jvms)
    assert len(jvms) == 1, jvms
    _kill_parent_and_check(parent, jvms[0])
    with socket.socket() as s:  # the port is free again: nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


@needs_java
def test_log_file_closed_when_engine_stops() -> None:
    """No ResourceWarning, on a normal stop and on a start that gives up."""
    script = textwrap.dedent("""
        import gc
        from kvstore.engine import LocalEngine
        from kvstore.errors import EngineError

        try:
            LocalEngine.start(timeout=0.001)  # gives up at once: stops the JVM it started
        except EngineError as exc:
            assert "did not answer" in str(exc), exc
        else:
            raise AssertionError("expected EngineError")
        with LocalEngine.start() as engine:
            assert engine.log_file is not None and not engine.log_file.closed
        assert engine.log_file.closed
        assert engine.process.returncode is not None
        engine.stop()  # idempotent
        del engine
        gc.collect()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
                          cwd=ROOT, capture_output=True, text=True, timeout=START_WAIT * 2, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "ResourceWarning" not in proc.stderr, proc.stderr


@needs_java
def test_stop_dismisses_watchdog_and_closes_log() -> None:
    """An engine guarded by the watchdog (started off the main thread) leaves nothing behind."""
    engines: list[LocalEngine] = []
    t = threading.Thread(target=lambda: engines.append(LocalEngine.start()))
    t.start()
    t.join()
    (engine,) = engines
    try:
        assert engine.guard == "watchdog"
        watchdog = engine.watchdog
        assert watchdog is not None and watchdog.poll() is None
    finally:
        engine.stop()
    assert engine.process.returncode is not None
    assert watchdog.returncode == 0  # told to stop, did not signal anything
    assert engine.watchdog is None
    assert engine.log_file is not None and engine.log_file.closed
