"""fsck and the hierarchy invariant checker, on DynamoDB Local and the in-memory backend.

Broken states are built the way crashes and old versions leave them: raw items written straight
to the table (a record without its pointers, a pointer to an empty folder, a stray ``_`` item, a
table Vault wrote), never by patching the backend.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest

from kvstore import Backend, Entry, TxnEntry
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb import fsck as dynamodb_fsck
from kvstore.dynamodb.fsck import Census
from kvstore.dynamodb.lock import DynamoDBLockStore
from kvstore.fsck import FsckReport, fsck, walk_list
from kvstore.inmem import InmemBackend
from kvstore.testing.invariants import check_hierarchy

Item = dict[str, Any]


def record(path: str, key: str, value: bytes = b"v") -> Item:
    return {"Path": {"S": path}, "Key": {"S": key}, "Value": {"B": value}, "Version": {"S": "v1"}}


def pointer(path: str, key: str) -> Item:
    return {"Path": {"S": path}, "Key": {"S": key}, "Version": {"S": "t1"}}


async def write(b: DynamoDBBackend, *items: Item) -> None:
    for item in items:
        await b.table.call("put_item", Item=item)


async def remove(b: DynamoDBBackend, path: str, key: str) -> None:
    await b.table.call("delete_item", Key={"Path": {"S": path}, "Key": {"S": key}})


async def table_keys(b: DynamoDBBackend) -> set[tuple[str, str]]:
    out = await b.table.call("scan", ConsistentRead=True)
    return {(i["Path"]["S"], i["Key"]["S"]) for i in out["Items"]}


async def assert_whole(b: Backend, keys: Sequence[str]) -> None:
    """The invariant holds and walking ``list`` from the root reaches exactly ``keys``."""
    assert await check_hierarchy(b) == []
    walk = await walk_list(b)
    assert walk.keys == tuple(sorted(keys))
    assert walk.empty_folders == ()
    report = await fsck(b)
    assert report.clean, report


# -- the analysis, without I/O -----------------------------------------------------------------


def test_census_classifies_items() -> None:
    c = Census()
    for item in [
        pointer(" ", "a/"), pointer("a", "b/"), record("a/b", "k"),          # healthy
        record("x/y", "k"), pointer("x", "y/"),                              # x's pointer missing
        pointer(" ", "e/"),                                                  # empty: nothing in e
        pointer(" ", "s/"), record("s", "_old"),                             # stray only: empty
        {"Path": {"S": "s"}, "Key": {"S": "_lock"}, "Identity": {"B": b"i"}, "Expires": {"N": "1"}},
        record(" ", "top"), pointer(" ", "_f/"), record("_f", "k"),          # "_f/" is a folder
    ]:
        c.add(item)
    assert c.items == 12
    assert c.invisible() == {"x/y": (["x"], ["k"])}
    assert c.empty_folders() == ["e", "s"]
    assert c.stray == ["s/_old"]
    # Under a prefix, the pointers above it come from outside the scan.
    sub = Census("a/b")
    sub.add(record("a/b", "k"))
    assert sub.invisible(["a"]) == {"a/b": (["a/b"], ["k"])}
    assert sub.invisible(["a", "a/b"]) == {}
    empty = Census("a/b")
    assert empty.empty_folders(["a", "a/b"]) == ["a/b"]
    assert empty.empty_folders(["a"]) == []  # no pointer: not a listed folder


# -- DynamoDB ------------------------------------------------------------------------------------


async def test_healthy_table_is_clean(dynamo: DynamoDBBackend) -> None:
    keys = ["a/b/c", "a/b/d", "a/e", "top", "_f/x"]
    for k in keys:
        await dynamo.put(Entry(k, b"v"))
    # A lock record has no pointers and does not keep a folder alive: neither is a finding.
    await DynamoDBLockStore(dynamo.table).acquire("a/leader", identity="n1", value="v", ttl=5, expected_version=None)
    report = await fsck(dynamo)
    assert report == FsckReport(scanned=len(await table_keys(dynamo)))
    assert report.clean and report.problems == 0
    assert await fsck(dynamo, repair=True) == report  # nothing to repair: nothing written
    await assert_whole(dynamo, keys)


async def test_record_without_pointers_is_invisible_until_repaired(dynamo: DynamoDBBackend) -> None:
    await dynamo.put(Entry("a/ok", b"v"))
    await write(dynamo, record("a/b", "c", b"lost"))  # "a/b/" has no pointer in "a"
    assert await dynamo.get("a/b/c") == Entry("a/b/c", b"lost")
    assert await dynamo.list("a/") == ["ok"]
    report = await fsck(dynamo)
    assert report.invisible == ("a/b/c",) and report.empty_folders == () and not report.clean
    assert await check_hierarchy(dynamo) == [
        "key 'a/b/c' exists but list cannot reach it (a folder pointer above it is missing)"
    ]

    repaired = await fsck(dynamo, repair=True)
    assert repaired.repaired and repaired.clean
    assert repaired.before is not None and repaired.before.invisible == ("a/b/c",)
    assert await dynamo.list("a/") == ["b/", "ok"]
    await assert_whole(dynamo, ["a/ok", "a/b/c"])
    assert await dynamo.get("a/b/c") == Entry("a/b/c", b"lost")  # the record itself is untouched


async def test_repair_rewrites_pointers_in_chunks(dynamo: DynamoDBBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reassert is one write under one deadline: a table broken at scale is repaired in chunks."""
    monkeypatch.setattr(dynamodb_fsck, "_REASSERT_KEYS", 2)
    keys = [f"f{i}/k" for i in range(5)]
    await write(dynamo, *(record(f"f{i}", "k") for i in range(5)))
    before = dynamo.pointers.reassertions
    report = await fsck(dynamo, repair=True)
    assert report.clean and report.before is not None and report.before.invisible == tuple(keys)
    assert dynamo.pointers.reassertions - before == 3
    await assert_whole(dynamo, keys)


async def test_pointer_to_an_empty_folder_is_pruned(dynamo: DynamoDBBackend) -> None:
    await dynamo.put(Entry("keep/k", b"v"))
    # x/ holds only the pointer to x/y/, which holds nothing: only x/y/ is empty (x/ has a child).
    await write(dynamo, pointer(" ", "x/"), pointer("x", "y/"))
    assert await dynamo.list("") == ["keep/", "x/"]
    report = await fsck(dynamo)
    assert (report.invisible, report.empty_folders) == ((), ("x/y/",))
    assert await check_hierarchy(dynamo) == ["folder 'x/y/' is listed but lists nothing (an empty folder)"]

    repaired = await fsck(dynamo, repair=True)
    assert repaired.clean and repaired.repaired
    # Pruning x/y/ emptied x/, which went too.
    assert await table_keys(dynamo) == {(" ", "keep/"), ("keep", "k")}
    await assert_whole(dynamo, ["keep/k"])


async def test_deep_chains(dynamo: DynamoDBBackend) -> None:
    depth = 12
    folders = ["/".join(f"d{i}" for i in range(n + 1)) for n in range(depth)]  # d0 ... d0/.../d11
    key = folders[-1] + "/k"
    await write(dynamo, record(folders[-1], "k"))
    # Some pointers survived (the top three and one in the middle), the rest are gone.
    for f in [*folders[:3], folders[7]]:
        parent, _, name = f.rpartition("/")
        await write(dynamo, pointer(parent or " ", name + "/"))
    # And a chain of pointers ten deep with nothing at the bottom.
    empty = ["/".join(f"e{i}" for i in range(n + 1)) for n in range(10)]
    for f in empty:
        parent, _, name = f.rpartition("/")
        await write(dynamo, pointer(parent or " ", name + "/"))

    report = await fsck(dynamo)
    assert report.invisible == (key,)
    # The last surviving pointer of each run shows a folder that lists nothing (its child pointer
    # is gone); of the empty chain only the bottom one has no child.
    assert report.empty_folders == (folders[2] + "/", folders[7] + "/", empty[-1] + "/")

    repaired = await fsck(dynamo, repair=True)
    assert repaired.clean and repaired.repaired
    for f in folders:
        parent = f.rpartition("/")[0]
        assert f.rpartition("/")[2] + "/" in await dynamo.list(parent + "/" if parent else "")
    assert not any(p.startswith("e0") or k == "e0/" for p, k in await table_keys(dynamo))
    await assert_whole(dynamo, [key])


async def test_stray_lock_names_and_lock_records(dynamo: DynamoDBBackend) -> None:
    await write(
        dynamo,
        pointer(" ", "s/"), record("s", "_old"),  # an older version's data under a lock-like name
        # Vault's lock record: binary Identity and Expires, no Fence, no pointer above it.
        {"Path": {"S": "v"}, "Key": {"S": "_core-lock"}, "Value": {"S": "x"},
         "Identity": {"B": b"\x01id"}, "Expires": {"N": "1700000000"}},
    )
    await DynamoDBLockStore(dynamo.table).acquire("s/leader", identity="n1", value="v", ttl=5, expected_version=None)
    report = await fsck(dynamo)
    assert report.stray_lock_names == ("s/_old",)
    # Neither the stray nor the lock record is a child: s/ is listed and lists nothing.
    assert report.empty_folders == ("s/",) and report.invisible == ()
    assert await dynamo.list("s/") == []

    repaired = await fsck(dynamo, repair=True)
    assert repaired.repaired and not repaired.clean  # strays are reported, never changed
    assert repaired.stray_lock_names == ("s/_old",) and repaired.empty_folders == ()
    assert ("s", "_old") in await table_keys(dynamo) and ("s", "_leader") in await table_keys(dynamo)
    assert await dynamo.list("") == []
    assert await check_hierarchy(dynamo) == []  # strays are legacy data, not a hierarchy violation


async def test_a_table_vault_wrote(dynamo: DynamoDBBackend) -> None:
    # No Version on records or pointers, values as base64 strings; one folder lost its pointer.
    secret = base64.b64encode(b"\x01secret").decode()
    await write(
        dynamo,
        {"Path": {"S": " "}, "Key": {"S": "sys/"}},
        {"Path": {"S": "sys"}, "Key": {"S": "token"}, "Value": {"S": secret}},
        {"Path": {"S": "sys/deep"}, "Key": {"S": "x"}, "Value": {"S": secret}},
        {"Path": {"S": " "}, "Key": {"S": "gone/"}},  # an empty folder with a token-less pointer
    )
    report = await fsck(dynamo)
    assert (report.invisible, report.empty_folders, report.stray_lock_names) == (("sys/deep/x",), ("gone/",), ())
    repaired = await fsck(dynamo, repair=True)
    assert repaired.clean and repaired.repaired
    assert await dynamo.list("") == ["sys/"]
    assert await dynamo.list("sys/") == ["deep/", "token"]
    assert await dynamo.get("sys/deep/x") == Entry("sys/deep/x", b"\x01secret")
    await assert_whole(dynamo, ["sys/deep/x", "sys/token"])


async def test_prefix_scope(dynamo: DynamoDBBackend) -> None:
    await write(
        dynamo,
        pointer("a", "b/"), record("a/b", "k"),  # a/'s own pointer (in the root) is missing
        record("a/bc", "k"),                     # invisible too, but not below a/b/
        pointer("z", "y/"),                      # an empty folder elsewhere
    )
    report = await fsck(dynamo, "a/b/")
    # The pointer above the prefix is read too: a/b/k is invisible although a/b/ has its pointer.
    assert (report.invisible, report.empty_folders, report.scanned) == (("a/b/k",), (), 1)
    assert await fsck(dynamo, "a/b") == report
    assert (await fsck(dynamo, "z/y/")).empty_folders == ("z/y/",)  # the prefix folder itself
    assert (await fsck(dynamo, "nothing/")).clean
    everything = await fsck(dynamo)
    assert everything.invisible == ("a/b/k", "a/bc/k") and everything.empty_folders == ("z/y/",)

    repaired = await fsck(dynamo, "a/b/", repair=True)
    assert repaired.clean and repaired.repaired
    assert await dynamo.list("a/") == ["b/"]  # a/bc/k was outside the prefix: still unlisted
    assert (await fsck(dynamo)).invisible == ("a/bc/k",)


async def test_progress_counts_every_page(dynamo: DynamoDBBackend) -> None:
    for i in range(7):
        await dynamo.put(Entry(f"p/k{i}", b"v"))
    total = len(await table_keys(dynamo))
    seen: list[int] = []
    report = await dynamodb_fsck.fsck(dynamo, progress=seen.append, page_size=2)
    assert report.clean and report.scanned == total
    assert len(seen) >= total // 2 and seen == sorted(seen) and seen[-1] == total
    # With a repair, progress keeps counting through the second check.
    await remove(dynamo, " ", "p/")
    seen.clear()
    assert (await fsck(dynamo, repair=True, progress=seen.append)).clean
    assert seen == sorted(seen) and seen[-1] == 2 * total - 1


async def test_a_finding_gone_by_the_time_it_is_reread_is_not_reported(dynamo: DynamoDBBackend) -> None:
    """A Scan is no snapshot: a put that lands during it must not be reported as a broken key."""
    await write(dynamo, record("w", "k"))
    call = dynamo.table.call

    async def racing_call(operation: str, **params: Any) -> dict[str, Any]:
        out = await call(operation, **params)
        if operation == "scan":  # the put's pointer lands after the scan read the root's partition
            await call("put_item", Item=pointer(" ", "w/"))
        return out

    dynamo.table.call = racing_call  # type: ignore[method-assign]
    try:
        assert (await fsck(dynamo)).clean
    finally:
        dynamo.table.call = call  # type: ignore[method-assign]


# -- other backends ------------------------------------------------------------------------------


async def test_inmem_is_always_clean(inmem: InmemBackend) -> None:
    keys = ["a/b/c", "a/d", "top", "_x/y"]
    for k in keys:
        await inmem.put(Entry(k, b"v"))
    report = await fsck(inmem)
    # The walk lists: a/ _x/ top (root), b/ d (a/), c (a/b/), y (_x/).
    assert report == FsckReport(scanned=7)
    assert await fsck(inmem, "a/", repair=True) == FsckReport(scanned=3)
    await assert_whole(inmem, keys)
    await inmem.delete("a/b/c")
    assert await check_hierarchy(inmem) == []


class _GhostFolder(Backend):
    """A backend whose root lists a folder ``ghost/`` that holds nothing (an inconsistent store)."""

    def __init__(self, inner: InmemBackend) -> None:
        self.inner = inner

    async def put(self, entry: Entry) -> None:
        await self.inner.put(entry)

    async def get(self, key: str) -> Entry | None:
        return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[str]:
        names = await self.inner.list(prefix)
        return sorted([*names, "ghost/"]) if prefix == "" else names

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        await self.inner.transaction(txns)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_other_backends_get_a_list_walk(inmem: InmemBackend) -> None:
    await inmem.put(Entry("a/b", b"v"))
    ghost = _GhostFolder(inmem)
    report = await fsck(ghost, repair=True)
    assert report == FsckReport(empty_folders=("ghost/",), scanned=3)  # a/ ghost/ b; nothing repaired
    assert (await fsck(ghost, "ghost/")).empty_folders == ("ghost/",)
    assert (await fsck(ghost, "a/")).clean
    assert await check_hierarchy(ghost) == ["folder 'ghost/' is listed but lists nothing (an empty folder)"]
