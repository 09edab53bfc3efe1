"""ConditionalBackend.commit on both backends: versions, conditions, limits, and what a refusal leaves."""

from __future__ import annotations

import pytest

from kvstore import (
    ABSENT,
    Check,
    Entry,
    InvalidValue,
    Operation,
    TransactionTooLarge,
    TxnEntry,
    VersionConflict,
    Write,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend

Backends = InmemBackend | DynamoDBBackend


async def test_every_write_gives_a_new_version(backend: Backends) -> None:
    await backend.put(Entry("v/k", b"1"))
    first = await backend.get_versioned("v/k")
    await backend.put(Entry("v/k", b"1"))  # the same value: still a new version
    second = await backend.get_versioned("v/k")
    assert first is not None and second is not None
    assert first.version != second.version
    assert second.entry == Entry("v/k", b"1")


async def test_refused_commit_writes_nothing_and_leaves_no_folder(backend: Backends) -> None:
    await backend.put(Entry("keep/k", b"1"))
    with pytest.raises(VersionConflict) as info:
        await backend.commit([
            Write(Operation.PUT, Entry("new/deep/k", b"x"), if_version=ABSENT),
            Write(Operation.PUT, Entry("keep/k", b"2"), if_version="not-the-version"),
        ])
    assert info.value.key == "keep/k"
    assert info.value.current is not None and info.value.current.entry == Entry("keep/k", b"1")
    assert await backend.get("new/deep/k") is None
    # Pointers written ahead of the refused transaction are pruned again: no empty folder shows.
    assert await backend.list("") == ["keep/"]


async def test_checks_guard_keys_only_read(backend: Backends) -> None:
    await backend.put(Entry("cfg/limit", b"10"))
    read = await backend.get_versioned("cfg/limit")
    assert read is not None
    await backend.commit([Write(Operation.PUT, Entry("out/a", b"ok"))], [Check("cfg/limit", read.version)])
    assert await backend.get("out/a") == Entry("out/a", b"ok")
    await backend.put(Entry("cfg/limit", b"11"))  # the read key changes...
    with pytest.raises(VersionConflict) as info:  # ...so a commit that relied on it is refused
        await backend.commit([Write(Operation.PUT, Entry("out/a", b"stale"))], [Check("cfg/limit", read.version)])
    assert info.value.key == "cfg/limit"
    assert await backend.get("out/a") == Entry("out/a", b"ok")


async def test_a_key_is_named_once_per_commit(backend: Backends) -> None:
    with pytest.raises(InvalidValue):
        await backend.commit([Write(Operation.PUT, Entry("k", b"1"))], [Check("k", ABSENT)])
    with pytest.raises(InvalidValue):
        await backend.commit([Write(Operation.PUT, Entry("k", b"1")), Write(Operation.DELETE, Entry("k"))])


async def test_limit_counts_the_callers_items_not_pointers(backend: Backends) -> None:
    # 100 puts into one folder: 100 transaction items (the folder pointer goes before, outside).
    await backend.transaction([TxnEntry(Operation.PUT, Entry(f"bulk/{i:03d}", b"x")) for i in range(100)])
    assert len(await backend.list("bulk/")) == 100
    # A fence is a ConditionCheck of its own: 100 writes plus a fence is one item too many.
    from kvstore import Fence

    with pytest.raises(TransactionTooLarge):
        await backend.commit([Write(Operation.PUT, Entry(f"f/{i}", b"x")) for i in range(100)],
                             fence=Fence("leader", 1))
