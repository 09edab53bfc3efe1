"""The proxy: :class:`FaultProxy` serves clients, decides faults per request and forwards the rest.

It ties the other modules together: :mod:`.handles` decides which faults take a request,
:mod:`.http` reads, writes and forwards, :mod:`.rewrites` changes the JSON, :mod:`.stats`
counts, :mod:`.thread` runs it all in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from kvstore.testing.faults import rewrites
from kvstore.testing.faults.handles import (
    ALL_OLD_OPERATIONS,
    BATCH_OPERATIONS,
    JSON_OPERATIONS,
    MAX_DELAY_SECONDS,
    MAX_STALL_SECONDS,
    TRANSACTION_OPERATIONS,
    Fault,
    FaultKind,
    FaultSet,
    Latency,
    PartialBatch,
    Plan,
    ResetConnection,
    ResetHow,
    Stall,
    StallThen,
    StripAllOld,
    Throttle,
    ThrottleCode,
    TransactionConflict,
    check_seconds,
)
from kvstore.testing.faults.http import (
    MAX_HEADER_BYTES,
    MAX_REQUESTS_PER_CONNECTION,
    Request,
    Response,
    Upstream,
    drop,
    error_response,
    hold,
    json_response,
    read_request,
    response_json,
    rewritten,
    write_response,
)
from kvstore.testing.faults.stats import ProxyStats, StatsRecorder
from kvstore.testing.faults.thread import ProxyThread

__all__ = ["FaultProxy"]

logger = logging.getLogger(__name__)


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
        self._faults = FaultSet(seed)
        self._stats = StatsRecorder()
        self._upstream = Upstream(self.upstream, upstream_timeout)
        self._server: asyncio.Server | None = None
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
        self._upstream.open()
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self._host, self._requested_port, limit=MAX_HEADER_BYTES
            )
        except BaseException:
            await self._upstream.close()
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
        await self._upstream.close()
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

    def in_thread(self, *, start_timeout: float = 10.0) -> ProxyThread[FaultProxy]:
        """Run the proxy in a background thread with its own event loop.

        Use as ``with FaultProxy(url).in_thread() as proxy:``; the ``with`` block gets the proxy
        itself, already listening, and leaving the block stops it and joins the thread. This is
        for synchronous tests, code that runs its own event loop, and other processes.
        """
        return ProxyThread(self, start_timeout)

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
        check_seconds("seconds", seconds, MAX_DELAY_SECONDS)
        check_seconds("jitter", jitter, MAX_DELAY_SECONDS - seconds)
        return self._faults.add("latency", operations, None, times, duration, Latency(seconds, jitter))

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
        if code not in rewrites.THROTTLE_TYPES:
            raise ValueError(f"unknown throttle code {code!r}; use one of {list(rewrites.THROTTLE_TYPES)}")
        params = Throttle(code, message if message is not None else rewrites.THROTTLE_MESSAGES[code])
        return self._faults.add("throttle", operations, None, times, duration, params)

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
        params = PartialBatch(keep, fraction)
        return self._faults.add("partial_batch", operations, BATCH_OPERATIONS, times, duration, params)

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
        params = TransactionConflict(index_set)
        return self._faults.add("transaction_conflict", operations, TRANSACTION_OPERATIONS, times, duration, params)

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
        params = ResetConnection(after_forward, how)
        return self._faults.add("reset_connection", operations, None, times, duration, params)

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
        check_seconds("seconds", seconds, MAX_STALL_SECONDS)
        if then not in ("respond", "reset"):
            raise ValueError("then must be 'respond' or 'reset'")
        params = Stall(seconds, then, after_forward)
        return self._faults.add("stall", operations, None, times, duration, params)

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
        return self._faults.add("strip_all_old", operations, ALL_OLD_OPERATIONS, times, duration, StripAllOld())

    def clear(self, kind: FaultKind | None = None) -> None:
        """Remove every fault, or every fault of one kind. Statistics are kept."""
        self._faults.clear(kind)

    def faults(self) -> list[Fault]:
        """The faults installed and not removed (some may be used up or expired)."""
        return self._faults.installed()

    # ---------------------------------------------------------------- statistics

    def stats(self) -> ProxyStats:
        """A snapshot of the per-operation counters."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters, e.g. between the set-up and the measured part of a benchmark."""
        self._stats.reset()

    # ---------------------------------------------------------------- internals

    def _count(
        self,
        request: Request,
        *,
        forwarded: int = 0,
        upstream_errors: int = 0,
        fault: Fault | None = None,
    ) -> None:
        # A request counts once in ``faulted`` however many faults acted on it.
        first_fault = fault is not None and not request.faulted
        if first_fault:
            request.faulted = True
        self._stats.record(
            request.operation,
            forwarded=forwarded,
            upstream_errors=upstream_errors,
            faulted=int(first_fault),
            fault=None if fault is None else fault.kind,
        )

    def _plan(self, request: Request) -> Plan:
        """Count the request as seen and decide which faults take it (using them up)."""
        op = request.operation
        doc = request.json() if op in JSON_OPERATIONS and self._faults else None
        self._stats.record(op, seen=1)
        return self._faults.plan(op, doc)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: a bounded keep-alive loop of requests."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if self._closing:
                return
            for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
                request = await read_request(reader, writer)
                if request is None:
                    return
                if served == MAX_REQUESTS_PER_CONNECTION:
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

    async def _handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer (or fail) one request; whether the connection stays open for the next."""
        plan = self._plan(request)
        op = request.operation
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        fault = plan.terminal
        params = fault.params if fault is not None else None

        if isinstance(params, Throttle):
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s throttled with %s", op, params.code)
            response = error_response(rewrites.throttle_error(params.code, params.message))
            await write_response(writer, response, keep_alive=request.keep_alive)
            return request.keep_alive

        if isinstance(params, TransactionConflict):
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s cancelled with TransactionConflict", op)
            response = error_response(rewrites.conflict_error(request.json() or {}, params.indexes))
            await write_response(writer, response, keep_alive=request.keep_alive)
            return request.keep_alive

        if isinstance(params, ResetConnection) and not params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s connection dropped before forwarding", op)
            drop(writer, params.how)
            return False

        if isinstance(params, Stall) and not params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s stalled %.3fs before forwarding", op, params.seconds)
            if not await hold(reader, params.seconds) or params.then == "reset":
                drop(writer, "rst")
                return False

        forwarded = await self._forward(request, plan)
        if forwarded is None:
            drop(writer, "close")  # the engine is unreachable: so is the "endpoint"
            return False

        if isinstance(params, ResetConnection):  # after_forward
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s forwarded, then connection dropped", op)
            drop(writer, params.how)
            return False

        if isinstance(params, Stall) and params.after_forward:
            self._count(request, fault=fault)
            logger.debug("FaultProxy: %s forwarded, response held %.3fs", op, params.seconds)
            if not await hold(reader, params.seconds) or params.then == "reset":
                drop(writer, "rst")
                return False

        await write_response(writer, forwarded, keep_alive=request.keep_alive)
        return request.keep_alive

    async def _forward(self, request: Request, plan: Plan) -> Response | None:
        """Send the request (or the forwarded part of a batch) upstream and post-process."""
        op = request.operation
        split = plan.split
        if split is not None and split.forwarded is None:
            # Nothing of the batch goes through: answer for the engine.
            self._count(request, fault=plan.partial)
            logger.debug("FaultProxy: %s answered with everything unprocessed", op)
            return json_response(rewrites.everything_unprocessed(op, split))

        body = request.body if split is None or split.forwarded is None else rewrites.dumps(split.forwarded)
        response = await self._upstream.send(request, body)
        if response is None:
            self._count(request, upstream_errors=1)
            return None
        self._count(request, forwarded=1)

        if split is not None:
            self._count(request, fault=plan.partial)
            doc = response_json(response) if response.status == 200 else None
            if doc is None:
                # An error (or an unreadable answer) from the engine is passed on as it is.
                return response
            logger.debug("FaultProxy: %s partially forwarded", op)
            return rewritten(response, rewrites.merge_unprocessed(op, doc, split.withheld))

        if response.status == 400 and op in ALL_OLD_OPERATIONS:
            return self._maybe_strip(request, response)
        return response

    def _maybe_strip(self, request: Request, response: Response) -> Response:
        op = request.operation
        fault = self._faults.find_strip(op)
        if fault is None:
            return response
        request_doc = request.json()
        if request_doc is None or not rewrites.asks_all_old(op, request_doc):
            return response
        doc = response_json(response)
        stripped = None if doc is None else rewrites.strip_items(doc)
        if stripped is None:
            return response
        if not self._faults.consume_if_active(fault):
            return response  # used up by a concurrent request meanwhile
        self._count(request, fault=fault)
        logger.debug("FaultProxy: %s ALL_OLD item stripped", op)
        return rewritten(response, stripped)
