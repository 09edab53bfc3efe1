"""The abstract interfaces every backend implements: Vault's ``physical`` contract, in asyncio.

- :class:`Backend`: four async methods (put, get, delete, list) plus ``transaction``. Keys are
  hierarchical (``/``-separated); storage is not trusted to keep anything but bytes; every method
  is safe to call from many tasks at once.
- :class:`HABackend`: the capability to hand out :class:`Lock` objects for leader election.
- :class:`ConditionalBackend`: versioned reads and atomic, conditional commits. Versioned writes,
  fenced writes and multi-key ``atomic()`` blocks are all built on this one primitive.

Semantics every implementation keeps (``kvstore.testing`` checks them):

- ``get`` of a missing key returns ``None``; ``delete`` of a missing key succeeds.
- ``list(prefix)`` returns the direct children of the folder, sorted; sub-folders end in ``/``.
  A key ``x`` and a folder ``x/`` are two distinct children. Empty folders vanish.
- Names whose last segment starts with ``_`` (lock records) never appear in ``list``.
- ``list_page`` and ``iter_list`` give the same names as ``list``, in the same order, a page at a
  time (OpenBao's ``ListPage``): a folder of any size is read in O(page) memory.
- Bad input raises a :class:`~kvstore.errors.UsageError` before anything is written.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, overload

from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import InvalidValue
from kvstore.keys import validate_prefix

#: Names per page of :meth:`Backend.iter_list` (and the default ``limit`` of ``list_page``).
DEFAULT_PAGE_SIZE = 1000


def check_page_args(after: object, limit: object) -> tuple[str, int]:
    """``(after, limit)`` if ``after`` is a str and ``limit`` a positive int, else :class:`InvalidValue`."""
    if not isinstance(after, str):
        raise InvalidValue(f"after must be a str, not {type(after).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidValue(f"limit must be a positive int, not {limit!r}")
    return after, limit

__all__ = [
    "ABSENT",
    "DEFAULT_PAGE_SIZE",
    "Absent",
    "Backend",
    "Check",
    "ConditionalBackend",
    "Fence",
    "HABackend",
    "Lock",
    "VersionedEntry",
    "Write",
]


class Backend(ABC):
    """A hierarchical key-value store; an async context manager that closes itself on exit."""

    @abstractmethod
    async def put(self, entry: Entry) -> None:
        """Store ``entry``, replacing any value the key had.

        :raises InvalidKey: the key is malformed.
        :raises InvalidValue: the value is not bytes.
        :raises ValueTooLarge: the stored item would exceed the engine's limit.
        """

    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The entry stored under ``key``, or ``None`` when there is none (a consistent read)."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key`` if present (deleting a missing key succeeds) and prune empty folders."""

    @abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """The direct children of folder ``prefix`` (``""`` is the root), sorted.

        Sub-folders end in ``/``; lock records are hidden. ``prefix`` may omit its trailing ``/``.
        """

    async def list_page(self, prefix: str, *, after: str = "", limit: int = DEFAULT_PAGE_SIZE) -> builtins.list[str]:
        """At most ``limit`` children of ``prefix`` that sort strictly after ``after`` (OpenBao's ``ListPage``).

        The names and their order are exactly ``list``'s (folders and keys interleaved, a key ``x``
        before the folder ``x/``); ``after`` need not be a child (``""``: from the start). Feed the
        last name of a page back as ``after`` for the next page; an empty or short page ends it.

        This default reads the whole folder with ``list``; backends that can seek override it.

        :raises InvalidKey: ``prefix`` is malformed.
        :raises InvalidValue: ``after`` is not a str, or ``limit`` is not a positive int.
        """
        after, limit = check_page_args(after, limit)
        names = await self.list(prefix)
        start = bisect.bisect_right(names, after) if after else 0
        return names[start:start + limit]

    def iter_list(self, prefix: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[str]:
        """The names ``list(prefix)`` returns, in the same order, read a page at a time.

        ``async for name in b.iter_list("a/"): ...``. Backends that can seek (DynamoDB) hold one
        page of ``page_size`` names in memory at a time. Not a snapshot: a child added or removed
        while the iteration runs may or may not be seen; a child present throughout is seen exactly
        once, and names always come in ascending order. ``prefix`` and ``page_size`` are checked
        at the call, before any I/O.

        This default reads the whole folder with ``list`` (on the first ``__anext__``).

        :raises InvalidKey: ``prefix`` is malformed.
        :raises InvalidValue: ``page_size`` is not a positive int.
        """
        validate_prefix(prefix)
        check_page_args("", page_size)
        return self._iter_list_all(prefix)

    async def _iter_list_all(self, prefix: str) -> AsyncIterator[str]:
        for name in await self.list(prefix):
            yield name

    @abstractmethod
    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        """Apply every step atomically: all of them or none.

        Steps on the same key apply in order (the last one wins).

        :raises TransactionTooLarge: over the engine's item-count or size limit; nothing written.
        :raises TransactionConflict: a concurrent transaction touched the same items; retry.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and background tasks. Idempotent; later calls raise BackendClosed."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Lock(ABC):
    """A distributed lock for leader election, made by :meth:`HABackend.lock_with`.

    ``lock()`` blocks until this node holds the lock and returns an event that is set the moment
    this node must stop acting as leader (it lost the lock, or can no longer prove it holds it).
    :attr:`held` says the same without waiting for any task to run. Every grant carries a fencing
    token that only ever grows, so a resource can refuse writes from a leader that was replaced
    while paused (see :class:`Fence`).
    """

    @overload
    async def lock(self, stop: None = None) -> asyncio.Event: ...

    @overload
    async def lock(self, stop: asyncio.Event) -> asyncio.Event | None: ...

    @abstractmethod
    async def lock(self, stop: asyncio.Event | None = None) -> asyncio.Event | None:
        """Block until held; return the "leadership lost" event, or ``None`` if ``stop`` was set first.

        Without ``stop`` the result is always an event (typed so: no ``None`` check needed).
        """

    @abstractmethod
    async def unlock(self) -> None:
        """Release at once (a contender may take over immediately) and stop background tasks.

        A :meth:`lock` call of this object still campaigning is ended first, so no grant is left
        renewing behind it. The release is best effort and bounded in time.
        """

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this object holds a grant it has not lost, judged now (no I/O, no waiting).

        Stricter than the lost event not being set: right after a pause of the process the lease
        may have run out before the task that sets the event got to run. False once the backend
        was closed.
        """

    @abstractmethod
    async def value(self) -> tuple[bool, str]:
        """``(held, value)``: whether some node holds the lock now, and the holder's value."""

    @property
    @abstractmethod
    def fencing_token(self) -> int:
        """The fencing token of this node's latest grant.

        :raises LockNotHeld: ``lock()`` never returned a grant.
        """


class HABackend(ABC):
    """A backend that can hand out locks for leader election."""

    @property
    @abstractmethod
    def ha_enabled(self) -> bool:
        """Whether high availability was asked for in the configuration."""

    @abstractmethod
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
        """A lock named ``key`` that advertises ``value`` while held. No I/O happens here.

        Times are seconds; ``None`` takes the backend's configured default. A ``renew_interval``
        at or beyond ``ttl`` is accepted with a warning: it models a stalled holder in tests.
        """


class Absent(enum.Enum):
    """The type of :data:`ABSENT`."""

    ABSENT = "absent"


#: As an expected version: "the key must not exist" (create-only).
ABSENT: Final = Absent.ABSENT


@dataclass(frozen=True, slots=True)
class VersionedEntry:
    """An entry with its opaque version token; every write of a key gives it a new version."""

    entry: Entry
    version: str


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a :meth:`ConditionalBackend.commit`.

    ``if_version`` ``None`` writes unconditionally; a version token requires the key to hold that
    version; :data:`ABSENT` requires the key to be missing.
    """

    operation: Operation
    entry: Entry
    if_version: str | Absent | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """A key that a commit only reads: it must still hold ``if_version`` (or be ABSENT)."""

    key: str
    if_version: str | Absent


@dataclass(frozen=True, slots=True)
class Fence:
    """A commit condition: lock ``lock`` is still held under fencing token ``token``."""

    lock: str
    token: int


class ConditionalBackend(ABC):
    """Versioned reads and atomic conditional commits (optimistic concurrency and fencing)."""

    @abstractmethod
    async def get_versioned(self, key: str) -> VersionedEntry | None:
        """The entry and its version (a consistent read), or ``None`` when missing."""

    @abstractmethod
    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        """Apply ``writes`` atomically if every condition holds; return the new version of each put key.

        At most one write per key. Folder pointers of put keys are written in the same commit;
        empty folders of deleted keys are pruned afterwards.

        :raises VersionConflict: a write's or check's version did not match; ``current`` is the
            key's :class:`VersionedEntry` (or ``None`` when absent). Nothing was written.
        :raises FenceRejected: ``fence`` is no longer the lock's current grant. Nothing was written.
        :raises TransactionTooLarge: over the engine's limits. Nothing was written.
        """
