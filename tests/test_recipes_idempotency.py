"""The idempotency store and the ``@idempotent`` decorator (kvstore.recipes.idempotency), both backends.

Expiry and in-progress timeouts are driven by a fake wall clock, so no test waits for them; the few
tests of waiting callers use real, short timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from kvstore import (
    AlreadyInProgress,
    Check,
    ConditionalBackend,
    ConfigError,
    Entry,
    Fence,
    IdempotencyKeyMissing,
    InvalidKey,
    InvalidValue,
    PayloadMismatch,
    ValueTooLarge,
    VersionConflict,
    VersionedEntry,
    Write,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.recipes import (
    Claim,
    CustomSerializer,
    DataclassSerializer,
    IdempotencyRecord,
    IdempotencyStore,
    Status,
    idempotent,
    payload_hash,
)

Store = InmemBackend | DynamoDBBackend


class FakeClock:
    """A wall clock (epoch seconds) that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: Store, clock: FakeClock) -> IdempotencyStore:
    return IdempotencyStore(backend, expires_after=100, in_progress_timeout=10, clock=clock)


def reads(backend: Store) -> int:
    if isinstance(backend, InmemBackend):
        return backend.statistics().calls.get("get", 0)
    return backend.table.requests["get_item"]


# -- the store ---------------------------------------------------------------------------------


async def test_claim_complete_and_replay(store: IdempotencyStore, backend: Store, clock: FakeClock) -> None:
    first = await store.claim("order-1", payload_hash="h1")
    assert first.claimed and first.record.status is Status.INPROGRESS
    assert first.record.expiry == clock.now + 100 and first.record.in_progress_until == clock.now + 10
    dup = await store.claim("order-1", payload_hash="h1")
    assert not dup.claimed and dup.record.status is Status.INPROGRESS
    assert dup.record.owner == first.record.owner and dup.record.version == first.record.version

    clock.advance(5)
    done = await store.complete(first, {"ok": True})
    assert done.status is Status.COMPLETED and done.response == {"ok": True}
    assert done.expiry == clock.now + 100  # the expiry restarts at completion
    again = await store.claim("order-1", payload_hash="h1")
    assert not again.claimed and again.record == done
    assert await store.get("order-1") == done
    assert await store.get("order-2") is None

    # The record is a plain JSON entry under the store's own folder.
    raw = await backend.get(store.record_key("order-1"))
    assert raw is not None and json.loads(raw.value)["status"] == "COMPLETED"
    assert store.record_key("order-1").startswith("_idempotency/")


async def test_records_live_in_their_own_listed_folder(store: IdempotencyStore, backend: Store) -> None:
    await backend.put(Entry("app/x", b"1"))
    claim = await store.claim("k")
    await store.complete(claim, 1)
    # An ordinary folder: every record stays reachable by list (and by fsck), none is hidden.
    assert await backend.list("") == ["_idempotency/", "app/"]
    assert len(await backend.list("_idempotency/")) == 1


async def test_stale_owner_cannot_complete_or_release(store: IdempotencyStore, clock: FakeClock) -> None:
    slow = await store.claim("job")
    clock.advance(11)  # past the in-progress timeout: the slow owner is presumed dead
    fresh = await store.claim("job")
    assert fresh.claimed and fresh.record.owner != slow.record.owner

    with pytest.raises(VersionConflict) as info:
        await store.complete(slow, "late result")
    assert info.value.current is not None  # what it found instead: the new owner's claim
    assert not await store.release(slow)  # and a stale release deletes nothing
    current = await store.get("job")
    assert current is not None and current.owner == fresh.record.owner and current.status is Status.INPROGRESS

    done = await store.complete(fresh, "result")
    assert (await store.get("job")) == done


async def test_live_in_progress_claim_is_not_taken_over(store: IdempotencyStore, clock: FakeClock) -> None:
    holder = await store.claim("job")
    clock.advance(9.5)
    other = await store.claim("job")
    assert not other.claimed and other.record.owner == holder.record.owner
    assert other.record.retry_after(clock.now) == pytest.approx(0.5)


async def test_expiry_is_enforced_without_a_sweeper(store: IdempotencyStore, backend: Store, clock: FakeClock) -> None:
    claim = await store.claim("once")
    await store.complete(claim, "v1")
    clock.advance(101)
    # The record is still stored (nobody swept it) but reads as EXPIRED and counts as absent.
    assert await backend.get(store.record_key("once")) is not None
    got = await store.get("once")
    assert got is not None and got.status is Status.EXPIRED
    again = await store.claim("once")
    assert again.claimed and again.record.status is Status.INPROGRESS


async def test_expired_record_takeover_race_has_one_winner(
    store: IdempotencyStore, backend: Store, clock: FakeClock
) -> None:
    if isinstance(backend, InmemBackend):
        backend.latency = 0.002
    claim = await store.claim("race")
    await store.complete(claim, "old")
    clock.advance(101)
    results = await asyncio.gather(*(store.claim("race") for _ in range(6)))
    assert sum(c.claimed for c in results) == 1
    winner = next(c for c in results if c.claimed)
    for c in results:
        if not c.claimed:
            assert c.record.owner == winner.record.owner


class LandsThenConflicts(ConditionalBackend):
    """A backend whose chosen commits land and then answer as a resend that does not recognise its
    own write would: the same writes committed again, refused with a VersionConflict.

    That is what a lost reply looks like on a backend (or an engine) that cannot tell its own landed
    write from another's; the recipe must still report the truth.
    """

    def __init__(self, inner: Store, *, ambiguous: set[int]) -> None:
        self._inner = inner
        self._ambiguous = ambiguous
        self.commits = 0

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        return await self._inner.get_versioned(key)

    async def commit(
        self, writes: Sequence[Write], checks: Sequence[Check] = (), *, fence: Fence | None = None
    ) -> dict[str, str]:
        self.commits += 1
        versions = await self._inner.commit(writes, checks, fence=fence)
        if self.commits in self._ambiguous:
            await self._inner.commit(writes, checks, fence=fence)  # the resend: raises VersionConflict
            raise AssertionError("the resend of a conditional write should have been refused")
        return versions


async def test_claim_and_completion_whose_replies_were_lost_are_reported_won(backend: Store, clock: FakeClock) -> None:
    """The record a refused claim finds carries this claim's owner token: it is this claim."""
    ambiguous = LandsThenConflicts(backend, ambiguous={1, 2})
    store = IdempotencyStore(ambiguous, expires_after=100, in_progress_timeout=10, clock=clock)
    claim = await store.claim("lost", payload_hash="h")
    assert claim.claimed and claim.record.status is Status.INPROGRESS
    stored = await backend.get_versioned(store.record_key("lost"))
    assert stored is not None and claim.record.version == stored.version  # what complete() needs
    done = await store.complete(claim, {"ok": 1})  # its reply is "lost" too
    stored = await backend.get_versioned(store.record_key("lost"))
    assert stored is not None and done.version == stored.version and done.status is Status.COMPLETED
    assert not (await store.claim("lost", payload_hash="h")).claimed  # and it replays

    # Someone else's record is still someone else's, and a stale completion is still refused.
    other = IdempotencyStore(backend, expires_after=100, in_progress_timeout=10, clock=clock)
    mine = await other.claim("taken")
    refused = await store.claim("taken")
    assert not refused.claimed and refused.record.owner == mine.record.owner
    clock.advance(11)
    fresh = await store.claim("taken")  # a takeover, commit 4 (not ambiguous)
    assert fresh.claimed
    with pytest.raises(VersionConflict):
        await other.complete(mine, "late")


async def test_lost_completion_through_the_decorator_is_not_reported_taken_over(
    backend: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = IdempotencyStore(LandsThenConflicts(backend, ambiguous={2}))  # 1: claim, 2: completion
    runs: list[int] = []

    @idempotent(store, key="n")
    async def double(n: int) -> int:
        runs.append(n)
        return 2 * n

    with caplog.at_level(logging.WARNING, logger="kvstore.recipes.idempotency"):
        assert await double(4) == 8
    assert await double(4) == 8
    assert runs == [4]
    assert not [r for r in caplog.records if "taken over" in r.getMessage()]


async def test_payload_mismatch(store: IdempotencyStore) -> None:
    claim = await store.claim("pay", payload_hash=payload_hash({"amount": 10}))
    await store.complete(claim, "charged")
    with pytest.raises(PayloadMismatch) as info:
        await store.claim("pay", payload_hash=payload_hash({"amount": 11}))
    assert info.value.key == "pay"
    assert isinstance(info.value.record, IdempotencyRecord) and info.value.record.response == "charged"
    same = await store.claim("pay", payload_hash=payload_hash({"amount": 10}))
    assert not same.claimed


async def test_release_and_forget(store: IdempotencyStore) -> None:
    claim = await store.claim("r")
    assert await store.release(claim)
    assert await store.get("r") is None
    assert not await store.release(claim)  # already gone
    again = await store.claim("r")
    await store.complete(again, 1)
    await store.forget("r")
    assert await store.get("r") is None
    assert (await store.claim("r")).claimed


async def test_misuse_is_refused(store: IdempotencyStore, backend: Store) -> None:
    holder = await store.claim("m")
    other = await store.claim("m")
    with pytest.raises(InvalidValue):
        await store.complete(other, "not mine")  # a claim this caller did not win
    with pytest.raises(IdempotencyKeyMissing):
        await store.claim("")
    with pytest.raises(ConfigError):
        IdempotencyStore(backend, prefix="trailing/")
    with pytest.raises(InvalidKey):
        IdempotencyStore(backend, prefix=" /root-marker")
    with pytest.raises(ConfigError):
        IdempotencyStore(backend, in_progress_timeout=0)
    assert (await store.get("m")) == holder.record


async def test_cache_keeps_completed_records_only(backend: Store, clock: FakeClock) -> None:
    store = IdempotencyStore(backend, expires_after=100, in_progress_timeout=10, cache_size=2, clock=clock)
    claim = await store.claim("c")
    before = reads(backend)
    await store.get("c")
    await store.get("c")
    assert reads(backend) - before == 2  # INPROGRESS is never cached
    await store.complete(claim, "done")
    before = reads(backend)
    assert (await store.get("c")) is not None
    assert not (await store.claim("c")).claimed
    assert reads(backend) == before  # served from the cache
    clock.advance(101)
    got = await store.get("c")  # expired in the cache: read again
    assert got is not None and got.status is Status.EXPIRED
    assert reads(backend) == before + 1


async def test_cache_is_bounded(backend: Store, clock: FakeClock) -> None:
    store = IdempotencyStore(backend, cache_size=2, clock=clock)
    for k in ("a", "b", "c"):
        await store.complete(await store.claim(k), k)
    before = reads(backend)
    await store.get("a")  # evicted as least recently used
    await store.get("c")
    assert reads(backend) - before == 1


async def test_clear_cache_makes_the_next_get_read_the_store(backend: Store, clock: FakeClock) -> None:
    store = IdempotencyStore(backend, cache_size=2, clock=clock)
    await store.complete(await store.claim("k"), "v")
    await backend.delete(store.record_key("k"))  # behind the store's back (another node's forget)
    assert await store.get("k") is not None  # still served from the cache
    before = reads(backend)
    store.clear_cache()
    assert await store.get("k") is None  # read again, and gone
    assert reads(backend) == before + 1


# -- the ALL_OLD fallback ------------------------------------------------------------------------


@pytest.fixture
def strip_all_old(dynamo: DynamoDBBackend) -> Iterator[list[str]]:
    """Remove the old item from conditional-failure replies, as DynamoDB may.

    DynamoDB Local 3.3.1 does return it for ReturnValuesOnConditionCheckFailure=ALL_OLD, so the
    fallback path is forced: a botocore ``after-call`` hook edits the parsed reply before botocore
    raises the error from it. Everything else is the engine's real answer.
    """
    stripped: list[str] = []

    def hook(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if parsed.pop("Item", None) is not None:
            stripped.append(model.name)

    events = dynamo.table.client.meta.events
    events.register("after-call.dynamodb.PutItem", hook, unique_id="strip-all-old")
    yield stripped
    events.unregister("after-call.dynamodb.PutItem", unique_id="strip-all-old")


async def test_duplicate_claim_without_all_old_reads_the_record(
    dynamo: DynamoDBBackend, strip_all_old: list[str], clock: FakeClock
) -> None:
    store = IdempotencyStore(dynamo, clock=clock)
    first = await store.claim("fb")
    before = dynamo.table.requests["get_item"]
    dup = await store.claim("fb")
    assert not dup.claimed and dup.record == first.record
    assert strip_all_old == ["PutItem"]  # the engine did send the item; we removed it
    assert dynamo.table.requests["get_item"] - before == 1  # the consistent-read fallback


async def test_duplicate_claim_with_all_old_needs_no_read(dynamo: DynamoDBBackend, clock: FakeClock) -> None:
    store = IdempotencyStore(dynamo, clock=clock)
    first = await store.claim("ao")
    before = dict(dynamo.table.requests)
    dup = await store.claim("ao")
    assert not dup.claimed and dup.record == first.record
    assert dynamo.table.requests["get_item"] == before.get("get_item", 0)
    assert dynamo.table.requests["put_item"] - before.get("put_item", 0) == 1  # one conditional write


# -- the decorator -------------------------------------------------------------------------------


async def test_concurrent_duplicates_run_the_body_once(backend: Store) -> None:
    store = IdempotencyStore(backend, in_progress_timeout=5)
    runs = 0

    @idempotent(store, key="order_id", on_in_progress="wait", wait_timeout=5)
    async def charge(order_id: str, amount: int) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)
        return {"order": order_id, "charged": amount, "run": runs}

    results = await asyncio.gather(*(charge("o-1", 5) for _ in range(8)))
    assert runs == 1
    assert results == [{"order": "o-1", "charged": 5, "run": 1}] * 8
    assert await charge("o-1", 5) == {"order": "o-1", "charged": 5, "run": 1}
    assert runs == 1


async def test_duplicate_in_progress_raises_with_retry_hint(backend: Store) -> None:
    store = IdempotencyStore(backend, in_progress_timeout=30)
    started = asyncio.Event()
    finish = asyncio.Event()

    @idempotent(store, key="job")
    async def work(job: str) -> str:
        started.set()
        await finish.wait()
        return job.upper()

    first = asyncio.create_task(work("j"))
    await started.wait()
    with pytest.raises(AlreadyInProgress) as info:
        await work("j")
    assert info.value.retry_after is not None and 25 < info.value.retry_after <= 30
    finish.set()
    assert await first == "J"
    assert await work("j") == "J"


async def test_waiter_takes_over_a_dead_claim(backend: Store) -> None:
    store = IdempotencyStore(backend, in_progress_timeout=0.3)
    runs = 0

    @idempotent(store, key=lambda x: x, name="dead-claim", on_in_progress="wait", wait_timeout=3)
    async def work(x: str) -> str:
        nonlocal runs
        runs += 1
        return x * 2

    # A claimer of the same key that crashed: it never completes. (The decorator's key is its
    # name, "#", and the hash of the selected material.)
    dead = await store.claim(f"dead-claim#{payload_hash('x')}")
    assert dead.claimed
    assert await work("x") == "xx"  # waited out the 0.3 s in-progress timeout, then took over
    assert runs == 1
    assert not await store.release(dead)  # the dead claimer cannot undo the takeover


async def test_waiter_gives_up_after_wait_timeout(backend: Store) -> None:
    store = IdempotencyStore(backend, in_progress_timeout=30)

    @idempotent(store, key=lambda: "k", name="stuck", on_in_progress="wait", wait_timeout=0.2)
    async def work() -> int:
        return 1

    held = await store.claim(f"stuck#{payload_hash('k')}")
    assert held.claimed
    with pytest.raises(AlreadyInProgress):
        await work()


async def test_failure_releases_the_claim(backend: Store) -> None:
    store = IdempotencyStore(backend)
    attempts = 0

    @idempotent(store, key="n")
    async def flaky(n: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("boom")
        return n + 1

    with pytest.raises(RuntimeError):
        await flaky(1)
    assert await flaky(1) == 2  # the failed run left no record behind
    assert await flaky(1) == 2
    assert attempts == 2


async def test_cancellation_releases_the_claim(backend: Store) -> None:
    store = IdempotencyStore(backend)

    @idempotent(store, key="n")
    async def slow(n: int) -> int:
        await asyncio.sleep(10)
        return n

    task = asyncio.create_task(slow(1))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.list("_idempotency/") == []


async def test_payload_validation_in_decorator(backend: Store) -> None:
    store = IdempotencyStore(backend)

    @idempotent(store, key="order.id", validate="order")
    async def place(order: dict[str, Any]) -> str:
        return f"placed {order['id']}"

    assert await place({"id": "A", "qty": 1}) == "placed A"
    assert await place({"id": "A", "qty": 1}) == "placed A"
    with pytest.raises(PayloadMismatch) as info:
        await place({"id": "A", "qty": 2})
    assert info.value.record.response == "placed A"


async def test_key_missing(backend: Store) -> None:
    store = IdempotencyStore(backend)

    @idempotent(store, key="order.id")
    async def place(order: dict[str, Any] | None) -> str:
        return "x"

    with pytest.raises(IdempotencyKeyMissing):
        await place({"qty": 1})
    with pytest.raises(IdempotencyKeyMissing):
        await place(None)

    @idempotent(store, key=lambda request: request.get("idempotency_key"))
    async def handle(request: dict[str, Any]) -> str:
        return "ok"

    with pytest.raises(IdempotencyKeyMissing):
        await handle({})
    assert await handle({"idempotency_key": "abc"}) == "ok"

    class Opaque:
        pass

    @idempotent(store)  # all arguments are the key: they must be JSON-serializable
    async def whole(x: object) -> str:
        return "ok"

    with pytest.raises(IdempotencyKeyMissing):
        await whole(Opaque())
    with pytest.raises(TypeError):
        await whole()  # type: ignore[call-arg]  # a call the function refuses fails as usual


async def test_result_too_large(backend: Store) -> None:
    store = IdempotencyStore(backend)
    runs = 0

    @idempotent(store, key="n")
    async def big(n: int) -> str:
        nonlocal runs
        runs += 1
        return "x" * (n * 1024)

    with pytest.raises(ValueTooLarge):
        await big(500)
    with pytest.raises(ValueTooLarge):
        await big(500)  # the claim was released: it runs (and fails to store) again
    assert runs == 2
    assert await big(1) == "x" * 1024


@dataclasses.dataclass(frozen=True)
class Receipt:
    order: str
    total: int


async def test_dataclass_and_custom_serializers_and_hook(backend: Store) -> None:
    store = IdempotencyStore(backend)
    hooked: list[tuple[Any, Status]] = []

    def hook(result: Any, record: IdempotencyRecord) -> Any:
        hooked.append((result, record.status))
        return result

    @idempotent(store, key="order", serializer=DataclassSerializer(Receipt), response_hook=hook)
    async def receipt(order: str) -> Receipt:
        return Receipt(order, 42)

    first = await receipt("o")
    replayed = await receipt("o")
    assert first == replayed == Receipt("o", 42) and isinstance(replayed, Receipt)
    assert hooked == [(Receipt("o", 42), Status.COMPLETED)]  # only replays go through the hook

    money = CustomSerializer[decimal.Decimal](dump=str, load=decimal.Decimal)

    @idempotent(store, key="x", serializer=money)
    async def price(x: str) -> decimal.Decimal:
        return decimal.Decimal("19.99")

    assert await price("a") == decimal.Decimal("19.99")
    assert await price("a") == decimal.Decimal("19.99")
    with pytest.raises(ConfigError):
        DataclassSerializer(dict)


async def test_claim_type_is_plain_data(store: IdempotencyStore) -> None:
    claim = await store.claim("d")
    assert isinstance(claim, Claim)
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.claimed = False  # type: ignore[misc]
