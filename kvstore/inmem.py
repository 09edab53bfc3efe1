"""InmemBackend: the reference implementation of the whole contract, and a test double.

Everything the DynamoDB backend promises, in one process: hierarchical keys with the same
validation and size limits, transactions, versioned conditional commits, and the same lease lock
protocol (:mod:`kvstore.lease`). Apps use it in their own tests, so it also has what a test double
needs (after Vault's ``inmem``): a failure switch per operation, added latency, a hook that holds a
commit mid-way, and ``statistics()``.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kvstore.backend import (
    ABSENT,
    DEFAULT_PAGE_SIZE,
    Backend,
    Check,
    ConditionalBackend,
    Fence,
    HABackend,
    Lock,
    VersionedEntry,
    Write,
    check_page_args,
)
from kvstore.commits import coalesce, validate_commit
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    BackendClosed,
    FenceRejected,
    InvalidValue,
    LockRecordChanged,
    VersionConflict,
)
from kvstore.keys import is_hidden, lock_key, validate_key, validate_prefix
from kvstore.lease import DEFAULT_TIMINGS, LeaseLock, LockRecord, LockStore, LockTimings
from kvstore.limits import check_entry

__all__ = ["InmemBackend", "InmemStatistics"]

_OPERATIONS = ("put", "get", "delete", "list", "transaction", "commit", "lock")


@dataclass(frozen=True, slots=True)
class InmemStatistics:
    """How many calls each operation received, and how many keys are stored."""

    calls: dict[str, int] = field(default_factory=dict)
    keys: int = 0


class _InmemLockStore(LockStore):
    """Lock records in a dict; each method is atomic because it never awaits mid-update."""

    def __init__(self, backend: InmemBackend) -> None:
        self._backend = backend
        self._records: dict[str, LockRecord] = {}
        self._versions = itertools.count(1)

    def _version(self) -> str:
        return f"v{next(self._versions)}"

    @property
    def closed(self) -> bool:
        return self._backend._closed

    async def read(self, key: str) -> LockRecord | None:
        await self._backend._before("lock")
        return self._records.get(lock_key(key))

    async def acquire(
        self, key: str, *, identity: str, value: str, ttl: float, expected_version: str | None
    ) -> LockRecord:
        await self._backend._before("lock")
        k = lock_key(key)
        rec = self._records.get(k)
        if (rec.version if rec else None) != expected_version:
            raise LockRecordChanged(k, expected_version, rec)
        new = LockRecord(identity, value, self._version(), (rec.fence if rec else 0) + 1, ttl)
        self._records[k] = new
        return new

    async def renew(self, key: str, *, identity: str) -> LockRecord | None:
        await self._backend._before("lock")
        k = lock_key(key)
        rec = self._records.get(k)
        if rec is None or rec.identity != identity:
            return None
        new = LockRecord(identity, rec.value, self._version(), rec.fence, rec.ttl)
        self._records[k] = new
        return new

    async def release(self, key: str, *, identity: str) -> None:
        await self._backend._before("lock")
        k = lock_key(key)
        rec = self._records.get(k)
        if rec is not None and rec.identity == identity:
            self._records[k] = LockRecord(None, "", self._version(), rec.fence, rec.ttl)

    def holds(self, fence: Fence) -> bool:
        rec = self._records.get(lock_key(fence.lock))
        return rec is not None and rec.identity is not None and rec.fence == fence.token


class InmemBackend(Backend, HABackend, ConditionalBackend):
    """An in-memory backend: the reference semantics, plus fault injection for tests.

    All instances are independent. Locks from one instance contend with each other (two
    ``lock_with`` calls on the same backend behave like two nodes).
    """

    def __init__(self, *, ha_enabled: bool = True, lock_timings: LockTimings = DEFAULT_TIMINGS) -> None:
        self._data: dict[str, tuple[bytes, str]] = {}
        self._ha_enabled = ha_enabled
        self._lock_timings = lock_timings.validated()
        self._locks = _InmemLockStore(self)
        self._closed = False
        self._calls: Counter[str] = Counter()
        self._failures: dict[str, BaseException] = {}
        self.latency = 0.0
        """Seconds every operation sleeps before it acts (models a remote engine)."""
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Awaited by a transaction or commit after its checks and before it applies: a test can hold
        it there to race another writer."""

    # -- test-double controls -------------------------------------------------------------

    def fail(self, operation: str, error: BaseException | None) -> None:
        """Make every later call of ``operation`` raise ``error`` (``None`` clears it).

        ``operation`` is one of put, get, delete, list, transaction, commit, lock.
        """
        if operation not in _OPERATIONS:
            raise InvalidValue(f"unknown operation {operation!r}; one of {', '.join(_OPERATIONS)}")
        if error is None:
            self._failures.pop(operation, None)
        else:
            self._failures[operation] = error

    def statistics(self) -> InmemStatistics:
        """A snapshot of call counts and the number of stored keys."""
        return InmemStatistics(dict(self._calls), len(self._data))

    async def _before(self, operation: str) -> None:
        if self._closed:
            raise BackendClosed("the backend is closed")
        self._calls[operation] += 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        err = self._failures.get(operation)
        if err is not None:
            raise err

    # -- Backend ----------------------------------------------------------------------------

    @staticmethod
    def _new_version() -> str:
        return uuid.uuid4().hex

    async def put(self, entry: Entry) -> None:
        check_entry(entry)
        await self._before("put")
        self._data[entry.key] = (bytes(entry.value), self._new_version())

    async def get(self, key: str) -> Entry | None:
        validate_key(key)
        await self._before("get")
        item = self._data.get(key)
        return None if item is None else Entry(key, item[0])

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._before("delete")
        self._data.pop(key, None)

    async def list(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        await self._before("list")
        return sorted(self._children(prefix))

    def _children(self, prefix: str) -> set[str]:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        children: set[str] = set()
        for key in self._data:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            name, sep, _ = rest.partition("/")
            child = name + sep  # a folder keeps its "/": `_x/` is data, `_x` a lock record's name
            if is_hidden(child):
                continue
            children.add(child)
        return children

    async def list_page(self, prefix: str, *, after: str = "", limit: int = DEFAULT_PAGE_SIZE) -> builtins.list[str]:
        """One scan of the store, keeping only the ``limit`` smallest names after ``after``."""
        validate_prefix(prefix)
        after, limit = check_page_args(after, limit)
        await self._before("list")
        return heapq.nsmallest(limit, (n for n in self._children(prefix) if n > after))

    def iter_list(self, prefix: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[str]:
        """The folder's names, read a page at a time with :meth:`list_page` (each page one scan)."""
        validate_prefix(prefix)
        check_page_args("", page_size)
        return self._iter_pages(prefix, page_size)

    async def _iter_pages(self, prefix: str, page_size: int) -> AsyncIterator[str]:
        after = ""
        while True:
            page = await self.list_page(prefix, after=after, limit=page_size)
            for name in page:
                yield name
            if len(page) < page_size:
                return
            after = page[-1]

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        writes = coalesce(txns)
        await self._before("transaction")
        await self._apply(writes, (), None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

    # -- HABackend --------------------------------------------------------------------------

    @property
    def ha_enabled(self) -> bool:
        return self._ha_enabled

    def lock_with(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> Lock:
        return LeaseLock.from_overrides(
            self._locks, key, value, self._lock_timings,
            ttl=ttl, renew_interval=renew_interval, watch_interval=watch_interval, retry_interval=retry_interval,
        )

    # -- ConditionalBackend -----------------------------------------------------------------

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        validate_key(key)
        await self._before("get")
        return self._versioned(key)

    def _versioned(self, key: str) -> VersionedEntry | None:
        item = self._data.get(key)
        return None if item is None else VersionedEntry(Entry(key, item[0]), item[1])

    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        validate_commit(writes, checks, fenced=fence is not None)
        await self._before("commit")
        return await self._apply(writes, checks, fence)

    async def _apply(
        self, writes: Sequence[Write], checks: Sequence[Check], fence: Fence | None
    ) -> dict[str, str]:
        def verify() -> None:
            for key, expected in [(w.entry.key, w.if_version) for w in writes] + [
                (c.key, c.if_version) for c in checks
            ]:
                if expected is None:
                    continue
                current = self._versioned(key)
                if (current.version if current else ABSENT) != expected:
                    raise VersionConflict(key, expected, current)
            if fence is not None and not self._locks.holds(fence):
                raise FenceRejected(fence.lock, fence.token, None, message=(
                    f"fencing token {fence.token} of lock {fence.lock!r} is no longer current"))

        verify()
        if self.before_commit is not None:
            await self.before_commit()
            verify()  # the world may have moved while the hook held us
        versions: dict[str, str] = {}
        for w in writes:
            if w.operation is Operation.PUT:
                versions[w.entry.key] = version = self._new_version()
                self._data[w.entry.key] = (bytes(w.entry.value), version)
            else:
                self._data.pop(w.entry.key, None)
        return versions

