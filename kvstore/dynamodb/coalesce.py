"""Group commit and coalesced reads: concurrent operations share BatchWriteItem / BatchGetItem calls.

Per-call client CPU (about a millisecond in aiobotocore), not the engine, caps one process at one
request per operation; DynamoDB moves 25 items per BatchWriteItem and 100 keys per BatchGetItem for
barely more. So operations that arrive while a request is in flight ride the next one:

- **No added latency when idle.** At most ``lanes`` requests are in flight; while a lane is free
  and nothing waits, an operation goes out at once, alone. Otherwise it queues, and a freed lane
  takes the queue (up to 25 write items / 100 keys) a few event-loop turns later, once the callers
  its request woke have queued their next operations: with 64 callers that makes one BatchGetItem
  of about 60 keys where taking the queue at once sent one of about 10 and a GetItem alone.
- **Identical items are written once.** Concurrent puts into one folder share its pointer items
  (write units are billed per item); a batch never holds two requests on one item. A batch starts
  with the oldest operation that may go, then fills up with the queued ones that add the fewest new
  items: puts into the folders already in the batch first, so hot folders pay for their pointers
  once per batch rather than once per put.
- **Per-key order.** An operation on a record already in flight (or queued earlier) waits for it:
  a put then a delete of one key land in that order.
- **Each operation resolves alone**, as soon as all of *its* items are stored, and fails alone
  when one of its items does (an unprocessed item past the deadline, an engine rejection).
  Unprocessed items are resubmitted with capped exponential backoff and full jitter, as the
  :class:`~kvstore.dynamodb.writer.BatchWriter` does; so are a shared BatchGetItem's
  ``UnprocessedKeys``, and a shared request after a transient error (a lone GetItem is left to the
  SDK's retry policy, exactly as without coalescing).
- **Clean or not.** A write whose items all landed on their first sending is *clean*; the
  folder-pointer protocol (:mod:`kvstore.dynamodb.pointers`) relies on that, and sharing a request
  keeps it true: an operation's record and pointers still travel in one request.

Cancellation: callers await futures; the requests themselves belong to the group, so cancelling one
caller never cancels another's items (the backend also shields its operations, see
:mod:`kvstore.dynamodb.inflight`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvstore import metrics
from kvstore.dynamodb.records import ATTR_KEY, ATTR_PATH, Item
from kvstore.dynamodb.table import Table
from kvstore.errors import Throttled, WriteIncomplete, is_transient

__all__ = ["GET_LIMIT", "READ_LANES", "WRITE_LANES", "GroupReader", "GroupWriter"]

log = logging.getLogger(__name__)

#: Requests of one kind in flight at once: few enough that concurrent operations share requests,
#: enough that one slow request does not stall the rest and the engine works on several at once.
#: ``python -m benchmarks.experiments.lanes`` (64 callers, loopback and 5 ms round trips): writes
#: moved the most with 3 lanes (1.2x 2 lanes, 1.4x 1 lane at 5 ms; more lanes mean emptier batches,
#: more items per put and more CPU), reads with 1-2 (a BatchGetItem's cost barely grows with its
#: keys, so fewer, fuller requests win; 2 keeps one slow request from stalling every read).
WRITE_LANES = 3
READ_LANES = 2
#: Turns of the event loop a freed lane waits before it takes the queue (see ``_Group._pump_soon``).
SETTLE_TURNS = 4
#: DynamoDB's limits on one BatchWriteItem and one BatchGetItem.
WRITE_LIMIT = 25
GET_LIMIT = 100
#: How many queued operations one batch chooses among (bounds the CPU of choosing).
WRITE_WINDOW = 4 * WRITE_LIMIT

ItemKey = tuple[str, str]
WriteRequest = dict[str, Any]


def _item_key(request: WriteRequest) -> ItemKey:
    """The (Path, Key) a write request touches."""
    body = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
    return body[ATTR_PATH]["S"], body[ATTR_KEY]["S"]


def _is_pointer(key: ItemKey) -> bool:
    return key[1].endswith("/")


@dataclass(eq=False)
class _WriteOp:
    requests: dict[ItemKey, WriteRequest]
    future: asyncio.Future[bool]
    pending: set[ItemKey] = field(default_factory=set)
    clean: bool = True

    @property
    def records(self) -> list[ItemKey]:
        return [k for k in self.requests if not _is_pointer(k)]

    def landed(self, key: ItemKey) -> None:
        self.pending.discard(key)
        if not self.pending and not self.future.done():
            self.future.set_result(self.clean)

    def fail(self, exc: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(exc, Exception):
            self.future.set_exception(exc)
        else:
            self.future.cancel()  # the request was cancelled (the backend is closing); nothing to log


class _Backoff:
    """Capped exponential backoff with full jitter, within a deadline."""

    def __init__(self, deadline: float, base: float, cap: float) -> None:
        self.deadline = time.monotonic() + deadline
        self._base = base
        self._cap = cap
        self.attempt = 0

    def next_delay(self) -> float | None:
        """The next sleep, or None when it would pass the deadline."""
        delay = random.uniform(0, min(self._cap, self._base * 2**self.attempt))
        if time.monotonic() + delay > self.deadline:
            return None
        self.attempt += 1
        return delay


class _Lanes:
    """The requests in flight and their tasks (kept referenced until done)."""

    def __init__(self, lanes: int) -> None:
        self.limit = lanes
        self.tasks: set[asyncio.Task[None]] = set()
        self.inline = 0  # requests sent from the caller's own task (the idle fast path)

    @property
    def free(self) -> bool:
        return len(self.tasks) + self.inline < self.limit

    async def run_inline(self, coro: Any, done: Callable[[], None]) -> None:
        """Send a lone operation from the caller's task: no task, no queue, when nothing waits."""
        self.inline += 1
        try:
            await coro
        finally:
            self.inline -= 1
            done()

    def start(self, coro: Any, done: Callable[[], None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            done()

        task.add_done_callback(finished)


class _Group:
    """What a writer and a reader share: the table, the lanes, and the backoff of resubmissions."""

    def __init__(
        self, table: Table, *, deadline: float, lanes: int, base_delay: float = 0.025, max_delay: float = 1.0
    ) -> None:
        self._table = table
        self._deadline = deadline
        self._base = base_delay
        self._max = max_delay
        self._lanes = _Lanes(lanes)
        self._pump_due = False

    def _backoff(self) -> _Backoff:
        return _Backoff(self._deadline, self._base, self._max)

    @property
    def _idle(self) -> bool:
        """Whether an operation may go out at once, alone: a lane is free and nothing is waiting."""
        return self._lanes.free and not self._pump_due

    def _pump(self) -> None:
        """Send what is queued on the free lanes."""
        raise NotImplementedError

    def _pump_soon(self) -> None:
        """Pump once the event loop has turned ``SETTLE_TURNS`` times.

        A request that completes wakes its callers, whose next operations reach the group a few
        turns later (through the backend's task and shield). Pumping at once would send the queue
        without them, and the first of them alone on the lane just freed; waiting these turns lets
        them ride one batch together. It never delays a lone operation on an idle group.
        """
        if self._pump_due:
            return
        self._pump_due = True
        loop = asyncio.get_running_loop()

        def turn(left: int) -> None:
            if left > 0:
                loop.call_soon(turn, left - 1)
                return
            self._pump_due = False
            self._pump()

        loop.call_soon(turn, SETTLE_TURNS - 1)


class GroupWriter(_Group):
    """Shares BatchWriteItem calls among concurrent writes of at most 25 items each."""

    def __init__(self, table: Table, *, lanes: int = WRITE_LANES, **timing: Any) -> None:
        super().__init__(table, lanes=lanes, **timing)
        self._queue: deque[_WriteOp] = deque()
        self._busy: set[ItemKey] = set()  # records of operations in flight (per-key order)
        self.retries = 0
        """How many times a batch (or its unprocessed rest) was resubmitted."""
        self.shared_items = 0
        """Write requests saved because concurrent operations needed the same item."""

    async def write(self, requests: Sequence[WriteRequest]) -> bool:
        """Store ``requests`` (at most 25, at most one per item); whether the write was clean.

        :raises WriteIncomplete: some of these items were still unprocessed at the deadline.
        :raises KVStoreError: the engine refused the request, or a transient error outlasted the
            deadline.
        """
        items = {_item_key(r): r for r in requests}  # one request per item (the last one wins)
        if len(items) > WRITE_LIMIT:
            raise ValueError(f"a grouped write takes at most {WRITE_LIMIT} items")
        op = _WriteOp(items, asyncio.get_running_loop().create_future(), set(items))
        if not items:
            return True
        records = op.records
        if not self._queue and self._idle and self._busy.isdisjoint(records):
            # Idle: nothing to share with, so no queue and no task (what a lone put costs raw).
            self._busy.update(records)
            await self._lanes.run_inline(self._send([op]), functools.partial(self._done, records))
            return op.future.result()
        self._queue.append(op)
        if self._lanes.free:
            self._pump_soon()
        return await asyncio.shield(op.future)

    def _pump(self) -> None:
        while self._queue and self._lanes.free:
            batch = self._take()
            if not batch:
                return
            records = [k for op in batch for k in op.records]
            self._busy.update(records)
            self._lanes.start(self._send(batch), functools.partial(self._done, records))

    def _done(self, records: list[ItemKey]) -> None:
        self._busy.difference_update(records)
        self._pump_soon()

    def _take(self) -> list[_WriteOp]:
        """One batch: the oldest queued operation that may go, then the ones adding the fewest new items.

        An operation may go when none of its records is in flight or wanted by an operation queued
        before it (per-key order); a later operation on such a record waits behind it. Choosing
        among the first ``WRITE_WINDOW`` eligible operations by the items they add (ties: the
        older first) packs puts into the same folders together, so their pointers are written once.
        """
        blocked: set[ItemKey] = set(self._busy)
        eligible: list[_WriteOp] = []
        for op in self._queue:
            records = op.records
            if blocked.isdisjoint(records):
                eligible.append(op)
                if len(eligible) == WRITE_WINDOW:
                    break
            blocked.update(records)  # later operations on these keys wait behind this one
        if not eligible:
            return []
        chosen = [eligible[0]]
        items: set[ItemKey] = set(eligible[0].requests)
        rest = eligible[1:]
        # costs[i]: the items rest[i] would add; kept current through ``holders`` as items join.
        costs = [sum(k not in items for k in op.requests) for op in rest]
        holders: dict[ItemKey, list[int]] = {}
        for i, op in enumerate(rest):
            for k in op.requests:
                holders.setdefault(k, []).append(i)
        taken = WRITE_LIMIT + 1  # a cost that never fits: marks an operation already chosen
        while rest:
            best = min(range(len(rest)), key=costs.__getitem__)  # ties: the older operation
            if len(items) + costs[best] > WRITE_LIMIT:
                break  # the cheapest does not fit, so none does
            op = rest[best]
            self.shared_items += len(op.requests) - costs[best]
            costs[best] = taken
            for k in op.requests:
                if k not in items:
                    items.add(k)
                    for i in holders[k]:
                        costs[i] -= 1
            chosen.append(op)
        going = set(chosen)
        self._queue = deque(op for op in self._queue if op not in going)
        return chosen

    async def _send(self, batch: list[_WriteOp]) -> None:
        owners: dict[ItemKey, list[_WriteOp]] = {}
        pending: dict[ItemKey, WriteRequest] = {}
        for op in batch:
            for k, r in op.requests.items():
                owners.setdefault(k, []).append(op)
                pending.setdefault(k, r)
        backoff = self._backoff()
        try:
            while pending:
                reason: BaseException | None = None
                try:
                    requests = {self._table.name: list(pending.values())}
                    out = await self._table.call("batch_write_item", RequestItems=requests)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    reason = exc
                    unprocessed = set(pending)
                else:
                    left = out.get("UnprocessedItems", {}).get(self._table.name, [])
                    unprocessed = {_item_key(r) for r in left}
                    metrics.record_unprocessed("BatchWriteItem", len(unprocessed))
                    retried = bool(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
                    for k in [k for k in pending if k not in unprocessed]:
                        del pending[k]
                        for op in owners[k]:
                            if retried or backoff.attempt:
                                op.clean = False
                            op.landed(k)
                if not pending:
                    return
                for k in pending:
                    for op in owners[k]:
                        op.clean = False
                delay = backoff.next_delay()
                if delay is None:
                    raise reason or WriteIncomplete(
                        f"{len(pending)} write requests still unprocessed at the deadline", pending=len(pending)
                    )
                self.retries += 1
                metrics.record_batch_retry("BatchWriteItem", reason)
                log.debug("grouped write: %d requests to resend (%s), backoff %.3fs", len(pending),
                          reason or "unprocessed", delay)
                await asyncio.sleep(delay)
        except BaseException as exc:
            for k in pending:
                for op in owners[k]:
                    op.fail(exc)
            if not isinstance(exc, Exception):
                raise


@dataclass(eq=False)
class _Read:
    key: ItemKey
    future: asyncio.Future[Item | None]


class GroupReader(_Group):
    """Shares consistent BatchGetItem calls among concurrent point reads; a lone read is a GetItem."""

    def __init__(self, table: Table, *, lanes: int = READ_LANES, **timing: Any) -> None:
        super().__init__(table, lanes=lanes, **timing)
        self._queue: deque[_Read] = deque()
        self.batched_keys = 0
        """Keys read through a BatchGetItem shared with other reads."""

    async def get(self, path: str, name: str) -> Item | None:
        """The item at (``path``, ``name``), read consistently, or None."""
        read = _Read((path, name), asyncio.get_running_loop().create_future())
        if not self._queue and self._idle:
            await self._lanes.run_inline(self._send({read.key: [read]}), self._pump_soon)
            return read.future.result()
        self._queue.append(read)
        if self._lanes.free:
            self._pump_soon()
        return await asyncio.shield(read.future)

    def _pump(self) -> None:
        while self._queue and self._lanes.free:
            reads: dict[ItemKey, list[_Read]] = {}
            while self._queue and (len(reads) < GET_LIMIT or self._queue[0].key in reads):
                r = self._queue.popleft()
                reads.setdefault(r.key, []).append(r)
            self._lanes.start(self._send(reads), self._pump_soon)

    async def _send(self, reads: dict[ItemKey, list[_Read]]) -> None:
        def deliver(key: ItemKey, item: Item | None) -> None:
            for r in reads.pop(key, []):
                if not r.future.done():
                    r.future.set_result(item)

        try:
            if len(reads) == 1:
                (path, name), = reads
                out = await self._table.call(
                    "get_item", key=name, Key={ATTR_PATH: {"S": path}, ATTR_KEY: {"S": name}}, ConsistentRead=True
                )
                deliver((path, name), out.get("Item"))
                return
            self.batched_keys += len(reads)
            backoff = self._backoff()
            while reads:
                reason: Exception | None = None
                keys = [{ATTR_PATH: {"S": p}, ATTR_KEY: {"S": n}} for p, n in reads]
                try:
                    out = await self._table.call(
                        "batch_get_item", RequestItems={self._table.name: {"Keys": keys, "ConsistentRead": True}}
                    )
                except Exception as exc:
                    # A shared request that failed for a passing reason (throttled past the SDK's
                    # retries, a dropped connection) is resent within the deadline, like the
                    # writer's: failing it would fail every read that happened to share it.
                    if not is_transient(exc):
                        raise
                    reason = exc
                else:
                    for item in out.get("Responses", {}).get(self._table.name, []):
                        deliver((item[ATTR_PATH]["S"], item[ATTR_KEY]["S"]), item)
                    left = out.get("UnprocessedKeys", {}).get(self._table.name, {}).get("Keys", [])
                    unprocessed = {(k[ATTR_PATH]["S"], k[ATTR_KEY]["S"]) for k in left}
                    metrics.record_unprocessed("BatchGetItem", len(unprocessed))
                    for key in [k for k in reads if k not in unprocessed]:
                        deliver(key, None)  # asked, answered, absent
                    if not reads:
                        return
                delay = backoff.next_delay()
                if delay is None:
                    raise reason or Throttled(f"{len(reads)} keys still unprocessed at the deadline",
                                              code="UnprocessedKeys")
                metrics.record_batch_retry("BatchGetItem", reason)
                await asyncio.sleep(delay)
        except BaseException as exc:
            for waiting in reads.values():
                for r in waiting:
                    if r.future.done():
                        continue
                    if isinstance(exc, Exception):
                        r.future.set_exception(exc)
                    else:
                        r.future.cancel()
            if not isinstance(exc, Exception):
                raise
