"""The ``kvstore`` command's newer surface: --version, --json, --timeout and the waiting status line,
progress bars, export/import, and the exit-status table.

Like tests/test_cli.py: ``main([...])`` in-process against the session's DynamoDB Local, a fresh
table per test, subprocesses only where a signal or a real interpreter start matters.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import assert_one_error_line, run

import kvstore
import kvstore.cli as cli
from kvstore.cli import (
    DEFAULT_TIMEOUT,
    EXIT_ENGINE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    main,
    progress_bar,
    version,
    waiting_status,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import free_port


def _raw_write(conf: dict[str, str], *items: dict[str, object]) -> None:
    """Write items straight to the table, as a crash or an older version leaves them."""

    async def go() -> None:
        async with await DynamoDBBackend.create(conf) as backend:
            for item in items:
                await backend.table.call("put_item", Item=item)

    asyncio.run(go())


class _Terminal(io.StringIO):
    """A stream that says it is a terminal (what a user's stderr is)."""

    def isatty(self) -> bool:
        return True


#: Values of the sample tree: text, binary (not UTF-8), empty, and a non-ASCII key.
SAMPLE = {
    "apps/web/config": b'{"port": 8080}',
    "apps/web/logo": bytes(range(256)),
    "apps/web/secrets/db": b"",
    "apps/api/config": "é ü".encode(),
    "apps/ключ": b"unicode key",
    "apps": b"a key next to a folder",
    "users/alice": b"x",
}


def _put_sample(capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path) -> None:
    for i, (key, value) in enumerate(SAMPLE.items()):
        f = tmp_path / f"value-{i}"
        f.write_bytes(value)
        assert run(capsysbinary, "put", key, "--file", str(f), *where)[0] == 0


# -- --version -----------------------------------------------------------------------------------


def test_version(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = run(capsysbinary, "--version")
    assert (code, err) == (0, "")
    assert out.decode() == f"kvstore {version()}\n"
    assert version() == kvstore.__version__  # installed metadata and the package agree


def test_version_as_a_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "kvstore", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("kvstore ") and proc.stderr == ""


# -- --json --------------------------------------------------------------------------------------


def test_get_json(capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    code, out, err = run(capsysbinary, "get", "apps/api/config", "--json", *where)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"key": "apps/api/config", "value": base64.b64encode("é ü".encode()).decode(),
                               "value_text": "é ü"}
    code, out, _ = run(capsysbinary, "get", "apps/web/logo", "--json", *where)
    doc = json.loads(out)
    assert code == 0 and "value_text" not in doc  # not UTF-8
    assert base64.b64decode(doc["value"]) == bytes(range(256))
    assert json.loads(run(capsysbinary, "get", "apps/web/secrets/db", "--json", *where)[1]) == {
        "key": "apps/web/secrets/db", "value": "", "value_text": ""}
    # A missing key: exit 1, the usual error line, nothing on stdout.
    code, out, err = run(capsysbinary, "get", "no/such", "--json", *where)
    assert (code, out) == (EXIT_FAILURE, b"")
    assert_one_error_line(err)


def test_list_json(capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    code, out, _ = run(capsysbinary, "list", "--json", *where)
    assert (code, json.loads(out)) == (0, ["apps", "apps/", "users/"])
    assert json.loads(run(capsysbinary, "list", "apps/web", "--json", *where)[1]) == ["config", "logo", "secrets/"]
    assert json.loads(run(capsysbinary, "list", "nothing/", "--json", *where)[1]) == []


def test_tree_json(capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    code, out, _ = run(capsysbinary, "tree", "apps/web", "--json", *where)
    assert code == 0
    assert json.loads(out) == {
        "path": "apps/web/", "type": "folder", "folders": 1, "keys": 3,
        "children": [
            {"name": "config", "path": "apps/web/config", "type": "key"},
            {"name": "logo", "path": "apps/web/logo", "type": "key"},
            {"name": "secrets/", "path": "apps/web/secrets/", "type": "folder", "children": [
                {"name": "db", "path": "apps/web/secrets/db", "type": "key"},
            ]},
        ],
    }
    # Past --depth a folder is not read: children null.
    doc = json.loads(run(capsysbinary, "tree", "--json", "-L", "1", *where)[1])
    assert doc["path"] == "" and (doc["folders"], doc["keys"]) == (2, 1)
    assert doc["children"][1] == {"name": "apps/", "path": "apps/", "type": "folder", "children": None}
    # The same counts as the drawing's last line.
    full = json.loads(run(capsysbinary, "tree", "--json", *where)[1])
    drawn = run(capsysbinary, "tree", *where)[1].decode().splitlines()[-1]
    assert drawn == f"{full['folders']} folders, {full['keys']} keys"


def test_fsck_json(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], dynamodb_conf: dict[str, str], tmp_path: Path
) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    code, out, _ = run(capsysbinary, "fsck", "--json", *where)
    doc = json.loads(out)
    assert code == 0
    assert doc == {"prefix": "", "clean": True, "problems": 0, "scanned": doc["scanned"], "invisible": [],
                   "empty_folders": [], "stray_lock_names": [], "repaired": False, "before": None}
    _raw_write(dynamodb_conf, {"Path": {"S": "lost/found"}, "Key": {"S": "k"}, "Value": {"B": b"v"}})
    code, out, _ = run(capsysbinary, "fsck", "--json", *where)
    doc = json.loads(out)
    assert code == EXIT_FAILURE
    assert (doc["clean"], doc["problems"], doc["invisible"]) == (False, 1, ["lost/found/k"])
    code, out, _ = run(capsysbinary, "fsck", "apps", "--repair", "--json", *where)  # nothing to fix under apps/
    assert (code, json.loads(out)["prefix"]) == (0, "apps/")
    code, out, _ = run(capsysbinary, "fsck", "--repair", "--json", *where)
    doc = json.loads(out)
    assert code == 0
    assert (doc["clean"], doc["repaired"], doc["before"]["invisible"]) == (True, True, ["lost/found/k"])


# -- --timeout and the status line --------------------------------------------------------------


def test_timeout_closed_port_fails_fast(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    code, out, err = run(capsysbinary, "get", "k", "--endpoint", closed, "--timeout", "2")
    assert time.monotonic() - start < 8, "a refused connection must not wait out the SDK's defaults"
    # EXIT_ENGINE: 3 in the scheme, 1 while tests/test_cli.py pins 1 for an unreachable endpoint.
    assert (code, out) == (EXIT_ENGINE, b"")
    assert_one_error_line(err)
    assert "unreachable" in err


@pytest.fixture
def hung_engine() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a stopped or wedged engine)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for c in accepted:
        c.close()
    server.close()


def test_timeout_hung_engine(capsysbinary: pytest.CaptureFixture[bytes], hung_engine: str) -> None:
    start = time.monotonic()
    code, out, err = run(capsysbinary, "list", "--endpoint", hung_engine, "--timeout", "1.5")
    elapsed = time.monotonic() - start
    assert (code, out) == (EXIT_ENGINE, b"")
    assert_one_error_line(err)
    assert "timeout" in err.lower() and "--timeout" in err
    # Three attempts of 0.5 s plus the SDK's backoff (under 3 s), not 91 s.
    assert elapsed < 8, elapsed


def test_default_timeout_is_short() -> None:
    target = cli._resolve_target(endpoint="http://127.0.0.1:1", timeout=DEFAULT_TIMEOUT, environ={})
    assert target.conf["dynamodb_max_retries"] == "2"
    assert float(target.conf["read_timeout"]) * 3 == pytest.approx(DEFAULT_TIMEOUT, rel=1e-3)
    assert float(target.conf["connect_timeout"]) * 3 == pytest.approx(DEFAULT_TIMEOUT, rel=1e-3)


def test_config_and_environment_beat_timeout() -> None:
    target = cli._resolve_target(
        endpoint="http://127.0.0.1:1", config=["read_timeout=60"], timeout=3,
        environ={"AWS_DYNAMODB_MAX_RETRIES": "7"},
    )
    assert target.conf["read_timeout"] == "60"
    assert target.conf["connect_timeout"] == "1"
    assert "dynamodb_max_retries" not in target.conf and target.environ["AWS_DYNAMODB_MAX_RETRIES"] == "7"
    # Without a timeout (lock without --timeout) nothing is added.
    assert "read_timeout" not in cli._resolve_target(endpoint="http://127.0.0.1:1", environ={}).conf


@pytest.mark.parametrize("argv", [["--timeout", "0"], ["--timeout", "-1"], ["--timeout", "soon"]])
def test_bad_timeout_is_a_usage_error(capsysbinary: pytest.CaptureFixture[bytes], argv: list[str]) -> None:
    code, out, err = run(capsysbinary, "get", "k", *argv, "--endpoint", "http://127.0.0.1:1")
    assert (code, out) == (EXIT_USAGE, b"")
    assert_one_error_line(err)


def test_waiting_status_only_on_a_terminal() -> None:
    async def slow(stream: io.StringIO) -> None:
        async with waiting_status(stream, "DynamoDB at http://x", delay=0.05, interval=0.05):
            await asyncio.sleep(0.3)

    term = _Terminal()
    asyncio.run(slow(term))
    text = term.getvalue()
    assert "\rkvstore: waiting for DynamoDB at http://x (0s)" in text
    assert text.endswith("\r\x1b[K")  # erased afterwards
    pipe = io.StringIO()
    asyncio.run(slow(pipe))
    assert pipe.getvalue() == ""

    async def quick(stream: io.StringIO) -> None:
        async with waiting_status(stream, "x", delay=1.0):
            pass

    term = _Terminal()
    asyncio.run(quick(term))
    assert term.getvalue() == ""  # a quick answer shows nothing at all


def test_status_line_while_waiting_on_a_hung_engine(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes], hung_engine: str
) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(cli, "_STATUS_DELAY", 0.2)
    monkeypatch.setattr(cli, "_STATUS_INTERVAL", 0.2)
    assert main(["get", "k", "--endpoint", hung_engine, "--timeout", "1.5"]) == EXIT_ENGINE
    text = term.getvalue()
    assert f"waiting for DynamoDB at {hung_engine}" in text
    status_end = text.rindex("\r\x1b[K")
    assert text[status_end + 4:].startswith("kvstore: error: ")  # erased before the error line


# -- progress bars -------------------------------------------------------------------------------


def test_progress_bar_total_and_delay() -> None:
    term = _Terminal()
    with progress_bar(term, "import", unit=" keys", total=4) as progress:
        assert progress is not None
        progress(4)
    assert "import:" in term.getvalue() and "/4" in term.getvalue()
    term = _Terminal()
    with progress_bar(term, "tree: listing", delay=60) as progress:
        assert progress is not None
        progress(3)
    assert "tree" not in term.getvalue()  # quick work: the bar never appeared


def test_export_import_draw_progress_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path
) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    dump = tmp_path / "dump.jsonl"
    assert main(["export", "apps", "-o", str(dump), *where]) == 0
    assert main(["import", str(dump), *where]) == 0
    text = term.getvalue()
    # apps/ holds 5 keys (key "apps" itself is not below folder apps/)
    assert "export: reading" in text and "import:" in text and "/5" in text


# -- export / import -----------------------------------------------------------------------------


def test_export_import_round_trip(
    capsysbinary: pytest.CaptureFixture[bytes], dynamodb_endpoint: str, where: list[str], tmp_path: Path
) -> None:
    _put_sample(capsysbinary, where, tmp_path)
    other = ["--endpoint", dynamodb_endpoint, "--table", f"kvtest-{uuid.uuid4().hex[:12]}"]

    # The whole table, to a file; then into another table, which the import creates.
    dump = tmp_path / "all.jsonl"
    code, out, err = run(capsysbinary, "export", "-o", str(dump), *where)
    assert (code, out) == (0, b""), err
    assert err == f"kvstore: exported 7 keys to {dump}\n"
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [d["key"] for d in lines] == sorted(SAMPLE)
    assert {d["key"]: base64.b64decode(d["value"]) for d in lines} == SAMPLE
    assert list(tmp_path.glob("*.partial")) == []
    code, out, _ = run(capsysbinary, "import", str(dump), "--concurrency", "3", *other)
    assert (code, out) == (0, b"imported 7 keys\n")
    assert run(capsysbinary, "tree", *other)[1] == run(capsysbinary, "tree", *where)[1]
    for key, value in SAMPLE.items():
        assert run(capsysbinary, "get", key, *other)[:2] == (0, value)
    assert run(capsysbinary, "export", "-o", str(tmp_path / "again.jsonl"), *other)[0] == 0
    assert (tmp_path / "again.jsonl").read_bytes() == dump.read_bytes()

    # A subtree through stdout and stdin.
    code, out, _ = run(capsysbinary, "export", "apps/web", *where)
    assert code == 0
    assert [json.loads(line)["key"] for line in out.decode().splitlines()] == [
        "apps/web/config", "apps/web/logo", "apps/web/secrets/db"]
    third = ["--endpoint", dynamodb_endpoint, "--table", f"kvtest-{uuid.uuid4().hex[:12]}"]
    proc = subprocess.run([sys.executable, "-m", "kvstore", "import", *third], input=out,
                          capture_output=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, b"imported 3 keys\n"), proc.stderr
    assert run(capsysbinary, "tree", "apps/web", *third)[1] == run(capsysbinary, "tree", "apps/web", *where)[1]
    assert run(capsysbinary, "list", *third)[1] == b"apps/\n"  # nothing else came along


def test_export_of_an_empty_folder(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    assert run(capsysbinary, "put", "k", "v", *where)[0] == 0
    assert run(capsysbinary, "export", "nothing", *where) == (0, b"", "kvstore: exported 0 keys\n")


def test_export_never_creates_a_table(capsysbinary: pytest.CaptureFixture[bytes], where: list[str],
                                      tmp_path: Path) -> None:
    out_file = tmp_path / "x.jsonl"
    code, out, err = run(capsysbinary, "export", "-o", str(out_file), *where)
    assert (code, out) == (EXIT_ENGINE, b"")
    assert_one_error_line(err)
    assert "does not exist" in err
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"key": "a", "value": "dg=="}\nnot json\n', "line 2: not JSON"),
        ('["a", "dg=="]\n', 'line 1: expected {"key": KEY, "value": BASE64}'),
        ('{"key": "a"}\n', "line 1: expected"),
        ('{"key": "a", "value": "***"}\n', "line 1: value is not base64"),
        ('\n{"key": "/a", "value": "dg=="}\n', "line 2: invalid key"),
    ],
)
def test_import_rejects_bad_lines_and_writes_nothing(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], dynamodb_conf: dict[str, str],
    tmp_path: Path, text: str, message: str,
) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    code, out, err = run(capsysbinary, "import", str(f), *where)
    assert (code, out) == (EXIT_USAGE, b"")
    assert_one_error_line(err)
    assert message in err

    async def exists() -> bool:
        try:
            async with await DynamoDBBackend.create({**dynamodb_conf, "create_table": "false"}, environ={}):
                return True
        except Exception:
            return False

    assert not asyncio.run(exists()), "nothing may be written, not even the table"


def test_import_last_value_wins_and_blank_lines(
    capsysbinary: pytest.CaptureFixture[bytes], where: list[str], tmp_path: Path
) -> None:
    f = tmp_path / "dup.jsonl"
    f.write_text('{"key": "a/b", "value": "MQ=="}\n\n{"key": "a/b", "value": "Mg=="}\n{"key": "c", "value": ""}\n')
    assert run(capsysbinary, "import", str(f), *where) == (0, b"imported 2 keys\n", "")
    assert run(capsysbinary, "get", "a/b", *where)[:2] == (0, b"2")
    assert run(capsysbinary, "get", "c", *where)[:2] == (0, b"")


def test_import_missing_file(capsysbinary: pytest.CaptureFixture[bytes], where: list[str]) -> None:
    code, _, err = run(capsysbinary, "import", "/no/such/file.jsonl", *where)
    assert code == EXIT_USAGE
    assert_one_error_line(err)
    assert "cannot read /no/such/file.jsonl" in err


# -- exit status ---------------------------------------------------------------------------------


def test_help_documents_exit_status(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, _ = run(capsysbinary, "--help")
    text = out.decode()
    assert code == 0
    assert "exit status:" in text
    for line in ("0    success", "1    not found or problems found", "2    usage mistake", "3    ",
                 "130  interrupted"):
        assert line in text, line
    assert "--version" in text and "--timeout" in text
    for command in ("get", "list", "tree", "fsck", "lock"):
        sub = run(capsysbinary, command, "--help")[1].decode()
        assert "--json" in sub, command
    lock_help = " ".join(run(capsysbinary, "lock", "--help")[1].decode().split())
    assert "exits 0" in lock_help and "exits 130" in lock_help


def test_exit_codes_are_the_documented_ones() -> None:
    assert (EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED) == (1, 2, 130)
    # An engine failure is told apart from "not found" (1).
    assert EXIT_ENGINE == 3


def test_interrupted_command_exits_130(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_list", interrupted)
    code, out, err = run(capsysbinary, "list", "--endpoint", "http://127.0.0.1:1")
    assert (code, out, err) == (EXIT_INTERRUPTED, b"", "kvstore: interrupted\n")


def test_sigint_during_import_exits_130(dynamodb_endpoint: str, tmp_path: Path) -> None:
    # stdin never ends: the import waits for its input, and Ctrl-C interrupts it.
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "import", "--endpoint", dynamodb_endpoint],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.decode().strip().endswith("kvstore: interrupted")
    assert b"Traceback" not in err
