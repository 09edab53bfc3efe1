"""CachedBackend: a write-through LRU read cache in front of any backend (Vault's ``physical/cache.go``).

``get`` answers from an LRU of entries *and misses* (a key read as missing is cached as a negative
entry, so repeated lookups of absent keys cost nothing either); ``put``, ``delete`` and
``transaction`` write through to the wrapped backend and then update the cache; ``list`` always
passes through (folders are not cached). When the wrapped backend is an
:class:`~kvstore.backend.HABackend` or a :class:`~kvstore.backend.ConditionalBackend`, so is the
cache: ``ha_enabled``/``lock_with`` and ``get_versioned`` pass through untouched, ``commit`` passes
through and invalidates the keys it wrote.

Coherence, and the one safe way to use it
-----------------------------------------
The cache only sees the writes made *through it*. Another node (or another client of the same
table, or another ``CachedBackend`` over the same backend) writing a key leaves this cache holding
the old value, or a cached "missing", for as long as the entry stays in the LRU: there is no
invalidation channel between nodes and DynamoDB offers none to subscribe to. A cache shared by
several writers is therefore not coherent, and reads from it may be arbitrarily stale.

The safe use is Vault's: the cache is enabled only on the leader, while it is the single writer of
the data (every other node forwards to it or stays passive), and purged the moment leadership is
lost, because the next leader writes behind its back. :func:`cached_term` does exactly that for an
:class:`~kvstore.election.Election` term::

    async with election.campaign() as term:
        async with cached_term(store, term) as cached:    # enabled while this term leads
            await cached.get("jobs/state")                # served from memory after the first read
        # purged and disabled as soon as term.lost is set (or the block exits)

Ordering within one process
---------------------------
Every operation is safe to call from many tasks at once. A read that raced a write must never put
back a value older than that write once the write has completed: each key in use carries a
generation that every write bumps when it completes (or fails), and a read caches its result only
if the generation it saw before reading is still current (and no :meth:`~CachedBackend.purge`
happened meanwhile). Concurrent writes of one key leave it uncached (their order at the engine is
unknown), and a failed write drops the key (it may or may not have been applied).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from kvstore import metrics
from kvstore.backend import (
    DEFAULT_PAGE_SIZE,
    Backend,
    Check,
    ConditionalBackend,
    Fence,
    HABackend,
    Lock,
    VersionedEntry,
    Write,
)
from kvstore.commits import coalesce, validate_commit
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import BackendClosed, InvalidValue
from kvstore.keys import validate_key
from kvstore.limits import check_entry

if TYPE_CHECKING:
    from kvstore.election import Term

__all__ = ["DEFAULT_CACHE_SIZE", "CacheStatistics", "CachedBackend", "cached_term"]

#: Vault's default cache size (entries, negative entries included).
DEFAULT_CACHE_SIZE = 1024

_MISSING = object()
"""What the LRU returns for a key it does not hold (``None`` there is a cached miss)."""


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counters of a :class:`CachedBackend`, for tests and benchmarks.

    ``hits`` are gets answered from memory (negative entries included), ``misses`` gets that went
    to the wrapped backend (also while the cache is disabled); ``size`` is the number of cached
    entries now (``negative`` of them cached misses), at most ``capacity``.
    """

    hits: int
    misses: int
    size: int
    negative: int
    capacity: int
    enabled: bool


class _KeyState:
    """The ordering state of one key while some get or write of it is in flight."""

    __slots__ = ("generation", "overlapped", "readers", "writers")

    def __init__(self) -> None:
        self.generation = 0
        self.readers = 0
        self.writers = 0
        self.overlapped = False  # two writes of the key were in flight at once since it was made


class CachedBackend(Backend):
    """A write-through LRU of entries and misses in front of ``backend`` (see the module docstring).

    ``CachedBackend(backend)`` is an :class:`~kvstore.backend.HABackend` and a
    :class:`~kvstore.backend.ConditionalBackend` exactly when ``backend`` is, forwarding those
    methods. The cache does not own ``backend``: :meth:`aclose` closes the cache (later calls raise
    :class:`~kvstore.errors.BackendClosed`) and leaves the backend open for its owner to close.

    :raises InvalidValue: ``backend`` is not a Backend, or ``size`` is not a positive int.
    """

    def __new__(cls, backend: Backend, *, size: int = DEFAULT_CACHE_SIZE) -> CachedBackend:
        if cls is CachedBackend:  # pick the subclass with the wrapped backend's capabilities
            ha, cond = isinstance(backend, HABackend), isinstance(backend, ConditionalBackend)
            cls = {(False, False): CachedBackend, (True, False): _CachedHA,
                   (False, True): _CachedConditional, (True, True): _CachedHAConditional}[ha, cond]
        return super().__new__(cls)

    def __init__(self, backend: Backend, *, size: int = DEFAULT_CACHE_SIZE) -> None:
        if not isinstance(backend, Backend):
            raise InvalidValue(f"CachedBackend wraps a Backend, not {type(backend).__name__}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidValue(f"cache size must be a positive int, not {size!r}")
        self._backend = backend
        self._size = size
        self._lru: OrderedDict[str, Entry | None] = OrderedDict()
        self._keys: dict[str, _KeyState] = {}
        self._epoch = 0  # bumped by purge(): a read begun before a purge caches nothing
        self._enabled = True
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._guard: Callable[[], bool] | None = None  # cached_term: "may this cache still serve?"

    @property
    def backend(self) -> Backend:
        """The wrapped backend."""
        return self._backend

    # -- control ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether gets are served from (and fill) the cache; when not, every call passes through."""
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Turn caching on or off (Vault's ``SetEnabled``); turning it off also purges."""
        self._enabled = bool(enabled)
        if not self._enabled:
            self.purge()

    def purge(self) -> None:
        """Drop every cached entry and miss; reads in flight when this is called cache nothing."""
        self._lru.clear()
        self._epoch += 1

    def statistics(self) -> CacheStatistics:
        """A snapshot of the hit and miss counters and the cache's size."""
        negative = sum(1 for v in self._lru.values() if v is None)
        return CacheStatistics(self._hits, self._misses, len(self._lru), negative, self._size, self._enabled)

    # -- the LRU and per-key ordering ----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosed("the cache is closed")

    def _serving(self) -> bool:
        if not self._enabled:
            return False
        if self._guard is not None and not self._guard():
            self.set_enabled(False)  # e.g. the term's lease ran out before its lost event was set
            return False
        return True

    def _store(self, key: str, entry: Entry | None) -> None:
        self._lru[key] = entry
        self._lru.move_to_end(key)
        while len(self._lru) > self._size:
            self._lru.popitem(last=False)

    def _state(self, key: str) -> _KeyState:
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = _KeyState()
        return st

    def _release(self, key: str, st: _KeyState) -> None:
        if st.readers == 0 and st.writers == 0:
            self._keys.pop(key, None)

    @contextlib.contextmanager
    def _writing(self, keys: Sequence[str]) -> Iterator[dict[str, object]]:
        """Mark ``keys`` as being written for the duration of the block.

        Yields a dict the block fills with the cache's new content for each key on success (an
        Entry, ``None`` for a cached miss, or ``_MISSING`` to only invalidate). Whatever happens,
        every key's generation moves on before the block's caller sees the outcome, so a read that
        overlapped the write never caches what it read.
        """
        states = [(k, self._state(k)) for k in dict.fromkeys(keys)]
        for _, st in states:
            st.writers += 1
            st.overlapped = st.overlapped or st.writers > 1
        updates: dict[str, object] = {}
        try:
            yield updates
        except BaseException:
            for k, _ in states:
                self._lru.pop(k, None)  # applied or not: unknown, so forget it
            raise
        else:
            for k, st in states:
                new = updates.get(k, _MISSING)
                if new is _MISSING or st.overlapped or not self._serving():
                    # Another write of k overlapped this one: which the engine applied last is unknown.
                    self._lru.pop(k, None)
                else:
                    self._store(k, cast("Entry | None", new))
        finally:
            for k, st in states:
                st.generation += 1
                st.writers -= 1
                self._release(k, st)

    # -- Backend ------------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        validate_key(key)
        self._check_open()
        if self._serving():
            cached = self._lru.get(key, _MISSING)
            if cached is not _MISSING:
                self._lru.move_to_end(key)
                self._hits += 1
                metrics.record_cache(hit=True)
                return cast("Entry | None", cached)
        self._misses += 1
        metrics.record_cache(hit=False)
        st = self._state(key)
        st.readers += 1
        generation, epoch = st.generation, self._epoch
        try:
            entry = await self._backend.get(key)
            if generation == st.generation and epoch == self._epoch and st.writers == 0 and self._serving():
                self._store(key, entry)
            return entry
        finally:
            st.readers -= 1
            self._release(key, st)

    async def put(self, entry: Entry) -> None:
        check_entry(entry)
        self._check_open()
        stored = Entry(entry.key, bytes(entry.value))
        with self._writing([entry.key]) as updates:
            await self._backend.put(entry)
            updates[entry.key] = stored

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._check_open()
        with self._writing([key]) as updates:
            await self._backend.delete(key)
            updates[key] = None  # a negative entry: the key is known to be missing

    async def list(self, prefix: str) -> list[str]:
        self._check_open()
        return await self._backend.list(prefix)

    async def list_page(self, prefix: str, *, after: str = "", limit: int = DEFAULT_PAGE_SIZE) -> builtins.list[str]:
        self._check_open()
        return await self._backend.list_page(prefix, after=after, limit=limit)

    def iter_list(self, prefix: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[str]:
        self._check_open()
        return self._backend.iter_list(prefix, page_size=page_size)

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        writes = coalesce(txns)  # validates every step before the cache is touched
        self._check_open()
        with self._writing([w.entry.key for w in writes]) as updates:
            await self._backend.transaction(txns)
            for w in writes:
                updates[w.entry.key] = (
                    Entry(w.entry.key, bytes(w.entry.value)) if w.operation is Operation.PUT else None
                )

    async def aclose(self) -> None:
        """Close the cache (idempotent) and drop its content; the wrapped backend stays open."""
        if self._closed:
            return
        self._closed = True
        self.purge()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend!r}, size={self._size})"



class _HAForward(HABackend):
    """Forwards the HA capability of the wrapped backend untouched (locks are never cached)."""

    _backend: Backend

    @property
    def ha_enabled(self) -> bool:
        return cast(HABackend, self._backend).ha_enabled

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
        return cast(HABackend, self._backend).lock_with(
            key, value, ttl=ttl, renew_interval=renew_interval,
            watch_interval=watch_interval, retry_interval=retry_interval,
        )


class _ConditionalForward(ConditionalBackend):
    """Versioned reads pass through uncached; a commit invalidates every key it writes."""

    _backend: Backend

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        cast(CachedBackend, self)._check_open()
        return await cast(ConditionalBackend, self._backend).get_versioned(key)

    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        validate_commit(writes, checks, fenced=fence is not None)
        cache = cast(CachedBackend, self)
        cache._check_open()
        with cache._writing([w.entry.key for w in writes]):  # no update given: invalidate only
            return await cast(ConditionalBackend, self._backend).commit(writes, checks, fence=fence)


class _CachedHA(CachedBackend, _HAForward):
    """A CachedBackend over an HABackend."""


class _CachedConditional(CachedBackend, _ConditionalForward):
    """A CachedBackend over a ConditionalBackend."""


class _CachedHAConditional(CachedBackend, _HAForward, _ConditionalForward):
    """A CachedBackend over a backend that is both HA and conditional."""


@contextlib.asynccontextmanager
async def cached_term(backend: Backend, term: Term, *, size: int = DEFAULT_CACHE_SIZE) -> AsyncIterator[CachedBackend]:
    """A :class:`CachedBackend` over ``backend`` that serves only while ``term`` leads.

    The leader pattern (see the module docstring): while this term is the single writer the cache
    is coherent; the moment ``term.lost`` is set, or a hit finds ``term.is_leader`` false (a lease
    that ran out during a process pause, before the lost event's task ran), the cache is purged and
    disabled, so every later call passes through to ``backend``. Leaving the block closes the cache
    (``backend`` stays open).
    """
    cache = CachedBackend(backend, size=size)
    cache._guard = lambda: term.is_leader
    if not term.is_leader:
        cache.set_enabled(False)

    async def on_loss() -> None:
        await term.lost.wait()
        cache.set_enabled(False)

    watcher = asyncio.create_task(on_loss(), name=f"cached-term-{term.name}")
    try:
        yield cache
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await cache.aclose()
