"""The conformance suite every backend must pass, shipped as library code (like Vault's sdk/physical).

Run it against any backend from your own tests::

    from kvstore.testing import exercise_backend, exercise_backend_list_prefix

    async def test_my_backend():
        async with MyBackend() as b:
            await exercise_backend(b)
            await exercise_backend_list_prefix(b)

Each function expects an empty store and leaves it empty. Failures raise ``AssertionError`` with a
message naming the broken rule. Every assertion says why the rule exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kvstore.backend import ABSENT, Backend, Check, ConditionalBackend, Fence, HABackend, Lock, Write
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    FenceRejected,
    InvalidKey,
    InvalidValue,
    TransactionTooLarge,
    ValueTooLarge,
    VersionConflict,
)

__all__ = [
    "exercise_backend",
    "exercise_backend_list_prefix",
    "exercise_bad_input",
    "exercise_conditional_backend",
    "exercise_ha_backend",
    "exercise_key_namespace",
    "exercise_list_pages",
    "exercise_same_name_key_and_folder",
    "exercise_transactional_backend",
]


def _eq(actual: object, expected: object, why: str) -> None:
    assert actual == expected, f"{why}: expected {expected!r}, got {actual!r}"


async def exercise_backend(b: Backend) -> None:
    """Vault's ExerciseBackend: the basic contract of put/get/delete/list."""
    # A missing key reads as None, not an error: callers use get() to test for existence.
    _eq(await b.get("foo"), None, "get of a missing key")
    # Deleting a missing key succeeds: delete is idempotent, so retries are always safe.
    await b.delete("foo")
    # An empty store lists nothing.
    _eq(await b.list(""), [], "list of an empty store")

    await b.put(Entry("foo", b"test"))
    # What was put is what is read, and the entry carries the full key.
    _eq(await b.get("foo"), Entry("foo", b"test"), "get after put")
    _eq(await b.list(""), ["foo"], "list after a top-level put")

    # Overwriting is allowed and the last write wins.
    await b.put(Entry("foo", b"second"))
    _eq(await b.get("foo"), Entry("foo", b"second"), "get after overwrite")

    await b.delete("foo")
    _eq(await b.get("foo"), None, "get after delete")
    _eq(await b.list(""), [], "list after the only key was deleted")

    # Nested keys show up as folders (trailing "/") in their parent.
    await b.put(Entry("foo/bar", b"baz"))
    _eq(await b.list(""), ["foo/"], "a nested key makes its folder visible at the root")
    _eq(await b.list("foo/"), ["bar"], "the folder lists its key")
    _eq(await b.get("foo/bar"), Entry("foo/bar", b"baz"), "get of a nested key")

    # Deep keys, and siblings at several depths.
    await b.put(Entry("foo/bar/baz/qux", b"deep"))
    await b.put(Entry("foo/zip", b"z"))
    _eq(await b.list("foo/"), ["bar", "bar/", "zip"], "a key and a folder of the same name are two children")
    _eq(await b.list("foo/bar/"), ["baz/"], "intermediate folders are listed")
    _eq(await b.list("foo/bar/baz/"), ["qux"], "the deepest folder lists its key")

    # Empty folders vanish: once the deep key goes, its folders go with it.
    await b.delete("foo/bar/baz/qux")
    _eq(await b.list("foo/bar/"), [], "a folder emptied by delete lists nothing")
    _eq(await b.list("foo/"), ["bar", "zip"], "an emptied folder disappears from its parent")

    # Values are opaque bytes: every byte value survives, the empty value included.
    binary = bytes(range(256))
    await b.put(Entry("foo/bin", binary))
    _eq(await b.get("foo/bin"), Entry("foo/bin", binary), "binary values round-trip")
    await b.put(Entry("foo/empty", b""))
    _eq(await b.get("foo/empty"), Entry("foo/empty", b""), "an empty value is a value, not a missing key")

    # Unicode keys are stored as given.
    await b.put(Entry("foo/ünï/cödé", b"u"))
    _eq(await b.list("foo/ünï/"), ["cödé"], "unicode names round-trip")

    for key in ("foo/bar", "foo/zip", "foo/bin", "foo/empty", "foo/ünï/cödé"):
        await b.delete(key)
    _eq(await b.list(""), [], "the store is empty again after deleting everything")


async def exercise_backend_list_prefix(b: Backend) -> None:
    """Vault's ExerciseBackend_ListPrefix: listing at each level of a chain of keys."""
    e1, e2, e3 = Entry("foo", b"test"), Entry("foo/bar", b"test"), Entry("foo/bar/baz", b"test")
    for e in (e1, e2, e3):
        await b.put(e)
    _eq(await b.list(""), ["foo", "foo/"], "root lists the key foo and the folder foo/")
    _eq(await b.list("foo/"), ["bar", "bar/"], "foo/ lists the key bar and the folder bar/")
    _eq(await b.list("foo"), ["bar", "bar/"], "a prefix without its trailing '/' means the same folder")
    _eq(await b.list("foo/bar/"), ["baz"], "foo/bar/ lists baz")
    _eq(await b.list("nothing/"), [], "a folder that does not exist lists nothing")
    for e in (e1, e2, e3):
        await b.delete(e.key)
    _eq(await b.list(""), [], "the store is empty again")


async def _refused_value(what: str, call: Callable[[], Awaitable[object]]) -> None:
    """Assert that ``call()`` raises :class:`InvalidValue`."""
    try:
        await call()
    except InvalidValue:
        return
    raise AssertionError(f"{what} must raise InvalidValue")


async def _all_pages(b: Backend, prefix: str, limit: int) -> list[str]:
    """Every name of ``prefix``, page by page with ``list_page``, checking each page's shape."""
    names: list[str] = []
    after = ""
    while True:
        page = await b.list_page(prefix, after=after, limit=limit)
        assert len(page) <= limit, f"list_page returned {len(page)} names, over its limit {limit}"
        assert all(n > after for n in page), f"list_page after {after!r} returned {page!r}: not strictly after"
        names.extend(page)
        if len(page) < limit:
            return names
        after = page[-1]


async def _collect(b: Backend, prefix: str, page_size: int) -> list[str]:
    return [n async for n in b.iter_list(prefix, page_size=page_size)]


async def exercise_list_pages(b: Backend) -> None:
    """OpenBao's ListPage and a streaming list: the same names as ``list``, a page at a time.

    ``list_page(prefix, after=..., limit=...)`` returns the names ``list`` would, in its order, that
    sort strictly after ``after``, at most ``limit`` of them; ``iter_list`` yields all of them.
    """
    keys = ["d/a", "d/a/x", "d/a-b", "d/a0", "d/b", "d/b/c/d", "d/_f/g", "d/c", "d/é", "d/z", "d/\u20ac",
            "d/\U0001f600"]
    for k in keys:
        await b.put(Entry(k, b"v"))
    whole = await b.list("d/")
    # A key and a folder of one name are two children; `_f/` is a folder (data), so it is listed.
    _eq(whole, sorted(["_f/", "a", "a/", "a-b", "a0", "b", "b/", "c", "é", "z", "\u20ac", "\U0001f600"]),
        "list of the sample folder")
    locks: list[Lock] = []
    if isinstance(b, HABackend):
        # Lock records share the folder with data, sorting among them: pages must skip them.
        for name in ("d/a1", "d/aa", "d/zz"):
            lock = b.lock_with(name, "n", ttl=5.0, renew_interval=1.0, watch_interval=1.0, retry_interval=0.1)
            await lock.lock()
            locks.append(lock)
    try:
        for limit in (1, 2, 3, len(whole), len(whole) + 5):
            # Pages concatenate to list: nothing skipped, nothing twice, the same order.
            _eq(await _all_pages(b, "d/", limit), whole, f"list_page pages of {limit} concatenated")
            _eq(await _collect(b, "d/", limit), whole, f"iter_list with pages of {limit}")
        _eq(await _collect(b, "d", 1000), whole, "iter_list of a prefix without its trailing '/'")
        _eq(await b.list_page("d", limit=100), whole, "list_page of a prefix without its trailing '/'")
        _eq(await b.list_page("d/", limit=1), ["_f/"], "limit 1 from the start: the first name")
        _eq(await b.list_page("d/", after="a", limit=2), ["a-b", "a/"],
            "after the key a comes a-b ('-' sorts before '/'), then the folder a/ of the same name")
        _eq(await b.list_page("d/", after="a/", limit=1), ["a0"], "after the folder a/")
        _eq(await b.list_page("d/", after="a1", limit=2), ["b", "b/"],
            "after a name that is not a child (a lock's name here) the listing resumes at the next child")
        _eq(await b.list_page("d/", after="bb", limit=10), ["c", "z", "é", "\u20ac", "\U0001f600"],
            "after an absent name: the rest, in code-point order (non-ASCII included)")
        _eq(await b.list_page("d/", after="\U0001f600", limit=10), [], "after the last name: nothing")
        _eq(await b.list_page("d/", after="\U0010ffff", limit=10), [], "after past the end: nothing")
        _eq(await b.list_page("d/", after="x" * 2000, limit=10), ["z", "é", "\u20ac", "\U0001f600"],
            "an after longer than any stored name still works")
        _eq(await b.list_page("nothing/", limit=5), [], "a folder that does not exist has no pages")
        _eq(await _collect(b, "nothing/", 5), [], "iter_list of a folder that does not exist")
        _eq(await b.list_page("", limit=10), ["d/"], "the root lists the folder only")
        bad_limits: list[Any] = [0, -1, True, 1.5, "2", None]
        for bad in bad_limits:
            # A limit that is not a positive int is the caller's mistake, refused before any I/O.
            await _refused_value(f"list_page with limit={bad!r}", functools.partial(b.list_page, "d/", limit=bad))
            await _refused_value(f"iter_list with page_size={bad!r}", functools.partial(_collect, b, "d/", bad))
        not_str: Any = 3
        await _refused_value("list_page with a non-str after", lambda: b.list_page("d/", after=not_str))
        await _refused("list_page of a malformed prefix", lambda: b.list_page("//", limit=1))
        await _refused("iter_list of a malformed prefix", lambda: _collect(b, "//", 1))
    finally:
        for lock in locks:
            await lock.unlock()
    for k in keys:
        await b.delete(k)
    _eq(await b.list(""), [], "the store is empty again")


async def exercise_same_name_key_and_folder(b: Backend) -> None:
    """A key ``x`` and a folder ``x/`` are different children; deleting one never hides the other.

    Vault's DynamoDB backend gets this wrong: its empty-folder check treats ``bar`` and ``bar/`` as
    the same child, so deleting one can strand the other.
    """
    await b.put(Entry("foo/bar", b"1"))
    await b.put(Entry("foo/bar/baz", b"2"))
    await b.delete("foo/bar")
    _eq(await b.list(""), ["foo/"], "deleting key foo/bar keeps folder foo/ (it still holds bar/)")
    _eq(await b.list("foo/"), ["bar/"], "deleting key foo/bar keeps folder foo/bar/")
    _eq(await b.get("foo/bar/baz"), Entry("foo/bar/baz", b"2"), "the deeper key is untouched")

    await b.put(Entry("foo/bar", b"1"))
    await b.delete("foo/bar/baz")
    _eq(await b.list("foo/"), ["bar"], "deleting the folder's last key keeps the key of the same name")
    _eq(await b.list(""), ["foo/"], "foo/ still holds the key bar")
    await b.delete("foo/bar")
    _eq(await b.list(""), [], "the last delete empties every folder")

    # Siblings keep a folder alive at every depth.
    await b.put(Entry("a/b/c/d", b"1"))
    await b.put(Entry("a/x", b"2"))
    await b.delete("a/b/c/d")
    _eq(await b.list(""), ["a/"], "a/ still holds x")
    _eq(await b.list("a/"), ["x"], "the emptied chain b/c/ is pruned up to the first non-empty folder")
    await b.delete("a/x")
    _eq(await b.list(""), [], "the store is empty again")


async def exercise_transactional_backend(b: Backend) -> None:
    """Vault's ExerciseTransactionalBackend: all steps apply together, in order per key."""
    await b.put(Entry("foo", b"bar"))
    await b.put(Entry("zip", b"zap"))
    await b.transaction(
        [
            TxnEntry(Operation.PUT, Entry("foo", b"bar2")),
            TxnEntry(Operation.DELETE, Entry("zip")),
            TxnEntry(Operation.PUT, Entry("zork/zap", b"boo")),
            TxnEntry(Operation.PUT, Entry("tmp", b"1")),
            TxnEntry(Operation.DELETE, Entry("tmp")),  # the last step on a key wins
        ]
    )
    _eq(await b.get("foo"), Entry("foo", b"bar2"), "a transaction's put overwrites")
    _eq(await b.get("zip"), None, "a transaction's delete removes")
    _eq(await b.get("tmp"), None, "steps on one key coalesce in order: put then delete leaves nothing")
    _eq(await b.list(""), ["foo", "zork/"], "a transaction writes folder pointers for its puts")
    _eq(await b.list("zork/"), ["zap"], "the new folder lists its key")

    await b.transaction([TxnEntry(Operation.DELETE, Entry("zork/zap")), TxnEntry(Operation.DELETE, Entry("foo"))])
    _eq(await b.list(""), [], "deletes in a transaction prune empty folders too")

    # Too many steps is a typed error and nothing is written: never a silent split.
    too_many = [TxnEntry(Operation.PUT, Entry(f"many/{i}", b"x")) for i in range(101)]
    try:
        await b.transaction(too_many)
    except TransactionTooLarge:
        pass
    else:
        raise AssertionError("a transaction over 100 items must raise TransactionTooLarge")
    _eq(await b.list(""), [], "a refused transaction writes nothing")

    # An empty transaction is a no-op.
    await b.transaction([])
    _eq(await b.list(""), [], "an empty transaction changes nothing")


async def _conflict(what: str, call: Callable[[], Awaitable[object]]) -> VersionConflict:
    """Assert that ``call()`` raises :class:`VersionConflict` and return it."""
    try:
        await call()
    except VersionConflict as exc:
        return exc
    raise AssertionError(f"{what} must raise VersionConflict")


async def exercise_conditional_backend(b: ConditionalBackend) -> None:
    """ConditionalBackend.commit: versions, ABSENT creates, conflicts, checks, fences and limits.

    ``b`` must also be a :class:`Backend` (the data API sets keys up and shows what a refused
    commit left); fences are exercised when it is an :class:`HABackend` too.
    """
    if not isinstance(b, Backend):
        raise TypeError("exercise_conditional_backend needs a backend that is also a Backend")
    _eq(await b.get_versioned("v/k"), None, "get_versioned of a missing key")

    # Every write gives a new version, even one that writes the same value again.
    await b.put(Entry("v/k", b"1"))
    first = await b.get_versioned("v/k")
    await b.put(Entry("v/k", b"1"))
    second = await b.get_versioned("v/k")
    assert first is not None and second is not None, "get_versioned reads what put wrote"
    assert first.version != second.version, "rewriting the same value still gives a new version"
    _eq(second.entry, Entry("v/k", b"1"), "get_versioned carries the entry")

    # commit returns the new version of each put key: the one a versioned read then sees.
    versions = await b.commit([Write(Operation.PUT, Entry("v/k", b"2"), if_version=second.version)])
    third = await b.get_versioned("v/k")
    assert third is not None, "a versioned put keeps the key"
    _eq(versions, {"v/k": third.version}, "commit returns the version it wrote")
    _eq(third.entry, Entry("v/k", b"2"), "a commit with the current version writes")

    # A stale version is refused, names the key, reports what is there, and writes nothing.
    stale = await _conflict("a commit with a stale version", lambda: b.commit(
        [Write(Operation.PUT, Entry("v/k", b"stale"), if_version=second.version)]))
    _eq(stale.key, "v/k", "VersionConflict names the key")
    assert stale.current is not None and stale.current.entry == Entry("v/k", b"2"), (
        f"VersionConflict reports the key's current entry, got {stale.current!r}")
    _eq(await b.get("v/k"), Entry("v/k", b"2"), "a refused commit leaves the value")

    # ABSENT: create-only. It writes a missing key and refuses an existing one.
    await _conflict("an ABSENT create of an existing key", lambda: b.commit(
        [Write(Operation.PUT, Entry("v/k", b"again"), if_version=ABSENT)]))
    created = await b.commit([Write(Operation.PUT, Entry("v/new", b"n"), if_version=ABSENT)])
    _eq(set(created), {"v/new"}, "an ABSENT create returns the new key's version")
    _eq(await b.get("v/new"), Entry("v/new", b"n"), "an ABSENT create of a missing key writes")

    # A versioned delete: refused with a stale version, applied with the current one.
    await _conflict("a delete with a stale version", lambda: b.commit(
        [Write(Operation.DELETE, Entry("v/new"), if_version=second.version)]))
    _eq(await b.get("v/new"), Entry("v/new", b"n"), "a refused delete keeps the key")
    new = await b.get_versioned("v/new")
    assert new is not None, "the created key is readable with its version"
    _eq(await b.commit([Write(Operation.DELETE, Entry("v/new"), if_version=new.version)]), {},
        "a delete returns no version")
    _eq(await b.get("v/new"), None, "a delete with the current version removes the key")
    await b.delete("v/k")

    # All or nothing: one refused write refuses the commit, with no folder pointer left behind.
    await b.put(Entry("keep/k", b"1"))
    refused = await _conflict("a commit with one stale write", lambda: b.commit([
        Write(Operation.PUT, Entry("new/deep/k", b"x"), if_version=ABSENT),
        Write(Operation.PUT, Entry("keep/k", b"2"), if_version="not-the-version"),
    ]))
    _eq(refused.key, "keep/k", "VersionConflict names the write that failed")
    assert refused.current is not None and refused.current.entry == Entry("keep/k", b"1"), (
        f"VersionConflict reports the current entry, got {refused.current!r}")
    _eq(await b.get("new/deep/k"), None, "a refused commit writes none of its writes")
    _eq(await b.list(""), ["keep/"], "a refused commit leaves no empty folder")
    await b.delete("keep/k")

    # Checks guard keys a commit only read.
    await b.put(Entry("cfg/limit", b"10"))
    read = await b.get_versioned("cfg/limit")
    assert read is not None, "the checked key is readable"
    await b.commit([Write(Operation.PUT, Entry("out/a", b"ok"))], [Check("cfg/limit", read.version)])
    _eq(await b.get("out/a"), Entry("out/a", b"ok"), "a commit whose check holds writes")
    await b.put(Entry("cfg/limit", b"11"))
    checked = await _conflict("a commit checking a changed key", lambda: b.commit(
        [Write(Operation.PUT, Entry("out/a", b"stale"))], [Check("cfg/limit", read.version)]))
    _eq(checked.key, "cfg/limit", "VersionConflict names the check that failed")
    _eq(await b.get("out/a"), Entry("out/a", b"ok"), "a commit whose check failed writes nothing")
    await b.commit([Write(Operation.PUT, Entry("out/b", b"ok"))], [Check("cfg/missing", ABSENT)])
    _eq(await b.get("out/b"), Entry("out/b", b"ok"), "an ABSENT check of a missing key holds")
    await _conflict("an ABSENT check of an existing key", lambda: b.commit(
        [Write(Operation.PUT, Entry("out/b", b"stale"))], [Check("cfg/limit", ABSENT)]))
    for key in ("cfg/limit", "out/a", "out/b"):
        await b.delete(key)

    # A key is named once per commit, as a write or as a check.
    twice: list[tuple[str, Sequence[Write], Sequence[Check]]] = [
        ("a key written and checked", [Write(Operation.PUT, Entry("k", b"1"))], [Check("k", ABSENT)]),
        ("a key written twice", [Write(Operation.PUT, Entry("k", b"1")), Write(Operation.DELETE, Entry("k"))], []),
    ]
    for what, writes, checks in twice:
        try:
            await b.commit(writes, checks)
        except InvalidValue:
            pass
        else:
            raise AssertionError(f"a commit with {what} must raise InvalidValue")

    # The item limit counts the caller's items, not folder pointers; a fence is an item too.
    await b.transaction([TxnEntry(Operation.PUT, Entry(f"bulk/{i:03d}", b"x")) for i in range(100)])
    _eq(len(await b.list("bulk/")), 100, "100 puts into one folder fit one transaction")
    try:
        await b.commit([Write(Operation.PUT, Entry(f"f/{i}", b"x")) for i in range(100)], fence=Fence("leader", 1))
    except TransactionTooLarge:
        pass
    else:
        raise AssertionError("100 writes plus a fence must raise TransactionTooLarge")
    await b.transaction([TxnEntry(Operation.DELETE, Entry(f"bulk/{i:03d}")) for i in range(100)])

    if isinstance(b, HABackend):
        # A fence holds while its grant is the lock's current one, and not a moment longer.
        timing = {"ttl": 2.0, "renew_interval": 0.5, "watch_interval": 0.5, "retry_interval": 0.1}
        lock = b.lock_with("fenced/leader", "n1", **timing)
        await lock.lock()
        try:
            fence = Fence("fenced/leader", lock.fencing_token)
            await b.commit([Write(Operation.PUT, Entry("fenced/out", b"1"))], fence=fence)
            _eq(await b.get("fenced/out"), Entry("fenced/out", b"1"), "a commit under the current fence writes")
            try:
                await b.commit([Write(Operation.PUT, Entry("fenced/out", b"x"))],
                               fence=Fence("fenced/leader", lock.fencing_token + 1))
            except FenceRejected:
                pass
            else:
                raise AssertionError("a commit under a token that is not the current one must raise FenceRejected")
        finally:
            await lock.unlock()
        try:
            await b.commit([Write(Operation.PUT, Entry("fenced/out", b"2"))], fence=fence)
        except FenceRejected:
            pass
        else:
            raise AssertionError("a commit under a released lock's fence must raise FenceRejected")
        _eq(await b.get("fenced/out"), Entry("fenced/out", b"1"), "a fenced-out commit writes nothing")
        await b.delete("fenced/out")

    _eq(await b.list(""), [], "the store is empty again")


async def exercise_bad_input(b: Backend) -> None:
    """Bad input raises a typed error before anything is written."""
    bad_keys: list[object] = [
        "", "/a", "a/", "a//b", "a\x00b", "x" * 1025, "/".join(["p" * 1000] * 3) + "/k",
        " /a",            # under the root marker: would alias the top-level key a
        "_x", "a/_x",     # lock records' names
        "f" * 1024 + "/k",  # a folder segment whose pointer (segment + "/") would be 1025 bytes
        "a/\ud800",       # not UTF-8
    ]
    for key in bad_keys:
        for call in (b.get, b.delete):
            try:
                await call(key)  # type: ignore[arg-type]
            except InvalidKey:
                pass
            else:
                raise AssertionError(f"{call.__name__}({key!r:.40}) must raise InvalidKey")
        try:
            await b.put(Entry(key, b"v"))  # type: ignore[arg-type]
        except InvalidKey:
            pass
        else:
            raise AssertionError(f"put of key {key!r:.40} must raise InvalidKey")
    for prefix in ("/", "a//", " ", " /", " /a/", "f" * 1024 + "/", "/".join(["p" * 1000] * 3) + "/"):
        try:
            await b.list(prefix)
        except InvalidKey:
            pass
        else:
            raise AssertionError(f"list({prefix!r:.40}) must raise InvalidKey")
    for wrong in (123, None, b"bytes-key"):
        try:
            await b.get(wrong)  # type: ignore[arg-type]
        except InvalidValue:
            pass
        else:
            raise AssertionError(f"get({wrong!r}) must raise InvalidValue (keys are str)")
    try:
        await b.put(Entry("k", "not bytes"))  # type: ignore[arg-type]
    except InvalidValue:
        pass
    else:
        raise AssertionError("a str value must raise InvalidValue (values are bytes)")
    try:
        await b.put(Entry("big", b"x" * (400 * 1024)))
    except ValueTooLarge as exc:
        assert exc.size > exc.limit, "ValueTooLarge reports the size and the limit"
    else:
        raise AssertionError("a value over DynamoDB's 400 KB item limit must raise ValueTooLarge")
    _eq(await b.list(""), [], "rejected writes left nothing behind")
    _eq(await b.get("big"), None, "the oversized value was not written")


async def _refused(what: str, call: Callable[[], Awaitable[object]]) -> None:
    """Assert that ``call()`` raises :class:`InvalidKey` (``what`` names the call in the failure)."""
    try:
        await call()
    except InvalidKey:
        return
    raise AssertionError(f"{what} must raise InvalidKey")


async def exercise_key_namespace(b: Backend) -> None:
    """One key namespace on every backend: no name aliases another, lock records are not data.

    On DynamoDB key ``a/b/c`` is the item ``(Path "a/b", Key "c")``, a top-level key has Path
    ``" "``, a folder is a pointer ``(Path "a", Key "b/")`` and the lock record of lock ``a/x`` is
    ``(Path "a", Key "_x")``. Names that would land on another name's item are refused, on every
    backend alike, so that code tested in memory behaves the same in production.
    """
    # The root marker: a folder " " would share the root's partition, so " /collide" would
    # overwrite the top-level key collide, and " /a/b" would forge the root's pointer to a/.
    await b.put(Entry("collide", b"top"))
    await _refused("put(' /collide')", lambda: b.put(Entry(" /collide", b"forged")))
    await _refused("get(' /collide')", lambda: b.get(" /collide"))
    await _refused("delete(' /collide')", lambda: b.delete(" /collide"))
    await _refused("put(' /a/b')", lambda: b.put(Entry(" /a/b", b"forged")))
    await _refused("list(' /')", lambda: b.list(" /"))
    _eq(await b.get("collide"), Entry("collide", b"top"), "refused ' /' keys leave the top-level key alone")
    _eq(await b.list(""), ["collide"], "refused ' /' keys write no folder at the root")
    # A lone " " is no folder: it is an ordinary top-level key.
    await b.put(Entry(" ", b"space"))
    _eq(await b.get(" "), Entry(" ", b"space"), "a top-level key named ' ' is a plain key")
    _eq(await b.list(""), [" ", "collide"], "the key ' ' is listed beside its siblings")
    await b.delete(" ")
    await b.delete("collide")

    # Lock records: a last segment starting with "_" is a lock's record, never data.
    await _refused("put('a/_x')", lambda: b.put(Entry("a/_x", b"v")))
    await _refused("put('_x')", lambda: b.put(Entry("_x", b"v")))
    await _refused("get('a/_x')", lambda: b.get("a/_x"))
    await _refused("delete('a/_x')", lambda: b.delete("a/_x"))
    await _refused("transaction putting 'a/_x'", lambda: b.transaction(
        [TxnEntry(Operation.PUT, Entry("a/ok", b"v")), TxnEntry(Operation.PUT, Entry("a/_x", b"v"))]))
    await _refused("transaction deleting 'a/_x'", lambda: b.transaction(
        [TxnEntry(Operation.PUT, Entry("a/ok", b"v")), TxnEntry(Operation.DELETE, Entry("a/_x"))]))
    if isinstance(b, ConditionalBackend):
        c = b
        await _refused("get_versioned('a/_x')", lambda: c.get_versioned("a/_x"))
        await _refused("commit writing 'a/_x'", lambda: c.commit([Write(Operation.PUT, Entry("a/_x", b"v"))]))
        await _refused("commit checking 'a/_x'", lambda: c.commit(
            [Write(Operation.PUT, Entry("a/ok", b"v"))], [Check("a/_x", "some-version")]))
    _eq(await b.get("a/ok"), None, "a transaction with a refused step writes none of its steps")
    _eq(await b.list(""), [], "refused lock-record names wrote nothing")
    if isinstance(b, HABackend):
        # The data API cannot reach a lock's record, so it cannot reset its fencing counter.
        timing = {"ttl": 2.0, "renew_interval": 0.5, "watch_interval": 0.5, "retry_interval": 0.1}
        lock = b.lock_with("a/x", "n1", **timing)
        await lock.lock()
        token = lock.fencing_token
        await _refused("delete of a held lock's record", lambda: b.delete("a/_x"))
        await _refused("put over a held lock's record", lambda: b.put(Entry("a/_x", b"v")))
        _eq(await lock.value(), (True, "n1"), "the lock survives data calls on its record's name")
        await lock.unlock()
        again = b.lock_with("a/x", "n2", **timing)
        await again.lock()
        assert again.fencing_token > token, "the fencing counter keeps growing across grants"
        await again.unlock()
        _eq(await b.list(""), [], "a lock record is not listed, and keeps no folder visible")

    # Folders are data: a folder segment may start with "_", and list shows it.
    await b.put(Entry("a/_x/k", b"in"))
    await b.put(Entry("_top/k", b"top"))
    _eq(await b.get("a/_x/k"), Entry("a/_x/k", b"in"), "a key inside folder a/_x/ is readable")
    _eq(await b.list("a/"), ["_x/"], "folder _x/ is listed: only names without '/' can be lock records")
    _eq(await b.list("a/_x/"), ["k"], "folder a/_x/ lists its key")
    _eq(await b.list("a/_x"), ["k"], "a '_' folder without its trailing '/' is the same folder")
    _eq(await b.list(""), ["_top/", "a/"], "a top-level '_' folder is listed too")
    await b.delete("a/_x/k")
    await b.delete("_top/k")
    _eq(await b.list(""), [], "emptied '_' folders vanish like any other")

    # Sort-key limits: a record's Key is its last segment (up to 1024 bytes), a pointer's Key is a
    # folder segment plus "/" (so a folder segment is at most 1023 bytes).
    long_name = "n/" + "k" * 1024
    await b.put(Entry(long_name, b"v"))
    _eq(await b.get(long_name), Entry(long_name, b"v"), "a 1024-byte last segment is a valid key")
    _eq(await b.list("n/"), ["k" * 1024], "the 1024-byte name is listed")
    await b.delete(long_name)
    await _refused("put with a 1024-byte folder segment", lambda: b.put(Entry("f" * 1024 + "/k", b"v")))
    await _refused("get with a 1024-byte folder segment", lambda: b.get("f" * 1024 + "/k"))
    await _refused("list of a 1024-byte folder", lambda: b.list("f" * 1024 + "/"))
    folder = "f" * 1023 + "/k"
    await b.put(Entry(folder, b"v"))
    _eq(await b.list(""), ["f" * 1023 + "/"], "a 1023-byte folder segment fits its pointer")
    await b.delete(folder)
    _eq(await b.list(""), [], "the store is empty again")


async def exercise_ha_backend(b: HABackend, b2: HABackend) -> None:
    """Vault's ExerciseHABackend: two nodes contend for one lock.

    ``b`` and ``b2`` may be the same backend object (two locks then act as two nodes).
    Uses short timings so the suite stays quick.
    """
    timing = {"ttl": 2.0, "renew_interval": 0.5, "watch_interval": 0.5, "retry_interval": 0.1}
    lock = b.lock_with("foo", "bar", **timing)
    lost = await lock.lock()
    assert lost is not None, "lock() without a stop event returns the leadership-lost event"
    assert not lost.is_set(), "a fresh holder has not lost the lock"
    token1 = lock.fencing_token
    assert isinstance(token1, int) and not isinstance(token1, bool), "the fencing token is a plain int"

    # The other node sees the holder and its value.
    lock2 = b2.lock_with("foo", "baz", **timing)
    _eq(await lock2.value(), (True, "bar"), "value() from another node names the current holder")

    # A contender with a stop event gives up when it is set, returning None.
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    _eq(await lock2.lock(stop), None, "a contender whose stop event fires returns None")

    # A blocked contender gets the lock as soon as the holder unlocks.
    waiter = asyncio.create_task(lock2.lock())
    await asyncio.sleep(0.3)
    assert not waiter.done(), "the contender blocks while the lock is held"
    await lock.unlock()
    try:
        lost2 = await asyncio.wait_for(waiter, timeout=5)
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    assert lost2 is not None and not lost2.is_set(), "the contender holds the lock after the unlock"
    _eq(await lock.value(), (True, "baz"), "value() now names the new holder")
    assert lock2.fencing_token > token1, "every grant gets a larger fencing token"
    await lock2.unlock()
    _eq(await lock.value(), (False, ""), "after the last unlock nobody holds the lock")

    # Lock records are not data: they never show in list, and never keep an emptied folder alive.
    if isinstance(b, Backend):
        await b.put(Entry("svc/config", b"c"))
        held = b.lock_with("svc/leader", "n1", **timing)
        await held.lock()
        _eq(await b.list("svc/"), ["config"], "a held lock's record is not listed")
        await b.delete("svc/config")
        _eq(await b.list(""), [], "a folder holding only a lock record is empty")
        _eq(await held.value(), (True, "n1"), "deleting data beside a lock leaves the lock alone")
        await held.unlock()
