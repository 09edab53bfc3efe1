"""The distributed mutex (kvstore.recipes.mutex) on both backends, and across OS processes.

Lease times are short (well under two seconds) so takeovers happen quickly; nothing here asserts
how fast anything is, only what happens and in which order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import pytest

from kvstore import (
    AccessDenied,
    BackendError,
    ConfigError,
    EngineUnavailable,
    Entry,
    FenceRejected,
    InvalidKey,
    LockNotHeld,
    LockTimeout,
    Operation,
    RequestRejected,
    TableNotActive,
    TableNotFound,
    Write,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.recipes import Mutex, MutexState, MutexStatus

Store = InmemBackend | DynamoDBBackend

class Timings(TypedDict):
    ttl: float
    renew_interval: float
    retry_interval: float


#: Quick lock timings for tests: a 1 s lease renewed every 0.2 s, waiters looking every 0.05 s.
FAST: Timings = {"ttl": 1.0, "renew_interval": 0.2, "retry_interval": 0.05}
#: Where the worker processes import kvstore from (this checkout).
REPO = str(Path(__file__).resolve().parents[1])


def states(m: Mutex) -> tuple[MutexState, bool]:
    return m.state, m.locked


async def test_acquire_status_release(backend: Store) -> None:
    m = Mutex(backend, "jobs/nightly", value="node-a", **FAST)
    assert states(m) == (MutexState.UNLOCKED, False)
    assert await m.status() == MutexStatus(held=False, holder="", mine=False)
    with pytest.raises(LockNotHeld):
        _ = m.fencing_token
    token = await m.acquire()
    assert isinstance(token, int) and token == m.fencing_token
    assert states(m) == (MutexState.LOCKED, True) and not m.lost.is_set()
    assert await m.status() == MutexStatus(held=True, holder="node-a", mine=True)
    assert await m.acquire() == token  # acquiring again while held is a no-op
    assert await backend.list("jobs/") == []  # the lock record is hidden
    await m.release()
    assert m.state is MutexState.UNLOCKED
    assert await m.status() == MutexStatus(held=False, holder="", mine=False)
    with pytest.raises(LockNotHeld):
        await m.release()


async def test_contender_times_out_then_gets_it_on_release(backend: Store) -> None:
    a = Mutex(backend, "res", value="a", **FAST)
    b = Mutex(backend, "res", value="b", **FAST)
    token_a = await a.acquire()
    with pytest.raises(LockTimeout, match="held by 'a'"):
        await b.acquire(timeout=0.3)
    assert b.state is MutexState.UNLOCKED
    with pytest.raises(LockNotHeld):
        await b.release()  # only the holder can release
    assert (await b.status()).holder == "a"
    await a.release()
    token_b = await b.acquire(timeout=5)  # released: taken at once, no TTL to wait out
    assert token_b > token_a
    assert await a.status() == MutexStatus(held=True, holder="b", mine=False)
    await b.release()


async def test_zero_timeout_is_one_attempt(backend: Store) -> None:
    a = Mutex(backend, "once", timeout=0, **FAST)
    b = Mutex(backend, "once", timeout=0, **FAST)
    await a.acquire()
    with pytest.raises(LockTimeout):
        await b.acquire()
    await a.release()
    await b.acquire()
    await b.release()


async def test_context_manager_releases_even_on_error(backend: Store) -> None:
    async with Mutex(backend, "ctx", value="first", **FAST) as m:
        assert m.locked and (await m.status()).holder == "first"
    assert not (await m.status()).held
    with pytest.raises(RuntimeError):
        async with Mutex(backend, "ctx", **FAST):
            raise RuntimeError("boom")
    assert not (await m.status()).held


async def test_fencing_tokens_grow_and_fence_stale_holders(backend: Store) -> None:
    m = Mutex(backend, "fenced", **FAST)
    tokens = []
    for _ in range(3):
        tokens.append(await m.acquire())
        await m.release()
    assert tokens == sorted(set(tokens))
    await m.acquire()
    await backend.commit([Write(Operation.PUT, Entry("data", b"1"))], fence=m.fence)
    stale = m.fence
    await m.release()
    with pytest.raises(FenceRejected):
        await backend.commit([Write(Operation.PUT, Entry("data", b"2"))], fence=stale)
    assert await backend.get("data") == Entry("data", b"1")


async def test_stalled_holder_is_taken_over(backend: Store) -> None:
    # The holder renews less often than its lease lasts: it stalls, as a crashed process would.
    with pytest.warns(RuntimeWarning):
        stalled = Mutex(backend, "lease", value="stalled", ttl=0.6, renew_interval=5.0, retry_interval=0.05)
    waiter = Mutex(backend, "lease", value="waiter", ttl=0.6, renew_interval=0.1, retry_interval=0.05)
    await stalled.acquire()
    old = stalled.fence
    await waiter.acquire(timeout=10)
    # The stalled holder was told it lost before the waiter could take over.
    assert stalled.lost.is_set() and stalled.state is MutexState.LOST
    assert await waiter.status() == MutexStatus(held=True, holder="waiter", mine=True)
    await stalled.release()  # resets the stale object, never frees the new holder's grant
    assert (await waiter.status()).holder == "waiter"
    with pytest.raises(FenceRejected):
        await backend.commit([Write(Operation.PUT, Entry("x", b"stale"))], fence=old)
    await backend.commit([Write(Operation.PUT, Entry("x", b"fresh"))], fence=waiter.fence)
    await waiter.release()


async def test_cancelled_wait_leaves_nothing_behind(backend: Store) -> None:
    a = Mutex(backend, "c", **FAST)
    b = Mutex(backend, "c", **FAST)
    await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await a.release()
    c = Mutex(backend, "c", **FAST)
    await c.acquire(timeout=0.5)  # free at once: the cancelled waiter holds nothing
    await c.release()


async def test_bad_arguments(backend: Store) -> None:
    with pytest.raises(ConfigError):
        Mutex(backend, "m", timeout=-1)
    with pytest.raises(ConfigError):
        Mutex(backend, "m", check_interval=0)
    with pytest.raises(InvalidKey):
        Mutex(backend, "bad/", **FAST)
    m = Mutex(backend, "m", **FAST)
    with pytest.raises(ConfigError):
        await m.acquire(timeout=-0.5)


# -- a missing or unusable table --------------------------------------------------------------------


async def _delete_table(dynamo: DynamoDBBackend) -> None:
    await dynamo.table.client.delete_table(TableName=dynamo.table.name)


async def test_missing_table_fails_fast(dynamo: DynamoDBBackend) -> None:
    await _delete_table(dynamo)
    m = Mutex(dynamo, "m", timeout=30, **FAST)
    with pytest.raises(TableNotFound):
        await m.acquire()
    with pytest.raises(TableNotFound):
        await m.status()
    assert m.state is MutexState.UNLOCKED


async def test_table_deleted_while_waiting_ends_the_wait(dynamo: DynamoDBBackend) -> None:
    holder = Mutex(dynamo, "m", value="holder", ttl=30, renew_interval=5, retry_interval=0.05)
    await holder.acquire()
    waiter = Mutex(dynamo, "m", timeout=None, check_interval=0.2, **FAST)  # would wait forever
    waiting = asyncio.create_task(waiter.acquire())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await _delete_table(dynamo)
    with pytest.raises(TableNotFound):
        await asyncio.wait_for(waiting, 10)  # a generous bound: without the check it never ends
    with contextlib.suppress(TableNotFound):
        await holder.release()


async def test_table_not_active_is_reported(inmem: InmemBackend) -> None:
    inmem.fail("lock", TableNotActive("table 'kv' is UPDATING, not ACTIVE"))
    m = Mutex(inmem, "m", timeout=5, **FAST)
    with pytest.raises(TableNotActive):
        await m.acquire()
    inmem.fail("lock", None)

    holder = Mutex(inmem, "m", ttl=30, renew_interval=5, retry_interval=0.05)
    await holder.acquire()
    waiting = asyncio.create_task(Mutex(inmem, "m", check_interval=0.1, **FAST).acquire())
    await asyncio.sleep(0.2)
    inmem.fail("lock", TableNotActive("table 'kv' is UPDATING, not ACTIVE"))
    with pytest.raises(TableNotActive):
        await asyncio.wait_for(waiting, 10)
    inmem.fail("lock", None)
    await holder.release()


@pytest.mark.parametrize(
    "error",
    [
        RequestRejected("ValidationException: bad request", code="ValidationException"),
        AccessDenied("UnrecognizedClientException: unknown key", code="UnrecognizedClientException"),
        BackendError("SomethingNewException: ?", code="SomethingNewException"),
    ],
    ids=["rejected", "access-denied", "unknown-code"],
)
async def test_non_transient_engine_errors_end_the_wait(inmem: InmemBackend, error: BackendError) -> None:
    """Waiting cannot cure a refused request: it is raised, before or while waiting, not a LockTimeout."""
    inmem.fail("lock", error)
    m = Mutex(inmem, "m", timeout=5, **FAST)
    with pytest.raises(type(error)):
        await asyncio.wait_for(m.acquire(), 2)
    inmem.fail("lock", None)

    holder = Mutex(inmem, "m", ttl=30, renew_interval=5, retry_interval=0.05)
    await holder.acquire()
    waiting = asyncio.create_task(Mutex(inmem, "m", check_interval=0.1, **FAST).acquire())
    await asyncio.sleep(0.2)
    inmem.fail("lock", error)
    with pytest.raises(type(error)):
        await asyncio.wait_for(waiting, 10)
    inmem.fail("lock", None)
    await holder.release()


async def test_transient_engine_errors_are_waited_out(inmem: InmemBackend) -> None:
    inmem.fail("lock", EngineUnavailable("DynamoDB unreachable"))
    m = Mutex(inmem, "m", timeout=5, check_interval=0.1, **FAST)
    acquiring = asyncio.create_task(m.acquire())
    await asyncio.sleep(0.3)
    assert not acquiring.done()
    inmem.fail("lock", None)
    await asyncio.wait_for(acquiring, 5)
    assert m.locked
    await m.release()


# -- two OS processes --------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from kvstore.dynamodb import DynamoDBBackend
    from kvstore.recipes import Mutex

    async def main() -> None:
        conf, name = json.loads(sys.argv[1]), sys.argv[2]
        async with await DynamoDBBackend.create(conf) as backend:
            mutex = Mutex(backend, "jobs/exclusive", value=name, ttl=1.5, renew_interval=0.25,
                          retry_interval=0.05)
            print("WAITING", flush=True)
            token = await mutex.acquire()
            print(f"ACQUIRED {token}", flush=True)
            await mutex.lost.wait()  # hold (renewing in the background) until killed
            print("LOST", flush=True)

    asyncio.run(main())
    """
)


@contextlib.asynccontextmanager
async def worker(script: Path, conf: dict[str, str], name: str) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), json.dumps(conf), name,
        stdout=asyncio.subprocess.PIPE, env=env,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def expect_line(proc: asyncio.subprocess.Process, prefix: str, seconds: float) -> str:
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), seconds)).decode().strip()
    assert line.startswith(prefix), line
    return line


async def _readline(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    return await proc.stdout.readline()


async def test_two_processes_one_holds_and_a_kill_hands_over(
    dynamo: DynamoDBBackend, dynamodb_conf: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "mutex_worker.py"
    script.write_text(WORKER)
    async with worker(script, dynamodb_conf, "p1") as p1, worker(script, dynamodb_conf, "p2") as p2:
        procs = {"p1": p1, "p2": p2}
        for p in procs.values():
            await expect_line(p, "WAITING", 60)
        reads = {name: asyncio.ensure_future(_readline(p)) for name, p in procs.items()}
        done, _ = await asyncio.wait(reads.values(), timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "exactly one process acquires"
        first = next(name for name, r in reads.items() if r in done)
        second = "p2" if first == "p1" else "p1"
        first_token = int(reads[first].result().decode().split()[1])

        # The holder keeps renewing: for two whole leases the other process stays shut out.
        await asyncio.sleep(3.0)
        assert not reads[second].done()
        observer = Mutex(dynamo, "jobs/exclusive")
        assert await observer.status() == MutexStatus(held=True, holder=first, mine=False)

        procs[first].send_signal(signal.SIGKILL)  # no release, no clean-up: a crash
        await procs[first].wait()
        line = (await asyncio.wait_for(reads[second], 20)).decode().strip()
        assert line.startswith("ACQUIRED"), line
        assert int(line.split()[1]) > first_token
        assert await observer.status() == MutexStatus(held=True, holder=second, mine=False)
