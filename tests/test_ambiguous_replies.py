"""Writes whose reply is lost must be answered honestly: a write that landed is reported as landed.

The ambiguous failure: the engine applies a write, the connection drops before its reply arrives,
and botocore sends the same request again. For an unconditional write the resend is harmless. For a
conditional one the resend's condition now fails *on our own write*: a CAS create finds "the key
exists", an update finds "another version", an idempotency claim finds "in progress by another".
Reporting that as a conflict is wrong twice over: the caller is told it lost although its value is
stored, and a read-modify-write (``update``, ``atomic``) that retries on conflict applies its change
a second time.

Each test drives the real DynamoDBBackend through a :class:`~kvstore.testing.faults.FaultProxy`
whose ``reset_connection(after_forward=True, times=1)`` lets the request reach DynamoDB Local and
drops its reply, and checks the outcome through a second backend straight on the engine. Every
test runs several rounds, each with its own lost reply (alternately a TCP reset and a clean close),
and checks in every round that the fault fired and the request really was sent again, so a pass is
neither luck nor a fault that never happened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from kvstore import ABSENT, Check, ConditionalBackend, Entry, Fence, Operation, TxnEntry, VersionedEntry, Write
from kvstore.dynamodb import DynamoDBBackend
from kvstore.recipes import (
    IdempotencyStore,
    Status,
    Txn,
    atomic,
    create,
    delete_versioned,
    get_versioned,
    idempotent,
    payload_hash,
    put_versioned,
    update,
)
from kvstore.testing.faults import Fault, FaultProxy, ResetHow

pytestmark = pytest.mark.timeout(120)

#: Rounds per test, each with one lost reply; each costs about one botocore retry backoff (< 1 s).
ROUNDS = 8


@dataclass
class Rig:
    """A proxy, a backend through it, and a clean backend on the same table."""

    proxy: FaultProxy
    faulty: DynamoDBBackend
    clean: DynamoDBBackend

    @contextlib.asynccontextmanager
    async def reply_lost(
        self, operation: str, round_: int, *, sends: int = 2, exact: bool = True, armed: bool = True
    ) -> AsyncIterator[Callable[[], None]]:
        """Drop the reply of one ``operation`` inside the block; check it fired and was resent.

        The fault is armed on entry (the next ``operation`` loses its reply), or, with
        ``armed=False``, when the block calls the function it gets. ``sends`` is how many
        ``operation`` requests the block forwards: the one whose reply was lost, the SDK's resend,
        and any the block sends besides (``exact=False``: at least that many).
        """
        before = self.proxy.stats()[operation].forwarded
        how: ResetHow = "rst" if round_ % 2 == 0 else "close"
        faults: list[Fault] = []

        def arm() -> None:
            faults.append(self.proxy.reset_connection(after_forward=True, how=how, operations={operation}, times=1))

        if armed:
            arm()
        try:
            yield arm
        finally:
            for fault in faults:
                fault.cancel()
        assert sum(f.fired for f in faults) == 1, f"the {operation} reply was not dropped"
        sent = self.proxy.stats()[operation].forwarded - before
        if exact:
            assert sent == sends, f"{operation} was forwarded {sent} times, expected {sends}"
        else:
            assert sent >= sends, f"{operation} was forwarded {sent} times, expected at least {sends}"


class ArmBefore(ConditionalBackend):
    """Delegates to ``inner``, calling ``arm()`` right before its ``nth`` commit (1-based).

    Puts a lost reply on a later write of a recipe (a takeover after a refused create, a completion
    after a claim) without touching the recipe.
    """

    def __init__(self, inner: ConditionalBackend, nth: int) -> None:
        self._inner = inner
        self._nth = nth
        self.arm: Callable[[], None] = lambda: None
        self.commits = 0

    def reset(self, arm: Callable[[], None]) -> None:
        """Count commits from zero again and arm ``arm`` before the ``nth``."""
        self.arm, self.commits = arm, 0

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        return await self._inner.get_versioned(key)

    async def commit(
        self, writes: Sequence[Write], checks: Sequence[Check] = (), *, fence: Fence | None = None
    ) -> dict[str, str]:
        self.commits += 1
        if self.commits == self._nth:
            self.arm()
        return await self._inner.commit(writes, checks, fence=fence)


@pytest.fixture
async def rig(dynamodb_conf: dict[str, str]) -> AsyncIterator[Rig]:
    """The rig; ``environ={}`` because the session's AWS_DYNAMODB_ENDPOINT would win over the proxy."""
    async with (
        FaultProxy(dynamodb_conf["endpoint"]) as proxy,
        await DynamoDBBackend.create(dynamodb_conf, environ={}) as clean,
        await DynamoDBBackend.create({**dynamodb_conf, "endpoint": proxy.endpoint}, environ={}) as faulty,
    ):
        # One request of each shape first: DynamoDB Local's first request of a kind can be slow.
        version = await create(faulty, Entry("warm/up", b""))
        await put_versioned(faulty, Entry("warm/up", b"1"), if_version=version)
        await faulty.transaction(
            [TxnEntry(Operation.PUT, Entry("warm/a", b"")), TxnEntry(Operation.DELETE, Entry("warm/up"))]
        )
        await faulty.delete("warm/a")
        yield Rig(proxy, faulty, clean)


def parent_and_name(key: str) -> tuple[str, str]:
    """The ``list`` prefix that shows ``key`` and the name it is listed under."""
    parent, _, name = key.rpartition("/")
    return (parent + "/" if parent else ""), name


# -- (a) versioned create ------------------------------------------------------------------------


@pytest.mark.parametrize("omits_old_item", [False, True], ids=["all-old", "no-old-item"])
async def test_create_whose_reply_is_lost_succeeds(rig: Rig, omits_old_item: bool) -> None:
    """The resend finds the key existing with our own version: that is our create, not a conflict.

    ``no-old-item``: the engine leaves the item out of the refusal (as some engines do), so the
    backend learns the current version from a read.
    """
    if omits_old_item:
        rig.proxy.strip_all_old()
    for i in range(ROUNDS):
        key = [f"amb-create-{i}", f"c/create-{i}", f"c/d/e/create-{i}"][i % 3]
        value = f"value {i}".encode()
        async with rig.reply_lost("PutItem", i):
            if i % 2 == 0:
                version = await create(rig.faulty, Entry(key, value))
            else:
                version = await put_versioned(rig.faulty, Entry(key, value), if_version=ABSENT)
        assert await get_versioned(rig.clean, key) == VersionedEntry(Entry(key, value), version)
        parent, name = parent_and_name(key)
        assert name in await rig.clean.list(parent)
        # The returned token is the live one: a CAS with it goes through.
        await put_versioned(rig.clean, Entry(key, b"next"), if_version=version)


# -- (b) versioned update ------------------------------------------------------------------------


async def test_update_whose_reply_is_lost_succeeds(rig: Rig) -> None:
    """The resend finds our own new version where it expected the old one: our update landed."""
    key = "u/doc"
    version = await create(rig.clean, Entry(key, b"0"))
    for i in range(ROUNDS):
        value = str(i + 1).encode()
        async with rig.reply_lost("PutItem", i):
            new = await put_versioned(rig.faulty, Entry(key, value), if_version=version)
        assert new != version
        assert await get_versioned(rig.clean, key) == VersionedEntry(Entry(key, value), new)
        version = new


async def test_update_recipe_applies_its_change_once(rig: Rig) -> None:
    """``update`` retries on conflict from the conflict's value, so a conflict with its own landed
    write would increment twice. Exactly once per call, and it returns what is stored."""
    key = "u/counter"
    await create(rig.clean, Entry(key, b"0"))
    calls = 0

    def incr(value: bytes | None) -> bytes:
        nonlocal calls
        calls += 1
        return str(int(value or b"0") + 1).encode()

    for i in range(ROUNDS):
        async with rig.reply_lost("PutItem", i, exact=False):  # a second write is checked below
            result = await update(rig.faulty, key, incr)
        stored = await get_versioned(rig.clean, key)
        assert stored is not None and stored.entry.value == str(i + 1).encode(), "the change was applied twice"
        assert result == stored
    assert calls == ROUNDS


async def test_versioned_delete_whose_reply_is_lost_succeeds(rig: Rig) -> None:
    """The resend of a conditional delete finds the key gone (our delete took it): not a conflict.

    A delete leaves no version token behind to recognise, so the backend has a rule of its own: a
    resent conditional delete that finds the key absent succeeded.
    """
    for i in range(ROUNDS):
        key = [f"d/{i}/doomed", f"doomed-{i}"][i % 2]
        version = await create(rig.clean, Entry(key, b"x"))
        # exact=False: pruning the emptied folders sends conditional DeleteItems of its own.
        async with rig.reply_lost("DeleteItem", i, exact=False):
            await delete_versioned(rig.faulty, key, if_version=version)
        assert await rig.clean.get(key) is None
        assert await rig.clean.list("d/") == []  # its folder was pruned


# -- (c) multi-key atomic blocks (TransactWriteItems) ---------------------------------------------


async def test_atomic_transfer_whose_reply_is_lost_commits_once(rig: Rig) -> None:
    """A resent transaction is the same transaction (botocore resends its ClientRequestToken): it
    must not be refused as a conflict with itself, nor the block run and applied again."""
    await rig.clean.put(Entry("bank/a", b"100"))
    await rig.clean.put(Entry("bank/b", b"0"))
    runs = 0

    async def transfer(txn: Txn) -> int:
        nonlocal runs
        runs += 1
        a = int(await txn.get("bank/a") or b"0")
        b = int(await txn.get("bank/b") or b"0")
        txn.put("bank/a", str(a - 1).encode())
        txn.put("bank/b", str(b + 1).encode())
        return a - 1

    for i in range(ROUNDS):
        async with rig.reply_lost("TransactWriteItems", i):
            left = await atomic(rig.faulty, transfer)
        assert left == 99 - i
        assert await rig.clean.get("bank/a") == Entry("bank/a", str(99 - i).encode())
        assert await rig.clean.get("bank/b") == Entry("bank/b", str(i + 1).encode())
    assert runs == ROUNDS, "the block ran again after its own commit"


async def test_atomic_create_of_several_keys_whose_reply_is_lost_succeeds(rig: Rig) -> None:
    """A block creating keys it saw absent: the resend finds them present, with our values."""
    for i in range(ROUNDS):
        keys = [f"pair/{i}/left", f"pair/{i}/right", f"other-{i}"]
        seen: list[list[bytes | None]] = []

        async def create_all(txn: Txn, keys: list[str] = keys, seen: list[list[bytes | None]] = seen) -> None:
            seen.append([await txn.get(k) for k in keys])
            for k in keys:
                txn.put(k, k.encode())

        async with rig.reply_lost("TransactWriteItems", i):
            await atomic(rig.faulty, create_all)
        assert seen == [[None, None, None]], "the block ran again after its own commit"
        for k in keys:
            assert await rig.clean.get(k) == Entry(k, k.encode())
        assert f"{i}/" in await rig.clean.list("pair/")


async def test_plain_transaction_whose_reply_is_lost_lands(rig: Rig) -> None:
    for i in range(ROUNDS):
        await rig.clean.put(Entry(f"t/{i}/old", b"x"))
        async with rig.reply_lost("TransactWriteItems", i):
            await rig.faulty.transaction(
                [TxnEntry(Operation.PUT, Entry(f"t/{i}/new", b"y")), TxnEntry(Operation.DELETE, Entry(f"t/{i}/old"))]
            )
        assert await rig.clean.get(f"t/{i}/new") == Entry(f"t/{i}/new", b"y")
        assert await rig.clean.get(f"t/{i}/old") is None
        assert await rig.clean.list(f"t/{i}/") == ["new"]


# -- (d) idempotency ------------------------------------------------------------------------------


async def test_idempotent_call_whose_claim_reply_is_lost_runs_once_as_owner(rig: Rig) -> None:
    """The claim's resend finds the claim itself: the caller is the owner (not AlreadyInProgress),
    runs the body once and stores its result; a duplicate call replays it."""
    store = IdempotencyStore(rig.faulty)
    observer = IdempotencyStore(rig.clean)
    runs: list[str] = []

    @idempotent(store, key="order_id", name="charge")
    async def charge(order_id: str) -> dict[str, Any]:
        runs.append(order_id)
        return {"charged": order_id}

    for i in range(ROUNDS):
        order = f"order-{i}"
        async with rig.reply_lost("PutItem", i, sends=3):  # the claim (lost, resent), the completion
            assert await charge(order) == {"charged": order}
        assert runs == [f"order-{j}" for j in range(i + 1)]
        record = await observer.get(f"charge#{payload_hash(order)}")
        assert record is not None and record.status is Status.COMPLETED
        assert record.response == {"charged": order}
        assert await charge(order) == {"charged": order}  # replayed, not run again
        assert len(runs) == i + 1


async def test_claim_whose_reply_is_lost_is_won_and_completes(rig: Rig) -> None:
    store = IdempotencyStore(rig.faulty)
    for i in range(ROUNDS):
        async with rig.reply_lost("PutItem", i):
            claim = await store.claim(f"job-{i}", payload_hash="h")
        assert claim.claimed and claim.record.status is Status.INPROGRESS
        stored = await get_versioned(rig.clean, store.record_key(f"job-{i}"))
        assert stored is not None and claim.record.version == stored.version
        done = await store.complete(claim, {"n": i})
        assert done.status is Status.COMPLETED


async def test_takeover_whose_reply_is_lost_is_won(rig: Rig) -> None:
    """Taking over a timed-out claim is a write conditional on the dead claimer's version (after a
    refused create); its resend finds our own claim there."""
    now = [1_700_000_000.0]

    def clock() -> float:
        return now[0]

    backend = ArmBefore(rig.faulty, nth=2)  # 1: the refused create, 2: the takeover
    dead = IdempotencyStore(rig.clean, in_progress_timeout=10, clock=clock)
    alive = IdempotencyStore(backend, in_progress_timeout=10, clock=clock)
    for i in range(ROUNDS):
        old = await dead.claim(f"job-{i}")
        assert old.claimed
        now[0] += 11  # past the dead claimer's in-progress deadline
        async with rig.reply_lost("PutItem", i, sends=3, armed=False) as arm:
            backend.reset(arm)
            claim = await alive.claim(f"job-{i}")
        assert claim.claimed and claim.record.owner != old.record.owner
        done = await alive.complete(claim, i)
        assert await dead.get(f"job-{i}") == done
        assert not await dead.release(old)  # the dead claimer cannot undo the takeover


async def test_completion_whose_reply_is_lost_is_reported_done(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    store = IdempotencyStore(rig.faulty)
    for i in range(ROUNDS):
        claim = await store.claim(f"job-{i}")
        async with rig.reply_lost("PutItem", i):
            done = await store.complete(claim, {"n": i})
        stored = await get_versioned(rig.clean, store.record_key(f"job-{i}"))
        assert stored is not None and done.version == stored.version
        assert done.status is Status.COMPLETED and done.response == {"n": i}

    # Through the decorator: the completion (the second commit, after the body) loses its reply.
    backend = ArmBefore(rig.faulty, nth=2)
    runs: list[int] = []

    @idempotent(IdempotencyStore(backend), key="n", name="work")
    async def work(n: int) -> int:
        runs.append(n)
        return n * 2

    with caplog.at_level(logging.WARNING, logger="kvstore.recipes.idempotency"):
        for i in range(ROUNDS):
            async with rig.reply_lost("PutItem", i, sends=3, armed=False) as arm:
                backend.reset(arm)
                assert await work(i) == i * 2
            assert await work(i) == i * 2  # replayed
    assert runs == list(range(ROUNDS))
    assert not [r for r in caplog.records if "taken over" in r.getMessage()], "a landed result reported lost"


# -- (e) plain put and delete ------------------------------------------------------------------------


async def test_plain_put_and_delete_whose_replies_are_lost_end_right(rig: Rig) -> None:
    for i in range(ROUNDS):
        key = [f"p/{i}/k", f"top-{i}", f"p/q/{i}/k"][i % 3]
        parent, name = parent_and_name(key)
        async with rig.reply_lost("BatchWriteItem", i, exact=False):  # pointers may go in a batch of their own
            await rig.faulty.put(Entry(key, b"v"))
        assert await rig.clean.get(key) == Entry(key, b"v")
        assert name in await rig.clean.list(parent)

        async with rig.reply_lost("BatchWriteItem", i + 1, exact=False):  # pruning may send more
            await rig.faulty.delete(key)
        assert await rig.clean.get(key) is None
        assert name not in await rig.clean.list(parent)
        assert await rig.clean.list("p/") == []  # every folder it emptied was pruned
