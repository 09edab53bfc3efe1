"""The ``kvstore`` command, in-process (``main([...])``) and as a subprocess, against DynamoDB Local.

``main`` runs its own event loop, so these are plain (non-async) tests. Every data command gets
``--endpoint`` and ``--table`` of the session engine and a fresh table.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import assert_one_error_line, run

from kvstore.cli import main, progress_bar
from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import free_port
from kvstore.tree import TreeNode, draw_tree

REPO = Path(__file__).resolve().parent.parent





# -- put / get ---------------------------------------------------------------------------------


def test_put_get_text(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    assert run(capsysbinary, "put", "apps/web/config", '{"port": 8080} é', *where) == (0, b"", "")
    # Exactly the stored bytes: no newline added when stdout is not a terminal.
    assert run(capsysbinary, "get", "apps/web/config", *where) == (0, '{"port": 8080} é'.encode(), "")


def test_put_stdin_is_binary_safe(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, where: list[str]
) -> None:
    data = bytes(range(256)) * 3 + b"\r\n\x00"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run(capsysbinary, "put", "blob/stdin", "-", *where)[0] == 0
    assert run(capsysbinary, "get", "blob/stdin", *where) == (0, data, "")


def test_put_file_is_binary_safe(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, where: list[str]) -> None:
    data = bytes(reversed(range(256))) * 10
    f = tmp_path / "value.bin"
    f.write_bytes(data)
    assert run(capsysbinary, "put", "blob/file", "--file", str(f), *where)[0] == 0
    assert run(capsysbinary, "get", "blob/file", *where) == (0, data, "")
    # Overwrite with the empty value: an empty file is a value too.
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert run(capsysbinary, "put", "blob/file", "-f", str(empty), *where)[0] == 0
    assert run(capsysbinary, "get", "blob/file", *where) == (0, b"", "")


def test_put_argv_bytes_survive(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    # An undecodable byte in argv reaches Python as a lone surrogate (surrogateescape); the
    # stored value must be the original byte.
    assert run(capsysbinary, "put", "blob/argv", "a\udcffb", *where)[0] == 0
    assert run(capsysbinary, "get", "blob/argv", *where) == (0, b"a\xffb", "")


def test_options_before_the_command_work_too(
    capsysbinary: pytest.CaptureFixture[bytes], dynamodb_endpoint: str, table_name: str
) -> None:
    assert main(["--endpoint", dynamodb_endpoint, "--table", table_name, "put", "k", "v"]) == 0
    assert main(["--table", table_name, "get", "k", "--endpoint", dynamodb_endpoint]) == 0
    assert capsysbinary.readouterr().out == b"v"


def test_command_line_beats_environment(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, where: list[str]
) -> None:
    # The library lets AWS_DYNAMODB_TABLE override the config; an explicit --table must win.
    monkeypatch.setenv("AWS_DYNAMODB_TABLE", "kvtest-not-this-one")
    assert run(capsysbinary, "put", "k", "v", *where)[0] == 0
    monkeypatch.delenv("AWS_DYNAMODB_TABLE")
    assert run(capsysbinary, "get", "k", *where) == (0, b"v", "")


# -- list / tree / delete ----------------------------------------------------------------------


def _put_tree(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    for key in ("apps/web/config", "apps/web/secrets/db", "apps/api/config", "users/alice", "apps"):
        assert run(capsysbinary, "put", key, "x", *where)[0] == 0


def test_list(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    _put_tree(capsysbinary, where)
    assert run(capsysbinary, "list", *where) == (0, b"apps\napps/\nusers/\n", "")
    assert run(capsysbinary, "list", "apps/web/", *where) == (0, b"config\nsecrets/\n", "")
    assert run(capsysbinary, "list", "apps/web", *where) == (0, b"config\nsecrets/\n", "")
    assert run(capsysbinary, "list", "nothing/here/", *where) == (0, b"", "")


def test_tree(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    _put_tree(capsysbinary, where)
    code, out, _ = run(capsysbinary, "tree", *where)
    assert code == 0
    assert out.decode().splitlines() == [
        ".",
        "├── apps",
        "├── apps/",
        "│   ├── api/",
        "│   │   └── config",
        "│   └── web/",
        "│       ├── config",
        "│       └── secrets/",
        "│           └── db",
        "└── users/",
        "    └── alice",
        "",
        "5 folders, 5 keys",
    ]
    code, out, _ = run(capsysbinary, "tree", "apps", "--depth", "1", *where)
    assert (code, out.decode().splitlines()) == (0, ["apps/", "├── api/", "└── web/", "", "2 folders, 0 keys"])
    code, out, _ = run(capsysbinary, "tree", "apps/web/", "-L", "2", *where)
    expected = ["apps/web/", "├── config", "└── secrets/", "    └── db", "", "1 folder, 2 keys"]
    assert out.decode().splitlines() == expected


def test_draw_tree_shape() -> None:
    nodes = [TreeNode("a"), TreeNode("a/", [TreeNode("b/", [TreeNode("c")]), TreeNode("d")]), TreeNode("e/", [])]
    assert draw_tree("", nodes) == [
        ".", "├── a", "├── a/", "│   ├── b/", "│   │   └── c", "│   └── d", "└── e/", "", "3 folders, 3 keys",
    ]
    assert draw_tree("x", []) == ["x/", "", "0 folders, 0 keys"]


def test_delete(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    _put_tree(capsysbinary, where)
    assert run(capsysbinary, "delete", "apps/web/secrets/db", *where) == (0, b"", "")
    # The emptied folder vanished; its sibling key is still there.
    assert run(capsysbinary, "list", "apps/web/", *where) == (0, b"config\n", "")
    assert run(capsysbinary, "delete", "apps/web/config", "apps/api/config", *where)[0] == 0
    # Deleting the folder's keys leaves key "apps", but folder "apps/" is gone.
    assert run(capsysbinary, "list", *where) == (0, b"apps\nusers/\n", "")
    # Deleting a missing key succeeds.
    assert run(capsysbinary, "delete", "apps/web/config", *where) == (0, b"", "")


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["/leading", "trailing/", "a//b", ""])
def test_bad_key_is_a_usage_error(capsysbinary: pytest.CaptureFixture[bytes], where: list[str], key: str) -> None:
    for argv in (["put", key, "v"], ["get", key], ["delete", key], ["lock", key, "--value", "v"]):
        code, out, err = run(capsysbinary, *argv, *where)
        assert code == 2, (argv, err)
        assert out == b""
        assert_one_error_line(err)
        assert "invalid key" in err


def test_missing_key(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    run(capsysbinary, "put", "some/key", "v", *where)  # the table exists; the key does not
    code, out, err = run(capsysbinary, "get", "no/such/key", *where)
    assert (code, out) == (1, b"")
    assert_one_error_line(err)
    assert "'no/such/key' not found" in err


def test_get_of_a_folder_hints_at_list(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    run(capsysbinary, "put", "a/b/c", "v", *where)
    code, _, err = run(capsysbinary, "get", "a/b", *where)
    assert code == 1
    assert_one_error_line(err)
    assert "kvstore list a/b/" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["put", "k"], "exactly one of VALUE"),
        (["put", "k", "v", "--file", "f"], "exactly one of VALUE"),
        (["put", "k", "--file", "/no/such/file"], "cannot read /no/such/file"),
        (["get"], "required: KEY"),
        (["get", "a", "b"], "unrecognized arguments: b"),
        (["frobnicate"], "invalid choice"),
        (["--config", "nonsense", "get", "k"], "--config expects KEY=VALUE"),
        (["--config", "max_parallel=many", "get", "k"], 'invalid max parallel: "many"'),
        (["--config", "no_such_key=1", "get", "k"], "unknown config key"),
        (["tree", "--depth", "0"], "must be at least 1"),
        (["lock", "x"], "required: --value"),
        (["lock", "x", "--value", "v", "--ttl", "-1"], "positive number"),
        (["--local", "get", "k"], "exclude each other"),
        (["--aws", "--local", "get", "k"], "not allowed with argument"),
    ],
)
def test_usage_errors(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsysbinary, *argv, *where)
    assert (code, out) == (2, b""), err
    assert_one_error_line(err)
    assert message in err


def test_no_endpoint_never_means_real_aws(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> None:
    monkeypatch.delenv("AWS_DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.delenv("KVSTORE_LOCAL", raising=False)
    code, out, err = run(capsysbinary, "put", "k", "v", "--table", table_name)
    assert (code, out) == (2, b"")
    assert_one_error_line(err)
    assert "no DynamoDB endpoint configured" in err and "--local" in err and "--aws" in err


def test_unreachable_endpoint(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsysbinary, "get", "k", "--endpoint", closed, "--config", "dynamodb_max_retries=0")
    assert (code, out) == (3, b"")  # an engine failure, told apart from "not found" (1)
    assert_one_error_line(err)
    assert "unreachable" in err and "kvstore local" in err


def test_help_explains_where_requests_go(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, _ = run(capsysbinary, "--help")
    assert code == 0
    text = out.decode()
    for needle in ("--local", "--aws", "AWS_DYNAMODB_ENDPOINT", "KVSTORE_LOCAL", "never reaches real AWS"):
        assert needle in text


def test_local_flag_starts_a_throwaway_engine(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DYNAMODB_ENDPOINT", raising=False)
    code, out, err = run(capsysbinary, "--local", "tree")
    assert (code, out) == (0, b".\n\n0 folders, 0 keys\n")
    assert "throwaway DynamoDB Local" in err


# -- subprocesses: lock, local, bench ----------------------------------------------------------


class Lines:
    """A child process whose stdout lines are collected by a thread, so tests can wait for one."""

    def __init__(self, argv: list[str], **kw: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw  # type: ignore[call-overload]
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """The first (new) line containing ``text``; fails with everything seen so far."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {timeout}s; got {self.lines}")
            if line is None:
                pytest.fail(f"process exited ({self.proc.wait()}) before {text!r}; got {self.lines}")
            self.lines.append(line)
            if text in line:
                return line

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status, collecting the remaining lines."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn() -> Iterator[list[Lines]]:
    """Children started by a test; killed at the end if the test left them running."""
    children: list[Lines] = []
    yield children
    for child in children:
        child.kill()


def lock_state(conf: dict[str, str], name: str) -> tuple[bool, str]:
    """``value()`` of lock ``name``, read by a separate client."""

    async def read() -> tuple[bool, str]:
        async with await DynamoDBBackend.create(conf) as store:
            return await store.lock_with(name, "observer").value()

    return asyncio.run(read())


def _token(line: str) -> int:
    return int(line.rsplit("fencing token", 1)[1].strip(" )"))


def test_lock_holds_then_resigns_on_sigint(
    spawn: list[Lines], where: list[str], dynamodb_conf: dict[str, str]
) -> None:
    a = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-a", "--ttl", "10", *where])
    spawn.append(a)
    a.wait_for("leader:")
    assert lock_state(dynamodb_conf, "svc/leader") == (True, "node-a")
    assert a.stop(signal.SIGINT) == 0, a.lines
    assert any(line.startswith("resigned:") for line in a.lines), a.lines
    assert not any("Traceback" in line for line in a.lines), a.lines
    assert lock_state(dynamodb_conf, "svc/leader") == (False, "")


def test_lock_sigterm_hands_over_without_waiting_for_the_ttl(
    spawn: list[Lines], where: list[str], dynamodb_conf: dict[str, str]
) -> None:
    ttl = "30"  # far longer than the test may wait: only an explicit release lets b in
    a = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-a", "--ttl", ttl, *where])
    spawn.append(a)
    token_a = _token(a.wait_for("leader:"))
    b = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-b", "--ttl", ttl, *where])
    spawn.append(b)
    b.wait_for("campaigning")
    time.sleep(1.0)  # b is now polling a held lock
    assert lock_state(dynamodb_conf, "svc/leader") == (True, "node-a")
    assert a.stop(signal.SIGTERM) == 0, a.lines
    token_b = _token(b.wait_for("leader:", timeout=10))
    assert token_b > token_a
    assert lock_state(dynamodb_conf, "svc/leader") == (True, "node-b")
    # b was never leader before, so stopping it now is a resignation too.
    assert b.stop(signal.SIGINT) == 0, b.lines
    assert lock_state(dynamodb_conf, "svc/leader") == (False, "")


def test_lock_stopped_while_campaigning(spawn: list[Lines], where: list[str], dynamodb_conf: dict[str, str]) -> None:
    a = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-a", *where])
    spawn.append(a)
    a.wait_for("leader:")
    b = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-b", *where])
    spawn.append(b)
    b.wait_for("campaigning")
    assert b.stop(signal.SIGINT) == 0, b.lines
    assert any(line.startswith("stopped:") for line in b.lines), b.lines
    # Stopping a contender leaves the leader alone.
    assert lock_state(dynamodb_conf, "svc/leader") == (True, "node-a")
    assert a.stop() == 0


def test_lock_json_lines(spawn: list[Lines], where: list[str]) -> None:
    a = Lines(["-m", "kvstore", "lock", "svc/leader", "--value", "node-a", "--ttl", "10", "--json", *where])
    spawn.append(a)
    leader = json.loads(a.wait_for('"event": "leader"'))
    assert leader == {"event": "leader", "lock": "svc/leader", "value": "node-a",
                      "fencing_token": leader["fencing_token"]}
    assert isinstance(leader["fencing_token"], int)
    assert a.stop(signal.SIGINT) == 0, a.lines
    events = [json.loads(line) for line in a.lines]  # every stdout line is JSON (stderr is empty)
    assert [e["event"] for e in events] == ["campaigning", "leader", "resigned"]
    assert events[-1] == {"event": "resigned", "lock": "svc/leader", "fencing_token": leader["fencing_token"]}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_local_runs_the_engine_until_interrupted(
    spawn: list[Lines], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    port = free_port()
    engine = Lines(["-m", "kvstore", "local", "--port", str(port)])
    spawn.append(engine)
    engine.wait_for("listening on", timeout=120)
    url = f"http://127.0.0.1:{port}"
    assert run(capsysbinary, "put", "a/b", "hello", "--endpoint", url)[0] == 0
    assert run(capsysbinary, "get", "a/b", "--endpoint", url) == (0, b"hello", "")
    # A second engine on the same port is refused up front.
    busy = subprocess.run([sys.executable, "-m", "kvstore", "local", "--port", str(port)],
                          capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "already in use" in busy.stderr
    assert engine.stop(signal.SIGINT) == 0, engine.lines
    assert "stopping DynamoDB Local" in engine.lines
    assert not _accepts(port)  # the JVM is gone, not orphaned


def test_bench_outside_the_repository_says_where_to_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "kvstore", "bench"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr)
    assert "repository root" in proc.stderr and "make bench" in proc.stderr


def test_bench_delegates_to_the_harness() -> None:
    proc = subprocess.run([sys.executable, "-m", "kvstore", "bench", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "python -m benchmarks" in proc.stdout


def test_read_commands_never_create_a_table(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], dynamodb_conf: dict[str, str]
) -> None:
    # A mistyped --table must be an error, not a new empty table (read commands pass create_table=false).
    code, out, err = run(capsysbinary, "list", "", *where)
    assert code == 3 and out == b""  # the missing table is an engine failure
    assert_one_error_line(err)
    assert "does not exist" in err

    async def exists() -> bool:
        conf = {**dynamodb_conf, "create_table": "false"}
        try:
            async with await DynamoDBBackend.create(conf, environ={}):
                return True
        except Exception:
            return False

    assert not asyncio.run(exists()), "the read command created the table"
    assert run(capsysbinary, "put", "k", "v", *where)[0] == 0  # writes do create it
    assert run(capsysbinary, "list", "", *where) == (0, b"k\n", "")


# -- fsck --------------------------------------------------------------------------------------


def _raw_write(conf: dict[str, str], *items: dict[str, object]) -> None:
    """Write items straight to the table, as a crash or an older version leaves them."""

    async def go() -> None:
        async with await DynamoDBBackend.create(conf) as backend:
            for item in items:
                await backend.table.call("put_item", Item=item)

    asyncio.run(go())


def test_fsck_reports_then_repairs(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], dynamodb_conf: dict[str, str]
) -> None:
    _put_tree(capsysbinary, where)
    assert run(capsysbinary, "fsck", *where) == (0, b"fsck .: 10 items checked, clean\n", "")
    _raw_write(
        dynamodb_conf,
        {"Path": {"S": "lost/found"}, "Key": {"S": "k"}, "Value": {"B": b"v"}},  # no pointers
        {"Path": {"S": "apps"}, "Key": {"S": "void/"}},                          # an empty folder
    )
    code, out, err = run(capsysbinary, "fsck", *where)
    assert (code, err) == (1, "")  # no progress bar: stderr is not a terminal
    assert out.decode().splitlines() == [
        "fsck .: 12 items checked, 2 problems: 1 invisible key, 1 empty folder",
        "invisible lost/found/k",
        "empty apps/void/",
    ]
    code, out, _ = run(capsysbinary, "fsck", "apps", *where)  # a prefix sees only its subtree
    assert (code, out.decode().splitlines()[0]) == (1, "fsck apps/: 7 items checked, 1 problem: 1 empty folder")

    code, out, _ = run(capsysbinary, "fsck", "--repair", *where)
    assert code == 0
    assert out.decode().splitlines() == [
        "fsck .: 13 items checked, repaired 2 of 2 problems; clean",
        "invisible lost/found/k (repaired)",
        "empty apps/void/ (repaired)",
    ]
    assert run(capsysbinary, "list", "lost/", *where) == (0, b"found/\n", "")
    assert run(capsysbinary, "fsck", *where)[:2] == (0, b"fsck .: 13 items checked, clean\n")


def test_fsck_exit_status_when_problems_remain(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], dynamodb_conf: dict[str, str]
) -> None:
    assert run(capsysbinary, "put", "s/k", "v", *where)[0] == 0
    _raw_write(dynamodb_conf, {"Path": {"S": "s"}, "Key": {"S": "_old"}, "Value": {"B": b"v"}})
    code, out, _ = run(capsysbinary, "fsck", "--repair", *where)
    # A stray lock name is never changed, so it remains (and says so), and the exit status is 1.
    assert code == 1
    assert out.decode().splitlines() == [
        "fsck .: 3 items checked, 1 problem: 1 stray lock name; nothing --repair can fix",
        "stray s/_old",
    ]


def test_fsck_never_creates_a_table(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    code, out, err = run(capsysbinary, "fsck", "--repair", *where)
    assert (code, out) == (3, b"")  # the missing table is an engine failure
    assert_one_error_line(err)
    assert "does not exist" in err


def test_fsck_help_documents_exit_status(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, _ = run(capsysbinary, "fsck", "--help")
    text = out.decode()
    assert code == 0
    assert "exit status: 0 nothing wrong" in text and "--repair" in text and "stray KEY" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fsck_progress_bar_only_on_a_terminal() -> None:
    with progress_bar(io.StringIO()) as progress:
        assert progress is None  # a pipe or a log gets no bar
    term = _Terminal()
    with progress_bar(term) as progress:
        assert progress is not None
        progress(10)
        progress(250)
    assert "fsck: scanning" in term.getvalue() and "items" in term.getvalue()
