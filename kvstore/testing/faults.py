"""A fault-injecting HTTP proxy that speaks DynamoDB's JSON protocol.

DynamoDB Local is a faithful engine but a perfectly healthy one: it never throttles, never
returns ``UnprocessedItems``, never loses a connection and answers in microseconds. Production
DynamoDB does all of these, and kvstore's retry, batching and idempotency code exists because of
them. :class:`FaultProxy` sits between an aiobotocore client and DynamoDB Local and injects those
faults on purpose, so tests can check that every one of them is handled, and benchmarks can add
an in-region round trip (``latency(0.005)``) to count what a code path really costs.

In the test's own event loop::

    async with FaultProxy("http://127.0.0.1:8000") as proxy:
        proxy.latency(0.005)                                   # every request, until clear()
        proxy.throttle(times=2, operations={"PutItem"})        # next two PutItems get HTTP 400
        proxy.partial_batch(keep=10, times=1)                  # next BatchWriteItem: 10 land
        async with session.create_client("dynamodb", endpoint_url=proxy.endpoint, ...) as c:
            ...
        print(proxy.stats()["PutItem"])                        # seen / forwarded / faulted

In a background thread, for synchronous code, code that runs its own event loop, or another
process that is only handed the endpoint URL (every control method is thread-safe)::

    with FaultProxy("http://127.0.0.1:8000").in_thread() as proxy:
        proxy.reset_connection(times=1, after_forward=True)   # write lands, response is lost
        subprocess.run([..., "--endpoint", proxy.endpoint])

Every fault method returns a :class:`Fault` handle (``fired``, ``active``, ``cancel()``) and
takes the same three limits:

* ``operations``: the DynamoDB operation names it applies to (read from ``X-Amz-Target``);
  ``None`` means every operation the fault makes sense for.
* ``times``: fire at most this many times.
* ``duration``: fire only during this many seconds from the call.

With neither ``times`` nor ``duration`` a fault stays until :meth:`FaultProxy.clear` (or
:meth:`Fault.cancel`). Faults that answer instead of the engine (``throttle``,
``transaction_conflict``, ``reset_connection``, ``stall``) are tried in the order they were
added, and the first active one takes the request; ``latency``, ``partial_batch`` and
``strip_all_old`` combine with them and with plain forwarding.

Requests are forwarded with their original headers (less hop-by-hop ones, ``Host`` and
``Content-Length``). ``partial_batch`` changes the request body, which invalidates its SigV4
signature: DynamoDB Local does not check signatures strictly, real DynamoDB would. This proxy is
for tests against DynamoDB Local, not for production traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http
import json
import logging
import math
import random
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import urlsplit

import aiohttp
import yarl

__all__ = [
    "MAX_DELAY_SECONDS",
    "MAX_STALL_SECONDS",
    "UNKNOWN_OPERATION",
    "Fault",
    "FaultKind",
    "FaultProxy",
    "OperationStats",
    "ProxyStats",
    "ResetHow",
    "StallThen",
    "ThrottleCode",
]

logger = logging.getLogger(__name__)

FaultKind = Literal[
    "latency",
    "throttle",
    "partial_batch",
    "transaction_conflict",
    "reset_connection",
    "stall",
    "strip_all_old",
]
"""The kinds of fault; also the keys of :attr:`OperationStats.faults` and ``clear(kind)``."""

ThrottleCode = Literal[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
]
"""The throttling error codes DynamoDB answers with (all HTTP 400, all retried by botocore)."""

ResetHow = Literal["rst", "close"]
"""How a connection is dropped: ``"rst"`` sends a TCP reset (aiobotocore raises
``EndpointConnectionError``), ``"close"`` a clean FIN with no response (``ConnectionClosedError``)."""

StallThen = Literal["respond", "reset"]
"""What a stall does once its time is up: deliver the response or reset the connection."""

UNKNOWN_OPERATION: Final = "Unknown"
"""The operation name recorded for requests without an ``X-Amz-Target`` header."""

MAX_DELAY_SECONDS: Final = 10.0
"""Upper bound of a latency (plus jitter): a proxy that can hang a test forever is a bug."""

MAX_STALL_SECONDS: Final = 60.0
"""Upper bound of a stall; a stall is meant to outlast a client's read timeout, not the test."""

_TARGET_PREFIX_SEP: Final = "."
_JSON_CONTENT_TYPE: Final = "application/x-amz-json-1.0"
_DYNAMODB_ERROR_PREFIX: Final = "com.amazonaws.dynamodb.v20120810#"
_MAX_HEADER_BYTES: Final = 64 * 1024
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024  # DynamoDB's own limit is 16 MB per request.
_MAX_CHUNKS: Final = 100_000
_MAX_REQUESTS_PER_CONNECTION: Final = 100_000
_HOLD_POLL_SECONDS: Final = 0.01

# Request headers not copied upstream: hop-by-hop ones (RFC 9110 7.6.1), the ones aiohttp
# computes itself for the new connection, and Expect, which the proxy answers itself.
_SKIP_REQUEST_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
# Response headers not copied back: hop-by-hop ones and Content-Length, which is recomputed.
_SKIP_RESPONSE_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# ...and additionally when the proxy rewrites the body.
_SKIP_REWRITTEN_HEADERS: Final = _SKIP_RESPONSE_HEADERS | {"x-amz-crc32", "content-encoding"}

_THROTTLE_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ProvisionedThroughputExceededException": _DYNAMODB_ERROR_PREFIX + "ProvisionedThroughputExceededException",
        # Real DynamoDB sends the generic AWS throttle under the coral namespace.
        "ThrottlingException": "com.amazon.coral.availability#ThrottlingException",
        "RequestLimitExceeded": _DYNAMODB_ERROR_PREFIX + "RequestLimitExceeded",
    }
)
_THROTTLE_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ProvisionedThroughputExceededException": (
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API."
        ),
        "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
        "RequestLimitExceeded": (
            "Throughput exceeds the current throughput limit for your account. "
            "Please contact AWS Support at https://aws.amazon.com/support request a limit "
            "increase"
        ),
    }
)

_BATCH_OPERATIONS: Final = frozenset({"BatchWriteItem", "BatchGetItem"})
_TRANSACTION_OPERATIONS: Final = frozenset({"TransactWriteItems", "TransactGetItems"})
_ALL_OLD_OPERATIONS: Final = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})
_JSON_OPERATIONS: Final = _BATCH_OPERATIONS | _TRANSACTION_OPERATIONS | _ALL_OLD_OPERATIONS
_TERMINAL_KINDS: Final = frozenset({"throttle", "transaction_conflict", "reset_connection", "stall"})


# --------------------------------------------------------------------------------------------
# Fault parameters and handles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Latency:
    seconds: float
    jitter: float


@dataclass(frozen=True, slots=True)
class _Throttle:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class _PartialBatch:
    keep: int | None
    fraction: float | None


@dataclass(frozen=True, slots=True)
class _TransactionConflict:
    indexes: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class _ResetConnection:
    after_forward: bool
    how: ResetHow


@dataclass(frozen=True, slots=True)
class _Stall:
    seconds: float
    then: StallThen
    after_forward: bool


@dataclass(frozen=True, slots=True)
class _StripAllOld:
    pass


_Params = _Latency | _Throttle | _PartialBatch | _TransactionConflict | _ResetConnection | _Stall | _StripAllOld


class Fault:
    """A handle to one installed fault.

    It lets a test check that the fault really fired (``fired``) instead of passing because
    nothing happened, and remove just this fault (``cancel()``) while keeping the others.
    """

    __slots__ = ("_cancelled", "_deadline", "_fired", "_lock", "_remaining", "kind", "operations", "params")

    def __init__(
        self,
        lock: threading.Lock,
        kind: FaultKind,
        operations: frozenset[str] | None,
        times: int | None,
        duration: float | None,
        params: _Params,
    ) -> None:
        self._lock = lock
        self.kind: Final = kind
        #: The operations this fault applies to; ``None`` for all it makes sense for.
        self.operations: Final = operations
        self.params: Final[_Params] = params
        self._remaining = times
        self._deadline = None if duration is None else time.monotonic() + duration
        self._fired = 0
        self._cancelled = False

    @property
    def fired(self) -> int:
        """How many requests this fault has acted on so far."""
        with self._lock:
            return self._fired

    @property
    def remaining(self) -> int | None:
        """How many more times it may fire (``None``: no count limit)."""
        with self._lock:
            return self._remaining

    @property
    def active(self) -> bool:
        """Whether it can still fire (not cancelled, not used up, not expired)."""
        with self._lock:
            return self._is_active(time.monotonic())

    def cancel(self) -> None:
        """Remove this fault; requests already being handled keep what they got."""
        with self._lock:
            self._cancelled = True

    def __repr__(self) -> str:
        ops = "*" if self.operations is None else ",".join(sorted(self.operations))
        return f"<Fault {self.kind} ops={ops} fired={self._fired} {self.params!r}>"

    # The methods below are called with the proxy's lock held.

    def _is_active(self, now: float) -> bool:
        if self._cancelled:
            return False
        if self._remaining is not None and self._remaining <= 0:
            return False
        return self._deadline is None or now < self._deadline

    def _matches(self, operation: str, now: float) -> bool:
        return (self.operations is None or operation in self.operations) and self._is_active(now)

    def _consume(self) -> None:
        self._fired += 1
        if self._remaining is not None:
            self._remaining -= 1


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationStats:
    """What the proxy did with one operation's requests.

    ``seen`` counts requests received, ``forwarded`` the ones sent to the engine (so the round
    trips a code path costs), ``faulted`` the ones a fault acted on (a partial batch or an
    ambiguous reset is both forwarded and faulted), ``upstream_errors`` the forwards that got no
    answer from the engine. ``faults`` splits ``faulted`` by fault kind. Latency is not a fault.
    """

    seen: int = 0
    forwarded: int = 0
    faulted: int = 0
    upstream_errors: int = 0
    faults: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters, per operation name (``stats()["BatchWriteItem"]``)."""

    operations: Mapping[str, OperationStats]

    def __getitem__(self, operation: str) -> OperationStats:
        """The counters of one operation; all zero if it was never seen."""
        return self.operations.get(operation, OperationStats())

    @property
    def seen(self) -> int:
        """Requests received, all operations together."""
        return sum(s.seen for s in self.operations.values())

    @property
    def forwarded(self) -> int:
        """Requests sent to the engine, all operations together."""
        return sum(s.forwarded for s in self.operations.values())

    @property
    def faulted(self) -> int:
        """Requests a fault acted on, all operations together."""
        return sum(s.faulted for s in self.operations.values())


@dataclass(slots=True)
class _Counters:
    seen: int = 0
    forwarded: int = 0
    faulted: int = 0
    upstream_errors: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def freeze(self) -> OperationStats:
        return OperationStats(
            self.seen,
            self.forwarded,
            self.faulted,
            self.upstream_errors,
            MappingProxyType(dict(self.faults)),
        )


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    operation: str
    keep_alive: bool
    faulted: bool = False
    _doc: dict[str, Any] | None = None
    _parsed: bool = False

    def json(self) -> dict[str, Any] | None:
        """The body as a JSON object, or ``None`` if it is not one (parsed once)."""
        if not self._parsed:
            self._parsed = True
            self._doc = _loads_object(self.body)
        return self._doc


@dataclass(slots=True)
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _BadRequest(Exception):
    """The client sent something this proxy cannot parse as HTTP/1.1."""


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


def _tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _operation(headers: Iterable[tuple[str, str]]) -> str:
    target = _header(headers, "X-Amz-Target")
    if not target:
        return UNKNOWN_OPERATION
    return target.rsplit(_TARGET_PREFIX_SEP, 1)[-1].strip() or UNKNOWN_OPERATION


def _loads_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _crc32(body: bytes) -> str:
    return str(zlib.crc32(body) & 0xFFFFFFFF)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _error_response(type_: str, doc: Mapping[str, Any]) -> _Response:
    """A DynamoDB-style HTTP 400 error, with the CRC botocore checks."""
    body = _dumps({"__type": type_, **doc})
    headers = [
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("Content-Type", _JSON_CONTENT_TYPE),
        ("x-amz-crc32", _crc32(body)),
    ]
    return _Response(400, "Bad Request", headers, body)


def _json_response(doc: Mapping[str, Any]) -> _Response:
    body = _dumps(doc)
    headers = [
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("Content-Type", _JSON_CONTENT_TYPE),
        ("x-amz-crc32", _crc32(body)),
    ]
    return _Response(200, "OK", headers, body)


def _rewritten(response: _Response, doc: Mapping[str, Any]) -> _Response:
    """The upstream response with a new JSON body, a matching CRC and no Content-Encoding."""
    body = _dumps(doc)
    headers = [(k, v) for k, v in response.headers if k.lower() not in _SKIP_REWRITTEN_HEADERS]
    headers.append(("x-amz-crc32", _crc32(body)))
    return _Response(response.status, response.reason, headers, body)


def _response_json(response: _Response) -> dict[str, Any] | None:
    body = response.body
    encoding = (_header(response.headers, "Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return None
    elif encoding != "identity":
        return None
    return _loads_object(body)


def _error_type(doc: Mapping[str, Any]) -> str:
    type_ = doc.get("__type")
    return type_.rsplit("#", 1)[-1] if isinstance(type_, str) else ""


def _kept_count(total: int, params: _PartialBatch) -> int:
    if params.keep is not None:
        return min(params.keep, total)
    fraction = params.fraction if params.fraction is not None else 0.0
    if fraction <= 0.0 or total == 0:
        return 0
    # At least one item goes through, so a client's retry loop always makes progress.
    return min(total, max(1, math.floor(total * fraction)))


@dataclass(slots=True)
class _BatchSplit:
    forwarded: dict[str, Any] | None  # the request to forward; None: forward nothing
    withheld: dict[str, Any]  # UnprocessedItems / UnprocessedKeys to add to the answer
    tables: list[str]


def _split_batch_write(doc: Mapping[str, Any], params: _PartialBatch) -> _BatchSplit | None:
    items = doc.get("RequestItems")
    if not isinstance(items, dict):
        return None
    flat = [(table, req) for table, reqs in items.items() if isinstance(reqs, list) for req in reqs]
    kept = _kept_count(len(flat), params)
    if kept >= len(flat):
        return None
    forwarded_items: dict[str, list[Any]] = {}
    withheld: dict[str, list[Any]] = {}
    for index, (table, req) in enumerate(flat):
        (forwarded_items if index < kept else withheld).setdefault(table, []).append(req)
    forwarded = {**doc, "RequestItems": forwarded_items} if forwarded_items else None
    return _BatchSplit(forwarded, dict(withheld), list(items))


def _split_batch_get(doc: Mapping[str, Any], params: _PartialBatch) -> _BatchSplit | None:
    items = doc.get("RequestItems")
    if not isinstance(items, dict):
        return None
    flat = [
        (table, key)
        for table, spec in items.items()
        if isinstance(spec, dict) and isinstance(spec.get("Keys"), list)
        for key in spec["Keys"]
    ]
    kept = _kept_count(len(flat), params)
    if kept >= len(flat):
        return None
    forwarded_keys: dict[str, list[Any]] = {}
    withheld_keys: dict[str, list[Any]] = {}
    for index, (table, key) in enumerate(flat):
        (forwarded_keys if index < kept else withheld_keys).setdefault(table, []).append(key)
    # Each table keeps its projection / consistency settings on both sides.
    forwarded_items = {t: {**items[t], "Keys": keys} for t, keys in forwarded_keys.items()}
    withheld = {t: {**items[t], "Keys": keys} for t, keys in withheld_keys.items()}
    forwarded = {**doc, "RequestItems": forwarded_items} if forwarded_items else None
    return _BatchSplit(forwarded, withheld, list(items))


def _merge_unprocessed(operation: str, doc: dict[str, Any], withheld: Mapping[str, Any]) -> None:
    """Add the withheld requests to a BatchWriteItem / BatchGetItem answer, after the real ones."""
    if operation == "BatchWriteItem":
        unprocessed = doc.get("UnprocessedItems")
        if not isinstance(unprocessed, dict):
            unprocessed = {}
        for table, reqs in withheld.items():
            existing = unprocessed.get(table)
            unprocessed[table] = (existing if isinstance(existing, list) else []) + list(reqs)
        doc["UnprocessedItems"] = unprocessed
    else:
        unprocessed_keys = doc.get("UnprocessedKeys")
        if not isinstance(unprocessed_keys, dict):
            unprocessed_keys = {}
        for table, spec in withheld.items():
            existing = unprocessed_keys.get(table)
            if isinstance(existing, dict) and isinstance(existing.get("Keys"), list):
                existing["Keys"] = existing["Keys"] + list(spec["Keys"])
            else:
                unprocessed_keys[table] = spec
        doc["UnprocessedKeys"] = unprocessed_keys


def _asks_all_old(operation: str, doc: Mapping[str, Any]) -> bool:
    if operation != "TransactWriteItems":
        return doc.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
    items = doc.get("TransactItems")
    if not isinstance(items, list):
        return False
    for item in items:
        if not isinstance(item, dict):
            continue
        for action in item.values():
            if isinstance(action, dict) and (action.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"):
                return True
    return False


def _strip_items(doc: dict[str, Any]) -> bool:
    """Remove the old item(s) from a condition-failure error; whether anything was removed."""
    error = _error_type(doc)
    stripped = False
    if error == "ConditionalCheckFailedException" and "Item" in doc:
        del doc["Item"]
        stripped = True
    elif error == "TransactionCanceledException":
        reasons = doc.get("CancellationReasons")
        if isinstance(reasons, list):
            for reason in reasons:
                if isinstance(reason, dict) and "Item" in reason:
                    del reason["Item"]
                    stripped = True
    return stripped


def _drop(writer: asyncio.StreamWriter, how: ResetHow) -> None:
    """Drop the connection without an HTTP response."""
    transport = writer.transport
    if how == "rst":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _normalise_operations(
    operations: Collection[str] | str | None, allowed: frozenset[str] | None
) -> frozenset[str] | None:
    if operations is None:
        return None
    ops = frozenset({operations} if isinstance(operations, str) else operations)
    if not ops:
        raise ValueError("operations must not be empty (use None for all operations)")
    if allowed is not None and not ops <= allowed:
        raise ValueError(f"this fault only applies to {sorted(allowed)}, not {sorted(ops - allowed)}")
    return ops


def _check_limits(times: int | None, duration: float | None) -> None:
    if times is not None and times < 0:
        raise ValueError("times must be >= 0")
    if duration is not None and not duration >= 0:
        raise ValueError("duration must be >= 0")


def _check_seconds(name: str, value: float, maximum: float) -> None:
    if not 0.0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum} seconds, got {value!r}")


# --------------------------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------------------------


def _may_forward(terminal: Fault | None) -> bool:
    """Whether a request taken by ``terminal`` (if any) may still reach the engine."""
    if terminal is None:
        return True
    params = terminal.params
    if isinstance(params, _ResetConnection):
        return params.after_forward
    if isinstance(params, _Stall):
        return params.after_forward or params.then == "respond"
    return False


@dataclass(slots=True)
class _Plan:
    """What to do with one request, decided atomically when it arrives."""

    delay: float = 0.0
    terminal: Fault | None = None
    partial: Fault | None = None
    split: _BatchSplit | None = None


class FaultProxy:
    """An HTTP proxy in front of a DynamoDB endpoint that injects the faults DynamoDB Local lacks.

    Run it in the current event loop with ``async with`` (or :meth:`start` / :meth:`stop`), or in
    a thread of its own with :meth:`in_thread`. The fault methods and :meth:`stats` are
    thread-safe, so a test thread can steer a proxy running in another thread.
    """

    def __init__(
        self,
        upstream: str,
        *,
        port: int = 0,
        seed: int | None = None,
        upstream_timeout: float = 30.0,
    ) -> None:
        """Prepare a proxy for ``upstream`` (e.g. ``"http://127.0.0.1:8000"``).

        It listens on 127.0.0.1 only (a test tool should not be reachable from the network) on
        ``port`` (0: a free one). ``seed`` makes latency jitter reproducible.
        ``upstream_timeout`` bounds each forwarded request, so a dead engine cannot hang it.
        """
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        if upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be > 0")
        self.upstream: Final = f"{parts.scheme}://{parts.netloc}"
        self._host: Final = "127.0.0.1"
        self._requested_port = port
        self._upstream_timeout = upstream_timeout
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._counters: dict[str, _Counters] = {}
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._port: int | None = None
        self._closing = False
        self._used = False

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The port it listens on (only once started)."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not running")
        return self._port

    @property
    def endpoint(self) -> str:
        """The URL to give the client as ``endpoint_url`` (only once started)."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> Self:
        """Start listening in the running event loop."""
        if self._used:
            raise RuntimeError("a FaultProxy can only be started once")
        self._used = True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=self._upstream_timeout),
            # Pass bodies and headers through untouched: no decompression, and no headers of
            # aiohttp's own in place of the client's.
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self._host, self._requested_port, limit=_MAX_HEADER_BYTES
            )
        except BaseException:
            await self._session.close()
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])
        logger.debug("FaultProxy %s -> %s started", self.endpoint, self.upstream)
        return self

    async def stop(self) -> None:
        """Stop: close the listener, cancel in-flight requests (stalls too), close upstream."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        # Let connections accepted just before close() start their handler, which then sees
        # _closing and leaves at once.
        await asyncio.sleep(0)
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        if self._session is not None:
            await self._session.close()
        logger.debug("FaultProxy %s stopped", self.endpoint)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def in_thread(self, *, start_timeout: float = 10.0) -> _ProxyThread:
        """Run the proxy in a background thread with its own event loop.

        Use as ``with FaultProxy(url).in_thread() as proxy:``; the ``with`` block gets the proxy
        itself, already listening, and leaving the block stops it and joins the thread. This is
        for synchronous tests, code that runs its own event loop, and other processes.
        """
        return _ProxyThread(self, start_timeout)

    # ---------------------------------------------------------------- faults

    def latency(
        self,
        seconds: float,
        *,
        jitter: float = 0.0,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Delay every request by ``seconds`` plus a uniform ``[0, jitter]``.

        Models the network round trip to a real endpoint (about 0.005 s in-region), so a
        benchmark through the proxy counts what round trips cost. Applies to faulted requests
        too, since a throttle or a conflict is also a round trip. Several latencies add up.
        """
        _check_seconds("seconds", seconds, MAX_DELAY_SECONDS)
        _check_seconds("jitter", jitter, MAX_DELAY_SECONDS - seconds)
        return self._add("latency", operations, None, times, duration, _Latency(seconds, jitter))

    def throttle(
        self,
        *,
        code: ThrottleCode = "ProvisionedThroughputExceededException",
        message: str | None = None,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Answer with DynamoDB's HTTP 400 throttling error instead of forwarding.

        ``code`` picks the error: ``ProvisionedThroughputExceededException`` (a table or index
        over its capacity), ``ThrottlingException`` (control plane / on-demand ramp-up) or
        ``RequestLimitExceeded`` (account limit). botocore retries all three.
        """
        if code not in _THROTTLE_TYPES:
            raise ValueError(f"unknown throttle code {code!r}; use one of {list(_THROTTLE_TYPES)}")
        params = _Throttle(code, message if message is not None else _THROTTLE_MESSAGES[code])
        return self._add("throttle", operations, None, times, duration, params)

    def partial_batch(
        self,
        keep: int | None = None,
        *,
        fraction: float | None = None,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Forward only part of a batch and return the rest as unprocessed.

        For BatchWriteItem (the default) the first ``keep`` write requests, or
        ``floor(n * fraction)`` of them but at least one, are forwarded, in table order; the
        rest is added to the answer's ``UnprocessedItems`` after any the engine left. With
        ``operations={"BatchGetItem"}`` keys are held back the same way, as ``UnprocessedKeys``.
        ``keep=0`` forwards nothing and answers with every request unprocessed (real DynamoDB
        would rather throttle in that case; use :meth:`throttle` for that). Only a batch it
        actually shortens counts towards ``times``.
        """
        if (keep is None) == (fraction is None):
            raise ValueError("give exactly one of keep and fraction")
        if keep is not None and keep < 0:
            raise ValueError("keep must be >= 0")
        if fraction is not None and not 0.0 <= fraction < 1.0:
            raise ValueError("fraction must be in [0, 1)")
        if operations is None:
            operations = {"BatchWriteItem"}
        params = _PartialBatch(keep, fraction)
        return self._add("partial_batch", operations, _BATCH_OPERATIONS, times, duration, params)

    def transaction_conflict(
        self,
        *,
        indexes: Collection[int] | None = None,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Cancel transactions with ``TransactionConflict`` without forwarding them.

        The answer is the ``TransactionCanceledException`` DynamoDB sends when another
        transaction holds an item: one ``CancellationReasons`` entry per ``TransactItems``
        entry, ``TransactionConflict`` for the ``indexes`` given (default: all) and ``None``
        for the others. Applies to TransactWriteItems unless ``operations`` also names
        TransactGetItems.
        """
        if operations is None:
            operations = {"TransactWriteItems"}
        index_set = None if indexes is None else frozenset(indexes)
        if index_set is not None and any(i < 0 for i in index_set):
            raise ValueError("indexes must be >= 0")
        params = _TransactionConflict(index_set)
        return self._add("transaction_conflict", operations, _TRANSACTION_OPERATIONS, times, duration, params)

    def reset_connection(
        self,
        *,
        after_forward: bool = False,
        how: ResetHow = "rst",
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Drop the connection without any HTTP response.

        ``after_forward=False``: the request never reaches the engine (it is lost).
        ``after_forward=True``: the engine handles it (a write lands) and the response is lost,
        the ambiguous failure idempotent writes must survive. ``how`` picks a TCP reset or a
        clean close; botocore reports either as a connection error.
        """
        if how not in ("rst", "close"):
            raise ValueError("how must be 'rst' or 'close'")
        params = _ResetConnection(after_forward, how)
        return self._add("reset_connection", operations, None, times, duration, params)

    def stall(
        self,
        seconds: float,
        *,
        then: StallThen = "respond",
        after_forward: bool = False,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Hold a request for ``seconds`` (at most :data:`MAX_STALL_SECONDS`), then go on.

        Make ``seconds`` longer than the client's read timeout to get a ``ReadTimeoutError``.
        ``after_forward=False`` holds the request before forwarding it; if the client hangs
        up meanwhile the request is never forwarded (it was lost on the way).
        ``after_forward=True`` forwards at once (a write lands) and holds the response. When
        the time is up, ``then="respond"`` delivers the response (if anyone still listens) and
        ``then="reset"`` resets the connection. A stall ends early when the client hangs up,
        and :meth:`stop` cancels it.
        """
        _check_seconds("seconds", seconds, MAX_STALL_SECONDS)
        if then not in ("respond", "reset"):
            raise ValueError("then must be 'respond' or 'reset'")
        params = _Stall(seconds, then, after_forward)
        return self._add("stall", operations, None, times, duration, params)

    def strip_all_old(
        self,
        *,
        operations: Collection[str] | str | None = None,
        times: int | None = None,
        duration: float | None = None,
    ) -> Fault:
        """Remove the old ``Item`` from condition-check failures that asked for ``ALL_OLD``.

        DynamoDB returns the item that failed the condition when the request says
        ``ReturnValuesOnConditionCheckFailure: ALL_OLD``; some engines do not. This models
        them, so code relying on the item can be tested for its fallback. Applies to PutItem,
        UpdateItem, DeleteItem (``ConditionalCheckFailedException``) and TransactWriteItems
        (each ``CancellationReasons`` entry). Only a response it changes counts towards
        ``times``.
        """
        return self._add("strip_all_old", operations, _ALL_OLD_OPERATIONS, times, duration, _StripAllOld())

    def clear(self, kind: FaultKind | None = None) -> None:
        """Remove every fault, or every fault of one kind. Statistics are kept."""
        with self._lock:
            for fault in self._faults:
                if kind is None or fault.kind == kind:
                    fault._cancelled = True
            self._faults = [f for f in self._faults if not f._cancelled]

    def faults(self) -> list[Fault]:
        """The faults installed and not removed (some may be used up or expired)."""
        with self._lock:
            return [f for f in self._faults if not f._cancelled]

    # ---------------------------------------------------------------- statistics

    def stats(self) -> ProxyStats:
        """A snapshot of the per-operation counters."""
        with self._lock:
            return ProxyStats(MappingProxyType({op: c.freeze() for op, c in self._counters.items()}))

    def reset_stats(self) -> None:
        """Zero the counters, e.g. between the set-up and the measured part of a benchmark."""
        with self._lock:
            self._counters.clear()

    # ---------------------------------------------------------------- internals: rules

    def _add(
        self,
        kind: FaultKind,
        operations: Collection[str] | str | None,
        allowed: frozenset[str] | None,
        times: int | None,
        duration: float | None,
        params: _Params,
    ) -> Fault:
        _check_limits(times, duration)
        ops = _normalise_operations(operations, allowed)
        if ops is None and allowed is not None:
            ops = allowed
        fault = Fault(self._lock, kind, ops, times, duration, params)
        with self._lock:
            # Drop faults that can never fire again, so the list does not grow without bound.
            now = time.monotonic()
            self._faults = [f for f in self._faults if f._is_active(now)]
            self._faults.append(fault)
        return fault

    def _count(
        self,
        request: _Request,
        *,
        forwarded: int = 0,
        upstream_errors: int = 0,
        fault: Fault | None = None,
    ) -> None:
        with self._lock:
            counters = self._counters.setdefault(request.operation, _Counters())
            counters.forwarded += forwarded
            counters.upstream_errors += upstream_errors
            if fault is not None:
                # A request counts once in ``faulted`` however many faults acted on it.
                if not request.faulted:
                    request.faulted = True
                    counters.faulted += 1
                counters.faults[fault.kind] = counters.faults.get(fault.kind, 0) + 1

    def _plan(self, request: _Request) -> _Plan:
        """Decide, under the lock, which faults take this request (and use them up)."""
        op = request.operation
        doc = request.json() if op in _JSON_OPERATIONS and self._faults else None
        plan = _Plan()
        with self._lock:
            self._counters.setdefault(op, _Counters()).seen += 1
            now = time.monotonic()
            for fault in self._faults:
                if not fault._matches(op, now):
                    continue
                params = fault.params
                if isinstance(params, _Latency):
                    fault._consume()
                    plan.delay += params.seconds + (self._rng.uniform(0.0, params.jitter) if params.jitter else 0.0)
                elif fault.kind in _TERMINAL_KINDS and plan.terminal is None:
                    fault._consume()
                    plan.terminal = fault
            # A partial batch is only used up by a request that will be forwarded.
            if doc and _may_forward(plan.terminal):
                for fault in self._faults:
                    params = fault.params
                    if isinstance(params, _PartialBatch) and fault._matches(op, now):
                        split = (
                            _split_batch_write(doc, params) if op == "BatchWriteItem" else _split_batch_get(doc, params)
                        )
                        if split is not None:
                            fault._consume()
                            plan.partial, plan.split = fault, split
                            break
        plan.delay = min(plan.delay, MAX_DELAY_SECONDS)
        return plan

    def _take_strip(self, operation: str) -> Fault | None:
        with self._lock:
            now = time.monotonic()
            for fault in self._faults:
                if fault.kind == "strip_all_old" and fault._matches(operation, now):
                    return fault
        return None

    # ---------------------------------------------------------------- internals: serving

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: a bounded keep-alive loop of requests."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if self._closing:
                return
            for served in range(1, _MAX_REQUESTS_PER_CONNECTION + 1):
                request = await self._read_request(reader, writer)
                if request is None:
                    return
                if served == _MAX_REQUESTS_PER_CONNECTION:
                    request.keep_alive = False
                if not await self._handle(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:
            logger.exception("FaultProxy: error while serving a connection")
        finally:
            if task is not None:
                self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        """Read one HTTP/1.1 request; ``None`` when the client closed or sent garbage."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # closed between requests (or mid-header)
        except asyncio.LimitOverrunError:
            await self._write(writer, _Response(431, _reason(431), [], b""), keep_alive=False)
            return None
        try:
            lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise _BadRequest(version)
            headers: list[tuple[str, str]] = []
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name.strip():
                    raise _BadRequest(line)
                headers.append((name.strip(), value.strip()))
            if "100-continue" in _tokens(_header(headers, "Expect")):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            body = await self._read_body(reader, headers)
        except (_BadRequest, ValueError):
            await self._write(writer, _Response(400, _reason(400), [], b""), keep_alive=False)
            return None
        connection = _tokens(_header(headers, "Connection"))
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        return _Request(method, target, version, headers, body, _operation(headers), keep_alive)

    async def _read_body(self, reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
        if "chunked" in _tokens(_header(headers, "Transfer-Encoding")):
            chunks: list[bytes] = []
            size_total = 0
            for _ in range(_MAX_CHUNKS):
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Skip trailers up to the empty line.
                    for _ in range(_MAX_CHUNKS):
                        if await reader.readuntil(b"\r\n") == b"\r\n":
                            return b"".join(chunks)
                    raise _BadRequest("too many trailers")
                size_total += size
                if size_total > _MAX_BODY_BYTES:
                    raise _BadRequest("body too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            raise _BadRequest("too many chunks")
        length_header = _header(headers, "Content-Length")
        if length_header is None:
            return b""
        length = int(length_header)
        if not 0 <= length <= _MAX_BODY_BYTES:
            raise _BadRequest("bad Content-Length")
        return await reader.readexactly(length)

    async def _write(self, writer: asyncio.StreamWriter, response: _Response, *, keep_alive: bool) -> None:
        lines = [f"HTTP/1.1 {response.status} {response.reason or _reason(response.status)}"]
        lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in _SKIP_RESPONSE_HEADERS]
        lines.append(f"Content-Length: {len(response.body)}")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()

    async def _hold(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` as soon as the client hangs up (bounded polling)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        for _ in range(math.ceil(seconds / _HOLD_POLL_SECONDS) + 2):
            if reader.at_eof():
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(_HOLD_POLL_SECONDS, remaining))
        return not reader.at_eof()

    async def _handle(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer (or fail) one request; whether the connection stays open for the next."""
        plan = self._plan(request)
        op = request.operation
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        fault = plan.terminal
        params = fault.params if fault is not None else None

        if isinstance(params, _Throttle):
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s throttled with %s", op, params.code)
            response = _error_response(_THROTTLE_TYPES[params.code], {"message": params.message})
            await self._write(writer, response, keep_alive=request.keep_alive)
            return request.keep_alive

        if isinstance(params, _TransactionConflict):
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s cancelled with TransactionConflict", op)
            response = self._conflict_response(request, params)
            await self._write(writer, response, keep_alive=request.keep_alive)
            return request.keep_alive

        if isinstance(params, _ResetConnection) and not params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s connection dropped before forwarding", op)
            _drop(writer, params.how)
            return False

        if isinstance(params, _Stall) and not params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s stalled %.3fs before forwarding", op, params.seconds)
            if not await self._hold(reader, params.seconds) or params.then == "reset":
                _drop(writer, "rst")
                return False

        forwarded = await self._forward(request, plan)
        if forwarded is None:
            _drop(writer, "close")  # the engine is unreachable: so is the "endpoint"
            return False

        if isinstance(params, _ResetConnection):  # after_forward
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s forwarded, then connection dropped", op)
            _drop(writer, params.how)
            return False

        if isinstance(params, _Stall) and params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s forwarded, response held %.3fs", op, params.seconds)
            if not await self._hold(reader, params.seconds) or params.then == "reset":
                _drop(writer, "rst")
                return False

        await self._write(writer, forwarded, keep_alive=request.keep_alive)
        return request.keep_alive

    def _conflict_response(self, request: _Request, params: _TransactionConflict) -> _Response:
        doc = request.json() or {}
        items = doc.get("TransactItems")
        count = len(items) if isinstance(items, list) and items else 1
        reasons: list[dict[str, str]] = []
        for index in range(count):
            if params.indexes is None or index in params.indexes:
                reasons.append({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
            else:
                reasons.append({"Code": "None"})
        codes = ", ".join(r["Code"] for r in reasons)
        return _error_response(
            _DYNAMODB_ERROR_PREFIX + "TransactionCanceledException",
            {
                "CancellationReasons": reasons,
                "Message": (f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"),
            },
        )

    async def _forward(self, request: _Request, plan: _Plan) -> _Response | None:
        """Send the request (or the forwarded part of a batch) upstream and post-process."""
        op = request.operation
        split = plan.split
        if split is not None and split.forwarded is None:
            # Nothing of the batch goes through: answer for the engine.
            self._count(request, fault=plan.partial)
            logger.debug("FaultProxy: %s answered with everything unprocessed", op)
            if op == "BatchWriteItem":
                return _json_response({"UnprocessedItems": split.withheld})
            return _json_response({"Responses": {t: [] for t in split.tables}, "UnprocessedKeys": split.withheld})

        body = request.body if split is None or split.forwarded is None else _dumps(split.forwarded)
        response = await self._send_upstream(request, body)
        if response is None:
            self._count(request, upstream_errors=1)
            return None
        self._count(request, forwarded=1)

        if split is not None:
            self._count(request, fault=plan.partial)
            doc = _response_json(response) if response.status == 200 else None
            if doc is None:
                # An error (or an unreadable answer) from the engine is passed on as it is.
                return response
            logger.debug("FaultProxy: %s partially forwarded", op)
            _merge_unprocessed(op, doc, split.withheld)
            return _rewritten(response, doc)

        if response.status == 400 and op in _ALL_OLD_OPERATIONS:
            return self._maybe_strip(request, response)
        return response

    def _maybe_strip(self, request: _Request, response: _Response) -> _Response:
        op = request.operation
        fault = self._take_strip(op)
        if fault is None:
            return response
        request_doc = request.json()
        if request_doc is None or not _asks_all_old(op, request_doc):
            return response
        doc = _response_json(response)
        if doc is None or not _strip_items(doc):
            return response
        with self._lock:
            if not fault._is_active(time.monotonic()):
                return response  # used up by a concurrent request meanwhile
            fault._consume()
        self._count(request, fault=fault)
        logger.debug("FaultProxy: %s ALL_OLD item stripped", op)
        return _rewritten(response, doc)

    async def _send_upstream(self, request: _Request, body: bytes) -> _Response | None:
        session = self._session
        if session is None:
            return None
        target = request.target
        if not target.startswith("/"):
            # Absolute-form target (a client configured to use this as an HTTP proxy).
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in _SKIP_REQUEST_HEADERS]
        try:
            async with session.request(
                request.method,
                yarl.URL(self.upstream + target, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.raw_headers]
                return _Response(upstream.status, upstream.reason or "", raw, payload)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.warning("FaultProxy: upstream %s failed: %r", self.upstream, exc)
            return None


class _ProxyThread:
    """Runs a :class:`FaultProxy` in a daemon thread with its own event loop (see ``in_thread``)."""

    def __init__(self, proxy: FaultProxy, start_timeout: float) -> None:
        self._proxy = proxy
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("already entered")
        self._thread = threading.Thread(target=self._run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"FaultProxy did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._start_timeout)
            raise self._error
        return self._proxy

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            # stop() cancels every handler, so this is quick; the bound is a safety net.
            thread.join(self._start_timeout + 10.0)
            if thread.is_alive():
                logger.warning("FaultProxy thread did not stop in time")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._proxy.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._proxy.stop()
