"""Storage layers (kvstore.cache, kvstore.view): the conformance suite through each, and their own rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kvstore import Entry, Fence, Operation, TxnEntry, Write
from kvstore.backend import Backend, ConditionalBackend, HABackend
from kvstore.cache import CachedBackend, CacheStatistics, cached_term
from kvstore.dynamodb import DynamoDBBackend
from kvstore.election import Election
from kvstore.errors import BackendClosed, FenceRejected, InvalidKey, InvalidValue, Throttled, VersionConflict
from kvstore.fencing import fenced_put
from kvstore.inmem import InmemBackend
from kvstore.testing import (
    exercise_backend,
    exercise_backend_list_prefix,
    exercise_bad_input,
    exercise_conditional_backend,
    exercise_ha_backend,
    exercise_key_namespace,
    exercise_list_pages,
    exercise_same_name_key_and_folder,
    exercise_transactional_backend,
)
from kvstore.view import View

Layer = CachedBackend | View
Backends = InmemBackend | DynamoDBBackend


def _wrap(kind: str, b: Backend) -> Any:
    return CachedBackend(b, size=64) if kind == "cache" else View(b, "t/")


@pytest_asyncio.fixture(params=["cache", "view"])
async def layer(request: pytest.FixtureRequest, backend: Backends) -> AsyncIterator[Any]:
    """Each layer over each backend: CachedBackend(inmem|dynamodb), View(inmem|dynamodb, "t/")."""
    async with _wrap(request.param, backend) as wrapped:
        yield wrapped
    if isinstance(wrapped, View):
        # The whole wrapped store is empty again: nothing leaked outside the view's folder.
        assert await backend.list("") == []


# -- the conformance suite through every layer ---------------------------------------------------


async def test_backend(layer: Any) -> None:
    await exercise_backend(layer)


async def test_list_prefix(layer: Any) -> None:
    await exercise_backend_list_prefix(layer)


async def test_same_name_key_and_folder(layer: Any) -> None:
    await exercise_same_name_key_and_folder(layer)


async def test_transactions(layer: Any) -> None:
    await exercise_transactional_backend(layer)


async def test_bad_input(layer: Any) -> None:
    await exercise_bad_input(layer)


async def test_key_namespace(layer: Any) -> None:
    await exercise_key_namespace(layer)


async def test_conditional_backend(layer: Any) -> None:
    await exercise_conditional_backend(layer)


async def test_ha_one_backend_two_locks(layer: Any) -> None:
    await exercise_ha_backend(layer, layer)


@pytest.mark.parametrize("kind", ["cache", "view"])
async def test_ha_two_dynamodb_clients(kind: str, dynamo: DynamoDBBackend, dynamodb_conf: dict[str, str]) -> None:
    async with await DynamoDBBackend.create(dynamodb_conf) as other:
        await exercise_ha_backend(_wrap(kind, dynamo), _wrap(kind, other))


def test_capabilities_follow_the_wrapped_backend() -> None:
    class Plain(Backend):
        async def put(self, entry: Entry) -> None: ...
        async def get(self, key: str) -> Entry | None: ...
        async def delete(self, key: str) -> None: ...
        async def list(self, prefix: str) -> list[str]: return []
        async def transaction(self, txns: Any) -> None: ...
        async def aclose(self) -> None: ...

    for layer in (CachedBackend(Plain()), View(Plain(), "t/")):
        assert not isinstance(layer, HABackend | ConditionalBackend)
    for layer in (CachedBackend(InmemBackend()), View(InmemBackend(), "t/")):
        assert isinstance(layer, HABackend) and isinstance(layer, ConditionalBackend)
        assert isinstance(layer, CachedBackend | View)


# -- CachedBackend --------------------------------------------------------------------------------


async def test_cache_hits_and_misses(backend: Backends) -> None:
    async with CachedBackend(backend, size=2) as cache:
        assert cache.statistics() == CacheStatistics(0, 0, 0, 0, 2, True)
        await cache.put(Entry("a", b"1"))                  # write-through fills the cache
        assert await cache.get("a") == Entry("a", b"1")
        assert (cache.statistics().hits, cache.statistics().misses) == (1, 0)
        await backend.put(Entry("b", b"2"))                # behind the cache's back
        assert await cache.get("b") == Entry("b", b"2")    # a miss, then cached
        assert await cache.get("b") == Entry("b", b"2")
        stats = cache.statistics()
        assert (stats.hits, stats.misses, stats.size) == (2, 1, 2)
        await cache.get("a")                               # a is now the most recent
        await backend.put(Entry("c", b"3"))
        await cache.get("c")                               # evicts b, the least recently used
        assert cache.statistics().size == 2
        before = cache.statistics().misses
        await cache.get("b")
        assert cache.statistics().misses == before + 1, "an evicted entry is read again"
        cache.purge()
        assert cache.statistics().size == 0
        for k in ("a", "b", "c"):
            await cache.delete(k)


async def test_cache_negative_entries(inmem: InmemBackend) -> None:
    async with CachedBackend(inmem) as cache:
        assert await cache.get("nope") is None
        assert await cache.get("nope") is None
        assert inmem.statistics().calls["get"] == 1, "a cached miss does not reach the backend"
        assert cache.statistics().negative == 1
        await cache.put(Entry("nope", b"now"))
        assert await cache.get("nope") == Entry("nope", b"now"), "a put replaces the negative entry"
        await cache.delete("nope")
        assert await cache.get("nope") is None
        assert inmem.statistics().calls["get"] == 1, "a delete caches the miss"
        # Another writer is invisible to the cache (why only a single writer may use one).
        await inmem.put(Entry("nope", b"behind"))
        assert await cache.get("nope") is None
        cache.purge()
        assert await cache.get("nope") == Entry("nope", b"behind")


async def test_cache_transaction_and_commit_update_touched_keys(inmem: InmemBackend) -> None:
    async with CachedBackend(inmem) as cache:
        await cache.put(Entry("x", b"1"))
        await cache.put(Entry("y", b"1"))
        await cache.transaction([TxnEntry(Operation.PUT, Entry("x", b"2")), TxnEntry(Operation.DELETE, Entry("y"))])
        gets = inmem.statistics().calls.get("get", 0)
        assert await cache.get("x") == Entry("x", b"2")
        assert await cache.get("y") is None
        assert inmem.statistics().calls.get("get", 0) == gets, "the transaction updated the cache"
        await cache.commit([Write(Operation.PUT, Entry("x", b"3"))])
        assert await cache.get("x") == Entry("x", b"3"), "a commit invalidates what it wrote"
        assert inmem.statistics().calls["get"] == gets + 1
        ver = await cache.get_versioned("x")
        assert ver is not None and ver.entry == Entry("x", b"3")
        # A refused commit leaves the cache consistent with the store.
        with pytest.raises(VersionConflict):
            await cache.commit([Write(Operation.PUT, Entry("x", b"4"), if_version="stale")])
        assert await cache.get("x") == Entry("x", b"3")


async def test_cache_failed_write_drops_the_key(inmem: InmemBackend) -> None:
    async with CachedBackend(inmem) as cache:
        await cache.put(Entry("k", b"1"))
        inmem.fail("put", Throttled("slow down"))
        with pytest.raises(Throttled):
            await cache.put(Entry("k", b"2"))
        inmem.fail("put", None)
        assert cache.statistics().size == 0, "a write that failed may or may not have applied"
        assert await cache.get("k") == Entry("k", b"1")


class _HeldReads(InmemBackend):
    """An InmemBackend whose gets read the value, then wait for ``release`` before returning it."""

    def __init__(self) -> None:
        super().__init__()
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, key: str) -> Entry | None:
        entry = await super().get(key)
        self.read_done.set()
        await self.release.wait()
        return entry


@pytest.mark.parametrize("writer", ["put", "delete", "transaction", "commit"])
async def test_cache_never_recaches_a_value_older_than_a_completed_write(writer: str) -> None:
    async with _HeldReads() as store:
        store.release.set()
        cache = CachedBackend(store)
        await cache.put(Entry("k", b"old"))
        cache.purge()
        store.release.clear()
        reader = asyncio.create_task(cache.get("k"))
        await store.read_done.wait()                   # the get has read "old" and is held
        new = Entry("k", b"new")
        if writer == "put":
            await cache.put(new)
        elif writer == "delete":
            await cache.delete("k")
        elif writer == "transaction":
            await cache.transaction([TxnEntry(Operation.PUT, new)])
        else:
            await cache.commit([Write(Operation.PUT, new)])
        store.release.set()
        assert await reader == Entry("k", b"old"), "the get overlapped the write: either value is right"
        expected = None if writer == "delete" else new
        assert await cache.get("k") == expected, "the completed write wins over the slower read"


async def test_cache_concurrent_get_after_purge_caches_nothing() -> None:
    async with _HeldReads() as store:
        store.release.set()
        await store.put(Entry("k", b"old"))
        cache = CachedBackend(store)
        store.release.clear()
        reader = asyncio.create_task(cache.get("k"))
        await store.read_done.wait()
        cache.purge()                                   # e.g. leadership was lost meanwhile
        store.release.set()
        await reader
        assert cache.statistics().size == 0


async def test_cache_concurrent_writes_of_one_key_leave_it_uncached(inmem: InmemBackend) -> None:
    cache = CachedBackend(inmem)
    inmem.latency = 0.01
    await asyncio.gather(cache.put(Entry("k", b"1")), cache.put(Entry("k", b"2")))
    assert cache.statistics().size == 0, "which put the engine applied last is unknown"
    assert await cache.get("k") == await inmem.get("k")


async def test_cache_closed_and_disabled(inmem: InmemBackend) -> None:
    cache = CachedBackend(inmem)
    await cache.put(Entry("k", b"v"))
    cache.set_enabled(False)
    assert cache.statistics().size == 0 and not cache.enabled
    assert await cache.get("k") == Entry("k", b"v")
    assert cache.statistics().size == 0, "a disabled cache passes everything through"
    cache.set_enabled(True)
    await cache.aclose()
    await cache.aclose()
    with pytest.raises(BackendClosed):
        await cache.get("k")
    assert await inmem.get("k") == Entry("k", b"v"), "closing the cache leaves the backend open"
    with pytest.raises(InvalidValue):
        CachedBackend(inmem, size=0)


async def test_cached_term_purges_on_loss(backend: Backends) -> None:
    timing = {"ttl": 1.0, "renew_interval": 0.25, "watch_interval": 0.25, "retry_interval": 0.05}
    async with Election(backend, "svc/leader", "n1", **timing).campaign() as term:
        async with cached_term(backend, term) as cache:
            await cache.put(Entry("svc/state", b"1"))
            assert await cache.get("svc/state") == Entry("svc/state", b"1")
            assert cache.statistics().hits == 1
            await backend.put(Entry("svc/state", b"2"))     # another writer, behind the cache's back
            assert await cache.get("svc/state") == Entry("svc/state", b"1"), "the cache cannot see it"
            if isinstance(backend, InmemBackend):
                backend.fail("lock", Throttled("renewals fail"))  # the lease runs out: a real loss
            else:
                term.lost.set()                               # the lock's "leadership lost" signal
            await asyncio.wait_for(term.lost.wait(), 5)
            await asyncio.sleep(0)                            # let the watcher run
            assert not cache.enabled and cache.statistics().size == 0, "a lost term purges the cache"
            assert await cache.get("svc/state") == Entry("svc/state", b"2"), "after the loss reads pass through"
            assert cache.statistics().size == 0, "and nothing is cached any more"
            if isinstance(backend, InmemBackend):
                backend.fail("lock", None)
        with pytest.raises(BackendClosed):
            await cache.get("svc/state")
    await backend.delete("svc/state")


class _Term:
    """A stand-in for a Term whose lease ran out before its lost event was set (a process pause)."""

    name = "svc/leader"

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.is_leader = True


async def test_cached_term_checks_leadership_on_every_hit(inmem: InmemBackend) -> None:
    term = _Term()
    async with cached_term(inmem, term) as cache:  # type: ignore[arg-type]
        await cache.put(Entry("k", b"1"))
        assert await cache.get("k") == Entry("k", b"1")
        await inmem.put(Entry("k", b"2"))
        term.is_leader = False                        # lost, though nobody has said so yet
        assert await cache.get("k") == Entry("k", b"2"), "a hit is refused once the term no longer leads"
        assert not cache.enabled


async def test_cached_term_fenced_writes_through_cache(inmem: InmemBackend) -> None:
    async with Election(inmem, "jobs/leader", "n1").campaign() as term, cached_term(inmem, term) as cache:
        await fenced_put(cache, Entry("jobs/state", b"x"), fence=term.fence)
        assert await cache.get("jobs/state") == Entry("jobs/state", b"x")


# -- View -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "t", "/", "/t/", "t//", " /", " /x/"])
def test_view_prefix_is_a_folder(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        View(InmemBackend(), prefix)


async def test_view_isolation_and_keys(backend: Backends) -> None:
    await backend.put(Entry("outside", b"o"))
    await backend.put(Entry("t2/k", b"sibling"))      # shares the prefix's letters, not its folder
    await backend.put(Entry("t/k", b"in"))
    view = View(backend, "t/")
    assert await view.list("") == ["k"]
    assert await view.get("k") == Entry("k", b"in"), "Entry.key carries no prefix"
    assert await view.get("outside") is None, "a key outside the prefix is invisible"
    assert await view.get("t2/k") is None
    await view.put(Entry("a/b", b"v"))
    assert await backend.get("t/a/b") == Entry("t/a/b", b"v")
    ver = await view.get_versioned("a/b")
    assert ver is not None and ver.entry.key == "a/b"
    versions = await view.commit([Write(Operation.PUT, Entry("a/c", b"w"))])
    assert list(versions) == ["a/c"]
    for escaping in ("", "/outside", "../outside", " /k", "a//b", "a/"):
        if escaping == "../outside":
            # ".." is an ordinary segment name here, never a parent: it stays inside the view.
            await view.put(Entry(escaping, b"x"))
            assert await backend.get("t/../outside") == Entry("t/../outside", b"x")
            await view.delete(escaping)
            continue
        with pytest.raises(InvalidKey):
            await view.put(Entry(escaping, b"x"))
        with pytest.raises(InvalidKey):
            await view.get(escaping)
        with pytest.raises(InvalidKey):
            await view.delete(escaping)
        with pytest.raises(InvalidKey):
            await view.transaction([TxnEntry(Operation.PUT, Entry(escaping, b"x"))])
    with pytest.raises(InvalidKey):
        await view.list("/")
    assert await backend.get("outside") == Entry("outside", b"o"), "nothing escaped"
    assert await backend.list("") == ["outside", "t/", "t2/"]
    await view.transaction([TxnEntry(Operation.DELETE, Entry("a/b")), TxnEntry(Operation.DELETE, Entry("a/c"))])
    await view.delete("k")
    for k in ("outside", "t2/k"):
        await backend.delete(k)
    assert await backend.list("") == []


async def test_view_errors_name_the_views_keys(inmem: InmemBackend) -> None:
    view = View(inmem, "t/")
    await view.put(Entry("k", b"1"))
    with pytest.raises(VersionConflict) as conflict:
        await view.commit([Write(Operation.PUT, Entry("k", b"2"), if_version="stale")])
    assert conflict.value.key == "k"
    assert conflict.value.current is not None and conflict.value.current.entry == Entry("k", b"1")
    with pytest.raises(FenceRejected) as fenced:
        await view.commit([Write(Operation.PUT, Entry("k", b"2"))], fence=Fence("leader", 7))
    assert fenced.value.key == "leader"
    with pytest.raises(InvalidKey) as long:
        await view.put(Entry("/".join(["p" * 1000] * 2) + "/" + "q" * 47 + "/k", b"v"))
    assert isinstance(long.value.key, str) and not long.value.key.startswith("t/")


async def test_view_locks_and_fences_live_under_the_prefix(inmem: InmemBackend) -> None:
    view = View(inmem, "tenant/")
    async with Election(view, "leader", "n1").campaign() as term:
        assert await Election(inmem, "tenant/leader", "x").leader() == "n1", "the lock is named under the prefix"
        assert await Election(inmem, "leader", "x").leader() is None
        await fenced_put(view, Entry("state", b"s"), fence=term.fence)
        assert await inmem.get("tenant/state") == Entry("tenant/state", b"s")
        with pytest.raises(FenceRejected):
            await inmem.commit([Write(Operation.PUT, Entry("state", b"s"))], fence=term.fence)
    await view.delete("state")


async def test_view_of_a_view_and_cached_view(inmem: InmemBackend) -> None:
    inner = View(View(inmem, "a/"), "b/")
    cached = CachedBackend(inner)
    await cached.put(Entry("k", b"v"))
    assert await inmem.get("a/b/k") == Entry("a/b/k", b"v")
    assert await cached.get("k") == Entry("k", b"v")
    assert cached.statistics().hits == 1
    await cached.delete("k")
    assert await inmem.list("") == []
    await inner.aclose()
    with pytest.raises(BackendClosed):
        await inner.get("k")


async def test_list_pages(layer: Any) -> None:
    await exercise_list_pages(layer)
