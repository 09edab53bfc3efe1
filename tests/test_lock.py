"""The HA lock (kvstore.lease over both lock stores), after Vault's lock tests and the issue's list.

Every test runs on InmemBackend and on DynamoDB Local. Two "nodes" are two lock objects: on
InmemBackend from one backend, on DynamoDB from two backends (two clients) on one table. Timings
are short (TTL 1 s) so the suite stays fast; the bounds asserted are the contract's ("learns it
lost within 3 s"), with margin, never speed measurements.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kvstore import Entry, Fence, FenceRejected, LockNotHeld
from kvstore.backend import HABackend, Lock
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.config import DynamoDBConfig
from kvstore.dynamodb.lock import DynamoDBLockStore
from kvstore.errors import BackendClosed, ConfigError, EngineUnavailable
from kvstore.fencing import fenced_delete, fenced_put
from kvstore.inmem import InmemBackend
from kvstore.keys import lock_key
from kvstore.lease import LeaseLock, LockRecord, LockStore, LockTimings
from kvstore.testing.faults import FaultProxy

#: A live holder: renews four times per TTL. Steps down 0.8 s after its last renewal was sent.
FAST: dict[str, float] = {"ttl": 1.0, "renew_interval": 0.25, "watch_interval": 0.25, "retry_interval": 0.05}
#: A stalled holder (renew interval beyond the TTL): it never renews in time.
STALLED: dict[str, float] = {"ttl": 1.0, "renew_interval": 5.0, "watch_interval": 0.25, "retry_interval": 0.05}

LOST_WITHIN = 3.0  # the bound for a holder to learn it lost


def stalled(backend: HABackend, key: str, value: str) -> Lock:
    """A lock whose holder never renews in time (accepted with a RuntimeWarning, as documented)."""
    with pytest.warns(RuntimeWarning, match="renew interval"):
        return backend.lock_with(key, value, **STALLED)


def store_calls(backend: Any) -> int:
    """How many requests the backend has sent to its lock records (and, on DynamoDB, any item)."""
    if isinstance(backend, InmemBackend):
        return backend.statistics().calls.get("lock", 0)
    requests = backend.table.requests
    return int(requests["get_item"] + requests["update_item"])


async def wait_set(event: asyncio.Event, seconds: float) -> float:
    """Wait for ``event`` at most ``seconds``; return when it was seen set (monotonic)."""
    await asyncio.wait_for(event.wait(), seconds)
    return time.monotonic()


def lock_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lock-") and not t.done()]


# -- Vault's ExerciseHABackend -----------------------------------------------------------------


async def test_contender_waits_while_held_and_gets_a_released_lock(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    lock = a.lock_with("foo", "bar", **FAST)
    lost = await lock.lock()
    assert lost is not None and not lost.is_set()
    assert await lock.value() == (True, "bar")

    # A second node cannot get it while the first renews: its attempt ends by its stop event.
    lock2 = b.lock_with("foo", "baz", **FAST)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.5, stop.set)  # longer than a TTL: renewals must keep it
    assert await lock2.lock(stop) is None
    assert not lost.is_set()

    await lock.unlock()
    assert lost.is_set(), "unlock must tell the holder to stop acting as leader"
    lost2 = await asyncio.wait_for(lock2.lock(), 5)
    assert lost2 is not None
    assert await lock2.value() == (True, "baz")
    assert lock2.fencing_token > lock.fencing_token
    await lock2.unlock()
    assert await lock2.value() == (False, "")


async def test_stop_event_returns_none(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    holder = a.lock_with("svc/leader", "a", **FAST)
    await holder.lock()
    contender = b.lock_with("svc/leader", "b", **FAST)

    already = asyncio.Event()
    already.set()
    assert await contender.lock(already) is None  # set before the call: no attempt at all

    later = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, later.set)
    assert await asyncio.wait_for(contender.lock(later), 5) is None
    with pytest.raises(LockNotHeld):
        _ = contender.fencing_token  # never granted
    assert await holder.value() == (True, "a")
    await holder.unlock()


# -- Vault's testDynamoDBLockTTL: a holder that stops renewing ----------------------------------


async def test_stalled_holder_is_replaced_after_ttl_and_knows_it_first(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    holder = stalled(a, "ttl/leader", "bar")
    lost = await holder.lock()
    assert lost is not None
    granted_at = time.monotonic()
    assert await holder.value() == (True, "bar")

    contender = b.lock_with("ttl/leader", "baz", **FAST)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(10, stop.set)  # bound the attempt
    lost2 = await contender.lock(stop)
    assert lost2 is not None, "the contender must take over a holder that stopped renewing"
    taken_at = time.monotonic()

    # The holder learned it lost before the contender was granted: no moment with two leaders.
    # It released the record when it stepped down (TTL minus its 0.2 s margin), so the contender
    # needed no whole TTL of silence; see test_silent_holder_is_replaced_only_after_a_whole_ttl.
    assert lost.is_set()
    assert taken_at - granted_at >= 0.8 - 0.05, "takeover only after the holder stepped down"
    assert taken_at - granted_at < LOST_WITHIN + 1.0
    assert isinstance(holder, LeaseLock) and not holder.held
    assert await contender.value() == (True, "baz")
    assert await holder.value() == (True, "baz"), "value() reports the holder, whoever asks"
    assert contender.fencing_token > holder.fencing_token
    await holder.unlock()  # conditional on its identity: must not release the new holder's grant
    assert await contender.value() == (True, "baz")
    assert not lost2.is_set()
    await contender.unlock()


async def test_stalled_holder_learns_it_lost_within_3s_without_a_contender(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    holder = stalled(a, "quiet/leader", "bar")
    start = time.monotonic()
    lost = await holder.lock()
    assert lost is not None
    seen = await wait_set(lost, LOST_WITHIN)
    assert seen - start < LOST_WITHIN
    await holder.unlock()  # waits for the release the holder sent when it stepped down
    assert await holder.value() == (False, "")


async def test_silent_holder_is_replaced_only_after_a_whole_ttl(ha_nodes: tuple[Any, Any]) -> None:
    """A holder that goes silent (it can neither renew nor release: dead, or cut off) is taken
    over only after its record version stayed unchanged for a whole TTL, and it knew first."""
    a, b = ha_nodes
    plain = a.lock_with("silent/leader", "bar", **FAST)
    assert isinstance(plain, LeaseLock)
    silent = _Silenceable(plain.store)
    holder = LeaseLock(silent, "silent/leader", "bar", plain.timings)
    lost = await holder.lock()
    silent.silence()
    silenced_at = time.monotonic()
    contender = b.lock_with("silent/leader", "baz", **FAST)
    assert await asyncio.wait_for(contender.lock(), 10) is not None
    taken_at = time.monotonic()
    assert lost.is_set(), "the silent holder stepped down before the takeover"
    assert taken_at - silenced_at >= FAST["ttl"] - 0.05, "takeover only after a whole TTL of silence"
    assert contender.fencing_token > holder.fencing_token
    await contender.unlock()
    silent.speak()
    await holder.unlock()


class _Silenceable(LockStore):
    """A LockStore whose calls hang once silenced (until spoken again)."""

    def __init__(self, inner: LockStore) -> None:
        self._inner = inner
        self._open = asyncio.Event()
        self._open.set()

    def silence(self) -> None:
        self._open.clear()

    def speak(self) -> None:
        self._open.set()

    async def read(self, key: str) -> LockRecord | None:
        await self._open.wait()
        return await self._inner.read(key)

    async def acquire(
        self, key: str, *, identity: str, value: str, ttl: float, expected_version: str | None
    ) -> LockRecord:
        await self._open.wait()
        return await self._inner.acquire(
            key, identity=identity, value=value, ttl=ttl, expected_version=expected_version
        )

    async def renew(self, key: str, *, identity: str) -> LockRecord | None:
        await self._open.wait()
        return await self._inner.renew(key, identity=identity)

    async def release(self, key: str, *, identity: str) -> None:
        await self._open.wait()
        await self._inner.release(key, identity=identity)


# -- Vault's testDynamoDBLockRenewal ------------------------------------------------------------


async def test_renewal_keeps_the_lock_and_stops_at_unlock(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    lock = a.lock_with("renew/leader", "bar", **FAST)
    lost = await lock.lock()
    assert lost is not None
    await asyncio.sleep(2.0)  # two TTLs: only renewals can have kept it
    assert not lost.is_set()
    assert await lock.value() == (True, "bar")

    await lock.unlock()
    assert lost.is_set()
    assert lock_tasks() == [], "unlock must stop the renew, watch and deadline tasks"
    before = store_calls(a)
    await asyncio.sleep(4 * FAST["renew_interval"])
    assert store_calls(a) == before, "no renewal (or watch) may be sent after unlock"
    assert await lock.value() == (False, "")

    new = b.lock_with("renew/leader", "baz", **FAST)
    assert await asyncio.wait_for(new.lock(), 5) is not None
    assert await new.value() == (True, "baz")
    await new.unlock()


async def test_renewal_after_release_never_recreates_the_record(dynamo: DynamoDBBackend) -> None:
    """A renewal that arrives late (after the release, or after the record vanished) must not
    resurrect a lock: renewals are UpdateItems conditioned on the holder's identity."""
    store = DynamoDBLockStore(dynamo.table)
    assert await store.renew("gone/leader", identity="ghost") is None
    assert await store.read("gone/leader") is None, "a renewal created a record"

    lock = dynamo.lock_with("late/leader", "v", **FAST)
    await lock.lock()
    assert isinstance(lock, LeaseLock)
    await lock.unlock()
    assert await store.renew("late/leader", identity=lock.identity) is None
    rec = await store.read("late/leader")
    assert rec is not None and rec.identity is None and rec.fence == lock.fencing_token


async def test_value_of_another_nodes_lock(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    observer = b.lock_with("other/leader", "observer", **FAST)
    assert await observer.value() == (False, "")
    holder = a.lock_with("other/leader", "node-a", **FAST)
    await holder.lock()
    assert await observer.value() == (True, "node-a")  # the holder's value, not the observer's
    await holder.unlock()
    assert await observer.value() == (False, "")


# -- fencing tokens -------------------------------------------------------------------------------


async def test_fencing_token_grows_across_unlock_relock_and_takeover(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    tokens: list[int] = []

    first = a.lock_with("fence/leader", "1", **FAST)
    await first.lock()
    tokens.append(first.fencing_token)
    await first.unlock()
    assert first.fencing_token == tokens[0], "the token of the latest grant stays readable"

    await first.lock()  # the same object again
    tokens.append(first.fencing_token)
    await first.unlock()

    holder = stalled(b, "fence/leader", "2")
    await holder.lock()
    tokens.append(holder.fencing_token)

    contender = a.lock_with("fence/leader", "3", **FAST)
    assert await asyncio.wait_for(contender.lock(), 10) is not None  # a takeover
    tokens.append(contender.fencing_token)
    await contender.unlock()
    await holder.unlock()

    assert all(type(t) is int for t in tokens), tokens
    assert tokens == sorted(set(tokens)), f"tokens must strictly grow: {tokens}"


async def test_lock_is_reentrant_and_concurrent_calls_make_one_grant(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    lock = a.lock_with("reent/leader", "v", **FAST)
    e1, e2 = await asyncio.gather(lock.lock(), lock.lock())
    assert e1 is not None and e1 is e2, "concurrent lock() calls share one grant"
    token = lock.fencing_token
    assert await lock.lock() is e1, "lock() while held returns the same event"
    assert lock.fencing_token == token, "and takes no new grant"
    loops = [t for t in lock_tasks() if t.get_name().split(":")[0] in ("lock-renew", "lock-watch", "lock-deadline")]
    assert len(loops) == 3, "one set of background tasks"
    await lock.unlock()
    await lock.unlock()  # idempotent
    assert lock_tasks() == []


async def test_relock_after_a_loss_takes_a_new_grant(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    lock = stalled(a, "relock/leader", "v")
    lost = await lock.lock()
    assert lost is not None
    await wait_set(lost, LOST_WITHIN)
    token = lock.fencing_token
    # The record is still in this lock's name, so it may take it again at once, with a new token.
    lost2 = await asyncio.wait_for(lock.lock(), 2)
    assert lost2 is not None and lost2 is not lost
    assert lock.fencing_token > token
    await lock.unlock()


async def test_unlock_lets_a_contender_in_without_waiting_a_ttl(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    long_ttl = {"ttl": 30.0, "renew_interval": 10.0, "retry_interval": 0.05}
    holder = a.lock_with("rel/leader", "a", **long_ttl)
    await holder.lock()
    contender = b.lock_with("rel/leader", "b", **long_ttl)
    waiting = asyncio.create_task(contender.lock())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await holder.unlock()
    # Far below the 30 s TTL a takeover would need: the release freed it.
    lost = await asyncio.wait_for(waiting, 5)
    assert lost is not None
    assert contender.fencing_token > holder.fencing_token
    await contender.unlock()


async def test_fenced_writes_with_a_stale_token_are_rejected(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    old = stalled(a, "job/leader", "old")
    await old.lock()
    stale = Fence("job/leader", old.fencing_token)
    await fenced_put(a, Entry("job/state", b"old"), fence=stale)

    new = b.lock_with("job/leader", "new", **FAST)
    assert await asyncio.wait_for(new.lock(), 10) is not None
    fresh = Fence("job/leader", new.fencing_token)
    await fenced_put(b, Entry("job/state", b"new"), fence=fresh)

    with pytest.raises(FenceRejected):
        await fenced_put(a, Entry("job/state", b"zombie"), fence=stale)
    with pytest.raises(FenceRejected):
        await fenced_delete(a, "job/state", fence=stale)
    with pytest.raises(FenceRejected):
        await fenced_put(a, Entry("job/other", b"zombie"), fence=stale)
    assert await b.get("job/state") == Entry("job/state", b"new")
    assert await b.get("job/other") is None
    assert await b.list("job/") == ["state"], "a rejected write leaves no folder pointer or key"

    await new.unlock()
    with pytest.raises(FenceRejected):  # released: the token is not current any more either
        await fenced_put(b, Entry("job/state", b"late"), fence=fresh)
    with pytest.raises(FenceRejected):  # a lock that never existed fences nothing through
        await fenced_put(b, Entry("job/state", b"x"), fence=Fence("job/nobody", 1))
    assert await b.get("job/state") == Entry("job/state", b"new")
    await old.unlock()


# -- failures ------------------------------------------------------------------------------------


async def test_unreachable_store_makes_the_holder_step_down_within_ttl(inmem: InmemBackend) -> None:
    """Vault's holder needs ~25 s of failed reads to notice; ours steps down on its own clock."""
    lock = inmem.lock_with("net/leader", "v", **FAST)
    lost = await lock.lock()
    assert lost is not None
    inmem.fail("lock", EngineUnavailable("partitioned"))
    start = time.monotonic()
    seen = await wait_set(lost, LOST_WITHIN)
    assert seen - start <= FAST["ttl"] + 0.5
    inmem.fail("lock", None)
    await lock.unlock()


async def test_a_short_outage_does_not_cost_the_lock(inmem: InmemBackend) -> None:
    lock = inmem.lock_with("blip/leader", "v", **FAST)
    lost = await lock.lock()
    assert lost is not None
    inmem.fail("lock", EngineUnavailable("blip"))
    await asyncio.sleep(0.3)  # one failed renewal, well inside the 0.8 s step-down limit
    inmem.fail("lock", None)
    await asyncio.sleep(1.5)
    assert not lost.is_set()
    await lock.unlock()


async def test_lock_on_a_closed_backend_raises_instead_of_retrying(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    lock = a.lock_with("closed/leader", "v", **FAST)
    await a.aclose()
    with pytest.raises(BackendClosed):
        await asyncio.wait_for(lock.lock(), 5)


async def test_holder_steps_down_when_its_backend_is_closed(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    lock = a.lock_with("closing/leader", "v", **FAST)
    lost = await lock.lock()
    assert lost is not None
    await a.aclose()
    await wait_set(lost, LOST_WITHIN)  # it can no longer renew or vouch for its lease
    with pytest.raises(BackendClosed):  # the release cannot be sent; the tasks stop all the same
        await lock.unlock()
    assert lock_tasks() == []


@pytest_asyncio.fixture
async def proxied(dynamodb_endpoint: str, dynamodb_conf: dict[str, str]) -> AsyncIterator[tuple[FaultProxy, Any]]:
    """A DynamoDB backend behind a fault proxy, with the SDK's own retries off."""
    async with FaultProxy(dynamodb_endpoint) as proxy:
        conf = {**dynamodb_conf, "endpoint": proxy.endpoint, "dynamodb_max_retries": "0", "read_timeout": "5"}
        # environ={}: the session exports AWS_DYNAMODB_ENDPOINT, which would win over the proxy.
        async with await DynamoDBBackend.create(conf, environ={}) as backend:
            yield proxy, backend


async def test_renewal_whose_reply_is_lost_does_not_cost_the_lock(proxied: tuple[FaultProxy, Any]) -> None:
    proxy, backend = proxied
    lock = backend.lock_with("amb/leader", "v", **FAST)
    lost = await lock.lock()
    assert lost is not None
    token = lock.fencing_token
    fault = proxy.reset_connection(after_forward=True, operations={"UpdateItem"}, times=2)
    await asyncio.sleep(2.0)
    assert fault.fired == 2, "both renewals must have landed with their replies lost"
    assert not lost.is_set()
    assert lock.fencing_token == token
    assert await lock.value() == (True, "v")
    await lock.unlock()


async def test_renewal_stuck_past_the_deadline_is_retried_in_time(proxied: tuple[FaultProxy, Any]) -> None:
    """A renewal that lands but whose reply hangs longer than the lease must not hold up the next
    attempt: each attempt gets a share of the time left, then the identity-conditioned retry wins."""
    proxy, backend = proxied
    lock = backend.lock_with("stuck/leader", "v", **FAST)
    lost = await lock.lock()
    assert lost is not None
    fault = proxy.stall(4.0, after_forward=True, operations={"UpdateItem"}, times=1)
    await asyncio.sleep(2.5)
    assert fault.fired == 1
    assert not lost.is_set()
    await lock.unlock()
    assert await lock.value() == (False, "")


async def test_acquire_whose_reply_is_lost_is_recognised(
    dynamodb_endpoint: str, dynamodb_conf: dict[str, str]
) -> None:
    """The SDK retries an acquire whose reply was lost; the retry's condition fails on our own
    write, and the failure's ALL_OLD item shows our identity: lock() takes a fresh grant at once
    instead of waiting a retry interval (here far longer than the test allows)."""
    async with (
        FaultProxy(dynamodb_endpoint) as proxy,
        await DynamoDBBackend.create({**dynamodb_conf, "endpoint": proxy.endpoint}, environ={}) as backend,
    ):
        lock = backend.lock_with("acq/leader", "v", ttl=60, renew_interval=20, retry_interval=60)
        fault = proxy.reset_connection(after_forward=True, operations={"UpdateItem"}, times=1)
        assert await asyncio.wait_for(lock.lock(), 10) is not None
        assert fault.fired == 1
        assert lock.fencing_token == 2, "the landed attempt was grant 1; ours is the next"
        assert await lock.value() == (True, "v")
        await lock.unlock()


# -- timings ------------------------------------------------------------------------------------


def test_timings_come_from_config_and_per_lock_overrides() -> None:
    conf = DynamoDBConfig.from_mapping(
        {"lock_ttl": "6", "lock_renew_interval": "2s", "lock_retry_interval": "0.5", "lock_watch_interval": "3"},
        environ={},
    )
    assert conf.lock_timings == LockTimings(ttl=6.0, renew_interval=2.0, watch_interval=3.0, retry_interval=0.5)
    assert conf.lock_timings.override(ttl=9.0).ttl == 9.0
    with pytest.raises(ConfigError):
        DynamoDBConfig.from_mapping({"lock_ttl": "-1"}, environ={})
    with pytest.raises(ConfigError):
        LockTimings(ttl=float("nan")).validated()


async def test_backend_timings_reach_the_lock() -> None:
    timings = LockTimings(ttl=6.0, renew_interval=2.0, watch_interval=3.0, retry_interval=0.5)
    backend = InmemBackend(lock_timings=timings)
    lock = backend.lock_with("t/leader", "v", retry_interval=0.1)
    assert isinstance(lock, LeaseLock)
    assert lock.timings == LockTimings(ttl=6.0, renew_interval=2.0, watch_interval=3.0, retry_interval=0.1)


def test_renew_interval_at_or_beyond_ttl_is_accepted_with_a_warning() -> None:
    backend = InmemBackend()
    for renew in (1.0, 2.0):
        with pytest.warns(RuntimeWarning, match="renew interval"):
            backend.lock_with("w/leader", "v", ttl=1.0, renew_interval=renew)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.lock_with("w/leader", "v", ttl=1.0, renew_interval=0.5)  # no warning
    with pytest.warns(RuntimeWarning):
        DynamoDBConfig.from_mapping({"lock_ttl": "2", "lock_renew_interval": "3"}, environ={})


async def test_lock_records_stay_hidden_from_list(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    await a.put(Entry("hid/data", b"x"))
    lock = a.lock_with("hid/leader", "v", **FAST)
    await lock.lock()
    assert await a.list("hid/") == ["data"]
    assert lock_key("hid/leader") == "hid/_leader"
    await lock.unlock()
