"""Versioned writes, ``update()`` and ``atomic()`` (kvstore.recipes.versioned) on both backends.

The races run real concurrent coroutines; on DynamoDB Local they are real concurrent requests. The
in-memory backend answers without suspending, so the race tests give it a little latency to make
the coroutines interleave the way remote calls do.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kvstore import (
    ABSENT,
    ConfigError,
    Entry,
    RequestRejected,
    RetriesExhausted,
    TransactionConflict,
    VersionConflict,
    VersionedEntry,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.recipes import (
    RetryPolicy,
    Txn,
    atomic,
    create,
    delete_versioned,
    get_versioned,
    put_versioned,
    update,
)

Store = InmemBackend | DynamoDBBackend

#: No sleeping between retries where a test wants conflicts, not patience.
EAGER = RetryPolicy(attempts=5, base_delay=0.0, max_delay=0.0)


def interleave(store: Store) -> None:
    """Make the in-memory backend yield on every call, as a remote engine does."""
    if isinstance(store, InmemBackend):
        store.latency = 0.002


def reads(store: Store) -> int:
    """How many single-key reads the store has served so far."""
    if isinstance(store, InmemBackend):
        return store.statistics().calls.get("get", 0)
    return store.table.requests["get_item"]


# -- single-key CAS -------------------------------------------------------------------------------


async def test_every_write_gives_a_new_version(backend: Store) -> None:
    v1 = await create(backend, Entry("a/k", b"1"))
    got = await get_versioned(backend, "a/k")
    assert got == VersionedEntry(Entry("a/k", b"1"), v1)
    v2 = await put_versioned(backend, Entry("a/k", b"2"), if_version=v1)
    assert v2 != v1
    assert (await get_versioned(backend, "a/k")) == VersionedEntry(Entry("a/k", b"2"), v2)
    # An unconditional versioned put also returns the version it wrote.
    v3 = await put_versioned(backend, Entry("a/k", b"3"), if_version=None)
    assert (await get_versioned(backend, "a/k")).version == v3  # type: ignore[union-attr]
    assert await get_versioned(backend, "a/missing") is None


async def test_plain_put_invalidates_cas_holders(backend: Store) -> None:
    # A holder of a version token must not overwrite a value written by a plain put after its read.
    v1 = await create(backend, Entry("k", b"mine"))
    await backend.put(Entry("k", b"theirs"))
    with pytest.raises(VersionConflict) as info:
        await put_versioned(backend, Entry("k", b"stale"), if_version=v1)
    err = info.value
    assert err.key == "k" and err.expected == v1
    assert isinstance(err.current, VersionedEntry)
    assert err.current.entry == Entry("k", b"theirs") and err.current.version != v1
    assert await backend.get("k") == Entry("k", b"theirs")  # nothing was written
    # The same holds for a plain delete followed by a CAS on the old token.
    await backend.delete("k")
    with pytest.raises(VersionConflict) as info:
        await put_versioned(backend, Entry("k", b"stale"), if_version=v1)
    assert info.value.current is None
    assert await backend.get("k") is None


async def test_create_writes_folder_pointers_and_refuses_existing(backend: Store) -> None:
    version = await create(backend, Entry("a/b/c", b"1"))
    # The key is reachable by list like any put key.
    assert await backend.list("") == ["a/"]
    assert await backend.list("a/") == ["b/"]
    assert await backend.list("a/b/") == ["c"]
    with pytest.raises(VersionConflict) as info:
        await create(backend, Entry("a/b/c", b"2"))
    assert info.value.expected is ABSENT
    assert info.value.current == VersionedEntry(Entry("a/b/c", b"1"), version)
    assert await backend.get("a/b/c") == Entry("a/b/c", b"1")


async def test_refused_update_of_deleted_key_leaves_no_folder(backend: Store) -> None:
    version = await create(backend, Entry("x/y/z", b"1"))
    await backend.delete("x/y/z")
    with pytest.raises(VersionConflict):
        await put_versioned(backend, Entry("x/y/z", b"2"), if_version=version)
    # A failed write must not resurrect the folders the delete removed.
    assert await backend.list("") == []


async def test_stale_delete_fails_and_current_delete_prunes(backend: Store) -> None:
    v1 = await create(backend, Entry("f/k", b"1"))
    v2 = await put_versioned(backend, Entry("f/k", b"2"), if_version=v1)
    with pytest.raises(VersionConflict) as info:
        await delete_versioned(backend, "f/k", if_version=v1)
    assert info.value.current == VersionedEntry(Entry("f/k", b"2"), v2)
    assert await backend.get("f/k") == Entry("f/k", b"2")
    await delete_versioned(backend, "f/k", if_version=v2)
    assert await backend.get("f/k") is None
    assert await backend.list("") == []  # the emptied folder vanished
    # Deleting an absent key "only if absent" succeeds; with a token it fails.
    await delete_versioned(backend, "f/k", if_version=ABSENT)
    with pytest.raises(VersionConflict):
        await delete_versioned(backend, "f/k", if_version=v2)


@pytest.mark.parametrize("n", [8])
async def test_cas_race_exactly_one_wins(backend: Store, n: int) -> None:
    interleave(backend)
    v0 = await create(backend, Entry("race/k", b"0"))
    results = await asyncio.gather(
        *(put_versioned(backend, Entry("race/k", f"w{i}".encode()), if_version=v0) for i in range(n)),
        return_exceptions=True,
    )
    winners = [(i, r) for i, r in enumerate(results) if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(e, VersionConflict) for e in losers), losers
    i, version = winners[0]
    stored = VersionedEntry(Entry("race/k", f"w{i}".encode()), version)
    assert await get_versioned(backend, "race/k") == stored
    for e in losers:
        assert isinstance(e, VersionConflict)
        # Each loser learns what won, from the engine's reply (or the fallback read).
        assert e.key == "race/k" and e.expected == v0 and e.current == stored


async def test_create_race_exactly_one_wins(backend: Store) -> None:
    interleave(backend)
    results = await asyncio.gather(
        *(create(backend, Entry("new/k", f"c{i}".encode())) for i in range(8)), return_exceptions=True
    )
    winners = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert len(winners) == 1, results
    won = await get_versioned(backend, "new/k")
    assert won is not None and won.entry.value == f"c{winners[0]}".encode()
    for r in results:
        if isinstance(r, BaseException):
            assert isinstance(r, VersionConflict) and r.expected is ABSENT and r.current == won


# -- update() ------------------------------------------------------------------------------------


async def test_update_counter_converges_under_contention(backend: Store) -> None:
    interleave(backend)
    calls = 0

    def incr(value: bytes | None) -> bytes:
        nonlocal calls
        calls += 1
        return str(int(value or b"0") + 1).encode()

    results = await asyncio.gather(*(update(backend, "ctr/n", incr) for _ in range(20)))
    assert (await backend.get("ctr/n")) == Entry("ctr/n", b"20")
    assert sorted(int(r.entry.value) for r in results if r is not None) == list(range(1, 21))
    assert calls >= 20
    if isinstance(backend, InmemBackend):
        assert calls > 20  # they did collide: some attempts were retried


async def test_update_retries_from_conflict_without_extra_read(backend: Store) -> None:
    await backend.put(Entry("k", b"1"))
    seen: list[bytes | None] = []

    async def fn(value: bytes | None) -> bytes:
        seen.append(value)
        if len(seen) == 1:
            await backend.put(Entry("k", b"10"))  # someone writes between our read and our write
        return (value or b"") + b"+"

    before = reads(backend)
    result = await update(backend, "k", fn, retry=EAGER)
    assert seen == [b"1", b"10"]  # the retry started from the value the conflict reported
    assert result is not None and result.entry.value == b"10+"
    assert reads(backend) - before == 1  # the initial read only


async def test_update_creates_and_deletes(backend: Store) -> None:
    created = await update(backend, "u/k", lambda v: b"new" if v is None else v + b"!")
    assert created is not None and created.entry == Entry("u/k", b"new")
    assert (await update(backend, "u/k", lambda v: None)) is None
    assert await backend.get("u/k") is None
    assert await backend.list("") == []
    assert (await update(backend, "u/k", lambda v: None)) is None  # absent stays absent, no write


async def test_update_gives_up_with_retries_exhausted(backend: Store) -> None:
    async def always_beaten(value: bytes | None) -> bytes:
        await backend.put(Entry("hot", b"other"))
        return b"mine"

    with pytest.raises(RetriesExhausted) as info:
        await update(backend, "hot", always_beaten, retry=RetryPolicy(attempts=3, base_delay=0.0))
    assert info.value.attempts == 3
    assert isinstance(info.value.last, VersionConflict)
    assert await backend.get("hot") == Entry("hot", b"other")


def test_retry_policy_validates_and_caps() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
    assert all(0.0 <= policy.delay(n) <= 0.05 for n in range(100))
    assert RetryPolicy(base_delay=0.0).delay(5) == 0.0
    bad: list[dict[str, Any]] = [{"attempts": 0}, {"attempts": 1.5}, {"base_delay": -1}, {"max_delay": float("nan")}]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            RetryPolicy(**kwargs)


# -- atomic() ------------------------------------------------------------------------------------


async def test_atomic_transfers_keep_the_sum(backend: Store) -> None:
    interleave(backend)
    await backend.put(Entry("acct/a", b"100"))
    await backend.put(Entry("acct/b", b"100"))

    def transfer(src: str, dst: str, amount: int) -> Any:
        async def block(tx: Txn) -> None:
            a = int(await tx.get(src) or b"0")
            b = int(await tx.get(dst) or b"0")
            tx.put(src, str(a - amount).encode())
            tx.put(dst, str(b + amount).encode())

        return block

    policy = RetryPolicy(attempts=30, base_delay=0.002, max_delay=0.05)
    await asyncio.gather(
        *(atomic(backend, transfer("acct/a", "acct/b", 1) if i % 2 else transfer("acct/b", "acct/a", 3),
                 retry=policy) for i in range(10))
    )
    a = int((await backend.get("acct/a")).value)  # type: ignore[union-attr]
    b = int((await backend.get("acct/b")).value)  # type: ignore[union-attr]
    assert a + b == 200
    assert a == 100 + 5 * 3 - 5 * 1


async def test_atomic_checks_keys_only_read(backend: Store) -> None:
    # The block reads "limit" and writes "spent": a concurrent change of "limit" after the read
    # must make the commit fail and the block run again (no write skew).
    await backend.put(Entry("cfg/limit", b"5"))
    attempts = 0

    async def block(tx: Txn) -> int:
        nonlocal attempts
        attempts += 1
        limit = int(await tx.get("cfg/limit") or b"0")
        if attempts == 1:
            await backend.put(Entry("cfg/limit", b"7"))
        tx.put("cfg/spent", str(limit).encode())
        return limit

    result = await atomic(backend, block, retry=EAGER)
    assert attempts == 2 and result == 7
    assert await backend.get("cfg/spent") == Entry("cfg/spent", b"7")


async def test_atomic_reads_own_writes_and_blind_writes(backend: Store) -> None:
    await backend.put(Entry("blind", b"old"))

    async def block(tx: Txn) -> bytes | None:
        assert await tx.get("n") is None
        tx.put("n", b"1")
        assert await tx.get("n") == b"1"
        tx.delete("n")
        assert await tx.get("n") is None
        tx.put("n", b"2")
        tx.put("blind", b"new")  # never read: written unconditionally
        assert tx.reads == {"n": ABSENT}
        return await tx.get("n")

    assert await atomic(backend, block) == b"2"
    assert await backend.get("n") == Entry("n", b"2")
    assert await backend.get("blind") == Entry("blind", b"new")


async def test_atomic_abort_writes_nothing(backend: Store) -> None:
    async def block(tx: Txn) -> None:
        tx.put("k", b"v")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await atomic(backend, block)
    assert await backend.get("k") is None


async def test_atomic_read_only_snapshot_and_exhaustion(backend: Store) -> None:
    await backend.put(Entry("r/a", b"1"))
    await backend.put(Entry("r/b", b"1"))

    async def moving(tx: Txn) -> None:
        await tx.get("r/a")
        await backend.put(Entry("r/a", b"2"))  # the snapshot is always stale by commit time
        await tx.get("r/b")

    with pytest.raises(RetriesExhausted) as info:
        await atomic(backend, moving, retry=RetryPolicy(attempts=2, base_delay=0.0))
    assert info.value.attempts == 2 and isinstance(info.value.last, VersionConflict)

    async def snapshot(tx: Txn) -> tuple[bytes | None, bytes | None]:
        return await tx.get("r/a"), await tx.get("r/b")

    assert await atomic(backend, snapshot) == (b"2", b"1")


async def test_atomic_retry_seeds_the_conflicting_key(backend: Store) -> None:
    await backend.put(Entry("s/a", b"1"))
    attempts = 0

    async def block(tx: Txn) -> None:
        nonlocal attempts
        attempts += 1
        value = await tx.get("s/a")
        if attempts == 1:
            await backend.put(Entry("s/a", b"2"))
        tx.put("s/a", (value or b"") + b"!")

    before = reads(backend)
    await atomic(backend, block, retry=EAGER)
    assert reads(backend) - before == 1  # the second attempt started from the conflict's report
    assert await backend.get("s/a") == Entry("s/a", b"2!")


async def test_atomic_retries_transaction_conflicts(inmem: InmemBackend) -> None:
    failures = [TransactionConflict("busy")]

    async def flaky() -> None:
        if failures:
            raise failures.pop()

    inmem.before_commit = flaky

    async def block(tx: Txn) -> None:
        tx.put("t", b"1")

    await atomic(inmem, block, retry=EAGER)
    assert await inmem.get("t") == Entry("t", b"1")


@pytest.mark.parametrize(
    "error",
    [
        TransactionConflict("cancelled", reasons=["None", "ValidationError"]),
        TransactionConflict("cancelled", reasons=["ItemCollectionSizeLimitExceeded"]),
        RequestRejected("ValidationException: bad request", code="ValidationException"),
    ],
    ids=["txn-validation", "txn-collection-full", "rejected"],
)
async def test_final_refusals_are_not_retried(inmem: InmemBackend, error: Exception) -> None:
    """A commit the engine will refuse again ends update() and atomic() at once, not after every attempt."""
    commits = 0

    async def refuse() -> None:
        nonlocal commits
        commits += 1
        raise error

    inmem.before_commit = refuse

    async def block(tx: Txn) -> None:
        tx.put("t", b"1")

    with pytest.raises(type(error)):
        await atomic(inmem, block, retry=EAGER)
    assert commits == 1
    with pytest.raises(type(error)):
        await update(inmem, "t", lambda _: b"1", retry=EAGER)
    assert commits == 2
    assert await inmem.get("t") is None


# -- the ALL_OLD fallback --------------------------------------------------------------------------


@pytest.fixture
def strip_all_old(dynamo: DynamoDBBackend) -> Iterator[list[str]]:
    """Remove the old item from every conditional-failure reply, as DynamoDB may.

    DynamoDB Local 3.3.1 does return the item for ReturnValuesOnConditionCheckFailure=ALL_OLD (on
    PutItem, DeleteItem and in TransactWriteItems' CancellationReasons), so the fallback path is
    forced here: a botocore ``after-call`` hook edits the parsed reply before botocore raises the
    error from it. Everything else is the engine's real answer.
    """
    stripped: list[str] = []

    def hook(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if parsed.pop("Item", None) is not None:
            stripped.append(model.name)
        for reason in parsed.get("CancellationReasons", []):
            if reason.pop("Item", None) is not None:
                stripped.append(model.name)

    events = dynamo.table.client.meta.events
    for op in ("PutItem", "DeleteItem", "TransactWriteItems"):
        events.register(f"after-call.dynamodb.{op}", hook, unique_id=f"strip-all-old-{op}")
    yield stripped
    for op in ("PutItem", "DeleteItem", "TransactWriteItems"):
        events.unregister(f"after-call.dynamodb.{op}", unique_id=f"strip-all-old-{op}")


async def test_conflict_current_falls_back_to_a_consistent_read(
    dynamo: DynamoDBBackend, strip_all_old: list[str]
) -> None:
    v1 = await create(dynamo, Entry("fb/k", b"1"))
    v2 = await put_versioned(dynamo, Entry("fb/k", b"2"), if_version=v1)
    before = dynamo.table.requests["get_item"]
    with pytest.raises(VersionConflict) as info:
        await put_versioned(dynamo, Entry("fb/k", b"3"), if_version=v1)  # single conditional PutItem
    assert info.value.current == VersionedEntry(Entry("fb/k", b"2"), v2)

    async def block(tx: Txn) -> None:  # a transaction: the reason's Item is stripped
        await tx.get("fb/k")
        await dynamo.put(Entry("fb/k", b"4"))
        tx.put("fb/other", b"x")

    with pytest.raises(RetriesExhausted) as exhausted:
        await atomic(dynamo, block, retry=RetryPolicy(attempts=1))
    last = exhausted.value.last
    assert isinstance(last, VersionConflict) and isinstance(last.current, VersionedEntry)
    assert last.current.entry == Entry("fb/k", b"4")
    assert strip_all_old == ["PutItem", "TransactWriteItems"]  # the engine did send the items
    # One fallback read per conflict (two), plus the block's own read of "fb/k".
    assert dynamo.table.requests["get_item"] - before == 3


async def test_conflict_current_from_all_old_needs_no_read(dynamo: DynamoDBBackend) -> None:
    v1 = await create(dynamo, Entry("ao/k", b"1"))
    await dynamo.put(Entry("ao/k", b"2"))
    before = dynamo.table.requests["get_item"]
    with pytest.raises(VersionConflict) as info:
        await put_versioned(dynamo, Entry("ao/k", b"3"), if_version=v1)
    assert isinstance(info.value.current, VersionedEntry) and info.value.current.entry.value == b"2"
    assert dynamo.table.requests["get_item"] == before


async def test_values_are_plain_bytes(backend: Store) -> None:
    # JSON in, JSON out: the recipes never re-encode the value.
    doc = json.dumps({"n": 1}).encode()
    v = await create(backend, Entry("doc", doc))
    got = await get_versioned(backend, "doc")
    assert got is not None and got.entry.value == doc and got.version == v
