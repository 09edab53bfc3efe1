"""Multi-process failover on DynamoDB Local: three OS processes campaign; the leader is killed or paused.

Each candidate is ``tests/failover_worker.py``: while it leads it writes its fencing token to one
shared record with fenced writes and logs every write (accepted or rejected, with its token and
monotonic send/done times) to its own file. The test merges the logs and checks the history:

- grants happen one after another with strictly increasing fencing tokens;
- no write was accepted from a stale leader: when a grant with a larger token had completed
  before a write was even sent, that write was rejected (DynamoDB refused it, not the worker);
- accepted writes that do not overlap in time carry non-decreasing tokens, and the record ends
  with the last leader's token.

- leadership intervals never overlap: a term runs from its ``elected`` event to the last moment
  its worker saw ``term.is_leader`` say yes (``t_check`` of its writes), all on CLOCK_MONOTONIC,
  and no two terms of different workers intersect.

With SIGKILL another candidate takes over. With SIGSTOP/SIGCONT (a process pause longer than the
TTL) another takes over while the old leader sleeps; after SIGCONT the old leader must notice it
lost, and its writes must be rejected. Through a fault proxy per worker, the leader's link gets
delayed replies (half the TTL), then dropped replies to its writes (renewals land, their answers
are lost), then a partition (requests vanish). Every wait is bounded; child processes are killed
in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kvstore.dynamodb import DynamoDBBackend
from kvstore.testing.faults import FaultProxy

WORKER = Path(__file__).with_name("failover_worker.py")
TIMINGS = {"--ttl": "2.0", "--renew": "0.5", "--watch": "0.5", "--retry": "0.2", "--write-interval": "0.05"}
RECORD = "failover/record"
STARTUP_TIMEOUT = 60.0  # three Python processes importing aiobotocore on two cores, plus a JVM
FAILOVER_TIMEOUT = 20.0  # a TTL (2 s) plus a retry is the target; this only bounds the wait

T = TypeVar("T")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


class Worker:
    """One candidate process and its event log."""

    def __init__(self, ident: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.id = ident
        self.log = log
        self.proc = proc

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            with suppress(json.JSONDecodeError):  # a line cut short by SIGKILL
                out.append(json.loads(line))
        return out

    def leading(self) -> dict[str, Any] | None:
        """Its latest 'elected' event if no 'lost' followed it (by its own account)."""
        current = None
        for e in self.events():
            if e["event"] == "elected":
                current = e
            elif e["event"] == "lost":
                current = None
        return current

    def accepted(self, token: int | None = None) -> int:
        return sum(
            1 for e in self.events()
            if e["event"] == "write" and e["ok"] is True and (token is None or e["token"] == token)
        )


@contextmanager
def candidates(
    endpoint: str | list[str], table: str, tmp: Path, n: int = 3, extra: Sequence[str] = ()
) -> Iterator[list[Worker]]:
    """``n`` worker processes; ``endpoint`` may name one per worker (a fault proxy each)."""
    endpoints = [endpoint] * n if isinstance(endpoint, str) else endpoint
    workers: list[Worker] = []
    try:
        for i in range(n):
            ident = f"w{i}"
            log = tmp / f"{ident}.jsonl"
            stderr = (tmp / f"{ident}.stderr").open("wb")
            cmd = [sys.executable, str(WORKER), "--endpoint", endpoints[i], "--table", table, "--id", ident,
                   "--log", str(log), "--record", RECORD, *extra]
            for k, v in TIMINGS.items():
                cmd += [k, v]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL)
            stderr.close()
            workers.append(Worker(ident, log, proc))
        yield workers
    finally:
        for w in workers:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)  # a stopped process must be able to die
                w.proc.kill()
        for w in workers:
            with suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)


async def eventually(probe: Callable[[], T | None], within: float, what: str, workers: list[Worker]) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        for w in workers:
            if w.proc.poll() not in (None, -signal.SIGKILL):
                err = w.log.with_suffix(".stderr")
                pytest.fail(f"worker {w.id} exited with {w.proc.returncode}: {err.read_text()[-2000:]}")
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def stable_leader(workers: list[Worker], *, writes: int, above: int = 0) -> tuple[Worker, int] | None:
    """A live worker that leads with a token above ``above`` and has had ``writes`` writes accepted."""
    for w in workers:
        e = w.leading()
        if e is not None and e["token"] > above and w.proc.poll() is None and w.accepted(e["token"]) >= writes:
            return w, int(e["token"])
    return None


def all_ready(workers: list[Worker]) -> bool | None:
    return True if all(any(e["event"] == "campaigning" for e in w.events()) for w in workers) else None


def check_history(workers: list[Worker]) -> dict[str, Any]:
    """The invariants every run must keep (see the module docstring); returns the merged history."""
    events = sorted((e for w in workers for e in w.events()), key=lambda e: e["t"])
    grants = [e for e in events if e["event"] == "elected"]
    tokens = [g["token"] for g in grants]
    assert all(type(t) is int for t in tokens)
    assert tokens == sorted(set(tokens)), f"grant tokens must strictly increase in time: {tokens}"

    writes = [e for e in events if e["event"] in ("write", "probe")]
    accepted = [w for w in writes if w["ok"] is True]
    assert accepted, "no write was accepted at all"
    for w in accepted:
        newer = [g for g in grants if g["token"] > w["token"] and g["t"] < w["t_send"]]
        assert not newer, (
            f"stale write accepted: {w['id']} token {w['token']} sent at {w['t_send']:.3f} after "
            f"{newer[0]['id']} was granted token {newer[0]['token']} at {newer[0]['t']:.3f}"
        )
        mine = [g for g in grants if g["token"] == w["token"]]
        assert len(mine) == 1 and mine[0]["id"] == w["id"], "a write carried someone else's token"
    by_done = sorted(accepted, key=lambda w: w["t_done"])
    for i, a in enumerate(by_done):
        for b in by_done[i + 1:]:
            if a["t_done"] < b["t_send"]:
                assert a["token"] <= b["token"], f"token went back: {a} then {b}"
    terms = intervals(events)
    overlapping = overlaps(terms)
    assert not overlapping, f"two leaders at once: {overlapping}"
    return {"events": events, "grants": grants, "accepted": accepted, "writes": writes, "terms": terms}


def intervals(events: list[dict[str, Any]]) -> list[tuple[str, int, float, float]]:
    """Each term as (worker, token, elected at, last moment is_leader said yes)."""
    out = []
    for g in (e for e in events if e["event"] == "elected"):
        checks = [e["t_check"] for e in events if e["event"] == "write" and e["id"] == g["id"]
                  and e["token"] == g["token"] and e.get("t_check") is not None]
        out.append((g["id"], g["token"], g["t"], max([g["t"], *checks])))
    return out


def overlaps(terms: list[tuple[str, int, float, float]]) -> list[tuple[Any, Any]]:
    """Pairs of terms of different workers whose intervals intersect."""
    return [(a, b) for i, a in enumerate(terms) for b in terms[i + 1:]
            if a[0] != b[0] and min(a[3], b[3]) > max(a[2], b[2])]


async def last_token(store: DynamoDBBackend) -> int:
    entry = await store.get(RECORD)
    assert entry is not None
    return int(json.loads(entry.value)["token"])


async def test_sigkill_of_the_leader_fails_over(
    dynamo: DynamoDBBackend, dynamodb_endpoint: str, table_name: str, tmp_path: Path
) -> None:
    with candidates(dynamodb_endpoint, table_name, tmp_path) as workers:
        first, t1 = await eventually(lambda: stable_leader(workers, writes=5), STARTUP_TIMEOUT, "a leader", workers)
        await eventually(lambda: all_ready(workers), STARTUP_TIMEOUT, "every candidate campaigning", workers)
        await asyncio.sleep(0.5)  # let the others watch the live leader's record for a moment

        killed_at = time.monotonic()
        first.proc.kill()
        first.proc.wait(timeout=10)
        rest = [w for w in workers if w is not first]
        second, t2 = await eventually(
            lambda: stable_leader(rest, writes=5, above=t1), FAILOVER_TIMEOUT, "a new leader", workers
        )
        assert t2 > t1
        granted = next(g for g in second.events() if g["event"] == "elected" and g["token"] == t2)
        assert granted["t"] > killed_at
        final = await last_token(dynamo)

    history = check_history(workers)
    assert final == max(w["token"] for w in history["accepted"]) == t2
    # The killed leader may have led before (a term lost to CPU starvation at start-up is fine),
    # but never under a token above the one it was killed with.
    assert all(w["token"] <= t1 for w in history["accepted"] if w["id"] == first.id)


async def test_sigstop_of_the_leader_fails_over_and_its_late_writes_are_rejected(
    dynamo: DynamoDBBackend, dynamodb_endpoint: str, table_name: str, tmp_path: Path
) -> None:
    with candidates(dynamodb_endpoint, table_name, tmp_path) as workers:
        first, t1 = await eventually(lambda: stable_leader(workers, writes=5), STARTUP_TIMEOUT, "a leader", workers)
        await eventually(lambda: all_ready(workers), STARTUP_TIMEOUT, "every candidate campaigning", workers)
        await asyncio.sleep(0.5)

        os.kill(first.proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        rest = [w for w in workers if w is not first]
        _, t2 = await eventually(
            lambda: stable_leader(rest, writes=5, above=t1), FAILOVER_TIMEOUT, "a new leader", workers
        )
        resumed_at = time.monotonic()  # before the signal: the child may log before we read the clock
        os.kill(first.proc.pid, signal.SIGCONT)

        def noticed() -> dict[str, Any] | None:
            return next((e for e in first.events() if e["event"] == "probe" and e["t"] > resumed_at), None)

        probe = await eventually(noticed, 10, "the paused leader to notice it lost", workers)
        await asyncio.sleep(0.5)  # the new leader keeps writing meanwhile
        final = await last_token(dynamo)

    history = check_history(workers)
    lost = [e for e in first.events() if e["event"] == "lost" and e["t"] > resumed_at]
    assert lost and lost[0]["token"] == t1
    assert lost[0]["t"] - resumed_at < 3.0, "the paused leader must learn it lost within 3 s of waking"
    assert probe["ok"] is False and probe["err"] == "FenceRejected", "DynamoDB must refuse the zombie's write"
    late = [w for w in history["writes"] if w["id"] == first.id and w["token"] == t1 and w["t_send"] > stopped_at]
    assert all(w["ok"] is not True for w in late), f"a write of the paused leader was accepted: {late}"
    assert final >= t2  # the new leader (or a later one) wrote last
    assert final != t1


async def test_delayed_dropped_and_partitioned_leader_links(
    dynamo: DynamoDBBackend, dynamodb_endpoint: str, table_name: str, tmp_path: Path
) -> None:
    """Each worker reaches DynamoDB through a proxy of its own, so faults hit the leader only."""
    ttl = float(TIMINGS["--ttl"])
    async with AsyncExitStack() as stack:
        proxies = [await stack.enter_async_context(FaultProxy(dynamodb_endpoint)) for _ in range(3)]
        extra = ["--read-timeout", "2", "--max-retries", "1"]
        with candidates([p.endpoint for p in proxies], table_name, tmp_path, extra=extra) as workers:
            proxy_of = {w.id: p for w, p in zip(workers, proxies, strict=True)}
            leader, token = await eventually(
                lambda: stable_leader(workers, writes=5), STARTUP_TIMEOUT, "a leader", workers
            )
            await eventually(lambda: all_ready(workers), STARTUP_TIMEOUT, "every candidate campaigning", workers)
            await asyncio.sleep(0.5)

            # 1. Delayed replies: every request of the leader lands at once, its answer 1 s (half
            # the TTL) later. Paced renewals keep the lease; whoever leads, never two at once.
            proxy_of[leader.id].stall(ttl / 2, after_forward=True, duration=3.0)
            await asyncio.sleep(3.5)
            leader, token = await eventually(
                lambda: stable_leader(workers, writes=3), FAILOVER_TIMEOUT, "a leader after delays", workers
            )

            # 2. Dropped replies: the leader's UpdateItems (renewals, release) land and their answers
            # are lost. It steps down on its own clock and its release frees the record.
            proxy_of[leader.id].reset_connection(after_forward=True, operations={"UpdateItem"}, duration=ttl + 1)
            leader, token = await eventually(
                lambda: stable_leader(workers, writes=3, above=token), FAILOVER_TIMEOUT,
                "a new grant after dropped replies", workers,
            )
            await asyncio.sleep(ttl + 1)  # the fault is over

            # 3. Partition: the leader's requests vanish (held past its 2 s read timeout).
            partitioned = leader
            proxy_of[leader.id].stall(10.0, duration=3 * ttl)
            rest = [w for w in workers if w is not partitioned]
            _, token = await eventually(
                lambda: stable_leader(rest, writes=3, above=token), FAILOVER_TIMEOUT,
                "a new leader beside the partitioned one", workers,
            )
            await asyncio.sleep(3 * ttl)  # healed: the old leader must have stepped down meanwhile
            await eventually(
                lambda: stable_leader(workers, writes=3, above=token - 1), FAILOVER_TIMEOUT,
                "a leader after the partition healed", workers,
            )
            final = await last_token(dynamo)

    history = check_history(workers)
    assert final == max(w["token"] for w in history["accepted"])
    mine = [w for w in history["writes"] if w["id"] == partitioned.id and w["ok"] is True]
    assert mine, "the partitioned worker led before the partition"
