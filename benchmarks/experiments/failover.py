"""Experiment: leader failover after SIGKILL and other faults, kvstore's lease lock against a Vault-style lock.

Each *cluster* is three candidate processes campaigning for one lock on DynamoDB. kvstore's
candidates are the failover test's rig, ``tests/failover_worker.py``, unchanged: an
:class:`~kvstore.election.Election` whose leader writes its fencing token every 0.1 s and logs each
event (``elected``, ``write`` with ``t_check``, ``lost``) as JSON lines with CLOCK_MONOTONIC times
(one clock for every process of the machine). The Vault-style candidates (:class:`VaultStyleLock`,
a re-implementation of ``physical/dynamodb/dynamodb.go``'s lock: a conditional UpdateItem on the
contender's wall clock, no fencing) log the same events through the rig's ``EventLog``. The driver
faults the leader and measures **failover time**: from the fault to the next ``elected`` event.

Scenarios (``--scenarios``, a comma list; all but ``kill-ttl15`` by default), each ``--rounds``
times with TTL ``--ttl`` (renew = watch = TTL/3, retry 1 s, Vault's intervals):

``kill``       SIGKILL of the leader, kvstore and Vault-style side by side on the same engine.
``stop``       SIGSTOP of the leader until a new leader is elected, then SIGCONT.
``partition``  the leader's requests vanish (held by its FaultProxy past its read timeout) for 3 TTLs.
``drop``       the leader's UpdateItems land and their replies are lost, for TTL + 1 s.
``delay``      every reply to the leader 1 s late, for 3 s (a round may see no failover).
``skew``       nobody is faulted; one contender's wall clock runs a TTL ahead (both locks).
``kill-ttl15`` the SIGKILL comparison at Vault's default TTL of 15 s.

In the proxied scenarios each candidate reaches DynamoDB through a FaultProxy of its own (as in
tests/test_failover.py), with a read timeout of one TTL and one SDK retry. **Overlaps** count pairs
of leadership intervals of different candidates that intersect: for kvstore a term runs from
``elected`` to the last ``t_check`` at which ``term.is_leader`` said yes (as the test checks); for the
Vault-style lock, which cannot judge its lease locally, from ``elected`` to ``lost`` (or its kill).

    .venv/bin/python -m benchmarks.experiments.failover [--scenarios kill,stop,partition,drop,delay,skew]
        [--ttl 2] [--rounds 3] [--quick] [--endpoint URL] [--json PATH] [--plot PATH]

Writes ``benchmarks/results/failover.json`` (per scenario: samples, median, p95, max, each also over
the TTL, overlaps) and ``failover.png``. Findings: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import runpy
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.engine import endpoint_or_local
from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import ENGINE_PACKAGE
from kvstore.errors import BackendError, ConditionFailed
from kvstore.keys import lock_key
from kvstore.testing.faults import Fault, FaultProxy

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
RIG = REPO / "tests" / "failover_worker.py"  # the failover test's candidate process
RESULTS_DIR = REPO / "benchmarks" / "results"
IMPLS = ("kvstore", "vault")
RETRY_INTERVAL = 1.0  # Vault's DynamoDBLockRetryInterval
VAULT_WATCH_RETRY_MAX = 5  # Vault's DynamoDBWatchRetryMax
FAULTS = ("kill", "stop", "partition", "drop", "delay")
PROXIED = frozenset({"partition", "drop", "delay"})
SCENARIOS = (*FAULTS, "skew", "kill-ttl15")
DEFAULT_SCENARIOS = (*FAULTS, "skew")
DELAY_S, DELAY_FOR_S = 1.0, 3.0  # "delay": every reply to the leader this late, for this long
HELD_CHECK_S = 0.1  # a kvstore leader asks term.is_leader (and writes) this often


@dataclass(frozen=True, slots=True)
class Timings:
    """The lock timings of one cluster (both implementations get the same)."""

    ttl: float
    renew: float
    watch: float
    retry: float

    @classmethod
    def for_ttl(cls, ttl: float) -> Timings:
        return cls(ttl=ttl, renew=ttl / 3, watch=ttl / 3, retry=RETRY_INTERVAL)

    def argv(self) -> list[str]:
        return ["--ttl", str(self.ttl), "--renew", str(self.renew), "--watch", str(self.watch),
                "--retry", str(self.retry), "--write-interval", str(HELD_CHECK_S)]


# -- candidate side ------------------------------------------------------------------------------


class VaultStyleLock:
    """Vault's DynamoDB lock, re-implemented as the baseline.

    One conditional UpdateItem ``SET Value, Identity, Expires = now + TTL`` if the item is missing,
    or ``Identity`` is ours, or ``Expires <= now`` (the contender's wall clock). Like Vault: the first
    attempt goes out one retry interval after ``lock()``, renewal failures are ignored, and the
    watcher reports loss when the identity changed or after 5 failed reads in a row.
    """

    def __init__(self, backend: DynamoDBBackend, key: str, value: str, t: Timings) -> None:
        self._table = backend.table
        path, _, name = lock_key(key).rpartition("/")
        self._item_key = {"Path": {"S": path}, "Key": {"S": name}}
        self._value, self._identity, self._t = value, uuid.uuid4().hex, t
        self._tasks: list[asyncio.Task[None]] = []

    async def _update(self, create_if_missing: bool) -> None:
        now = time.time()  # the machine's wall clock (shifted in the skew scenario)
        prefix = ("attribute_not_exists(#path) or attribute_not_exists(#key) or " if create_if_missing
                  else "attribute_exists(#path) and attribute_exists(#key) and ")
        await self._table.call(
            "update_item",
            Key=self._item_key,
            UpdateExpression="SET #value=:value, #identity=:identity, #expires=:expires",
            ConditionExpression=prefix
            + "(attribute_not_exists(#identity) or #identity = :identity or #expires <= :now)",
            ExpressionAttributeNames={"#path": "Path", "#key": "Key", "#identity": "Identity", "#expires": "Expires",
                                      "#value": "Value"},
            ExpressionAttributeValues={
                ":identity": {"B": self._identity.encode()},
                ":value": {"B": self._value.encode()},
                ":now": {"N": str(int(now * 1e9))},
                ":expires": {"N": str(int((now + self._t.ttl) * 1e9))},
            },
        )

    async def lock(self) -> asyncio.Event:
        while True:
            await asyncio.sleep(self._t.retry)
            with contextlib.suppress(BackendError):  # ConditionFailed: held by someone else
                await self._update(True)
                break
        lost = asyncio.Event()
        self._tasks = [asyncio.create_task(self._renew(lost)), asyncio.create_task(self._watch(lost))]
        return lost

    async def _renew(self, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await asyncio.sleep(self._t.renew)
            with contextlib.suppress(BackendError):
                await self._update(False)

    async def _watch(self, lost: asyncio.Event) -> None:
        retries = VAULT_WATCH_RETRY_MAX
        while not lost.is_set():
            await asyncio.sleep(self._t.watch)
            try:
                out = await self._table.call("get_item", Key=self._item_key, ConsistentRead=True)
            except BackendError:
                retries -= 1
                if retries == 0:
                    break
                continue
            if (out.get("Item") or {}).get("Identity", {}).get("B") != self._identity.encode():
                break
            retries = VAULT_WATCH_RETRY_MAX
        lost.set()

    async def unlock(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(ConditionFailed):
            await self._table.call(
                "delete_item", Key=self._item_key, ConditionExpression="#identity = :identity",
                ExpressionAttributeNames={"#identity": "Identity"},
                ExpressionAttributeValues={":identity": {"B": self._identity.encode()}},
            )


async def _vault_candidate(args: argparse.Namespace, log: Any) -> None:
    conf = {"endpoint": args.endpoint, "table": args.table, "region": "us-east-1", "access_key": "local",
            "secret_key": "local", "billing_mode": "PAY_PER_REQUEST"}
    if args.read_timeout is not None:
        conf["read_timeout"] = str(args.read_timeout)
    if args.max_retries is not None:
        conf["dynamodb_max_retries"] = str(args.max_retries)
    async with await DynamoDBBackend.create(conf, environ={}) as store:
        log.emit("ready")
        while True:
            log.emit("campaigning")
            lock = VaultStyleLock(store, args.name, args.id, Timings(args.ttl, args.renew, args.watch, args.retry))
            lost = await lock.lock()
            log.emit("elected")
            await lost.wait()
            log.emit("lost")
            await lock.unlock()


def candidate(impl: str, skew: float, rig_argv: list[str]) -> int:
    """A candidate process: the test rig (kvstore) or the Vault-style lock with the rig's options and
    event log; its wall clock shifted by ``skew`` seconds (nothing else changes)."""
    if skew:
        real_time = time.time
        time.time = lambda: real_time() + skew
    if impl == "kvstore":
        sys.argv = [str(RIG), *rig_argv]
        with contextlib.suppress(KeyboardInterrupt):
            runpy.run_path(str(RIG), run_name="__main__")
        return 0
    rig = runpy.run_path(str(RIG))  # its parse_args and EventLog, not its main
    args = rig["parse_args"](rig_argv)
    with open(args.log, "a", encoding="utf-8") as out, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_vault_candidate(args, rig["EventLog"](out, args.id)))
    return 0


# -- driver side ---------------------------------------------------------------------------------


@dataclass
class Proc:
    ident: str
    process: asyncio.subprocess.Process
    log: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0
    killed_at: float | None = None
    proxy: FaultProxy | None = None  # its own link to DynamoDB (proxied scenarios)

    def refresh(self) -> None:
        """Read the complete lines its log gained since the last call."""
        with contextlib.suppress(FileNotFoundError), self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for line in data[:end].splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))


class Cluster:
    """Candidate processes of one implementation on one table, and everything they logged."""

    def __init__(self, impl: str, timings: Timings, endpoint: str, *, proxied: bool = False) -> None:
        self.impl, self.t, self.endpoint, self.proxied = impl, timings, endpoint, proxied
        self.table = f"bench-failover-{impl}-{uuid.uuid4().hex[:8]}"
        self.procs: dict[str, Proc] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="failover-")

    async def create_table(self) -> None:
        conf = {"endpoint": self.endpoint, "table": self.table, "region": "us-east-1", "access_key": "local",
                "secret_key": "local", "billing_mode": "PAY_PER_REQUEST"}
        async with await DynamoDBBackend.create(conf, environ={}):
            pass

    async def spawn(self, *, skew: float = 0.0) -> Proc:
        ident = f"{self.impl}-{len(self.procs)}"
        proxy: FaultProxy | None = None
        endpoint, extra = self.endpoint, []
        if self.proxied:  # a proxy per candidate, so a fault hits one process only
            proxy = await FaultProxy(self.endpoint).start()
            endpoint = proxy.endpoint
            extra = ["--read-timeout", str(self.t.ttl), "--max-retries", "1"]
        log = Path(self._dir.name) / f"{ident}.jsonl"
        cmd = [sys.executable, "-m", "benchmarks.experiments.failover", "--candidate", self.impl, str(skew),
               "--endpoint", endpoint, "--table", self.table, "--id", ident, "--log", str(log), *self.t.argv(), *extra]
        with (Path(self._dir.name) / f"{ident}.stderr").open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *cmd, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        self.procs[ident] = proc = Proc(ident, process, log, proxy=proxy)
        return proc

    async def wait(self, predicate: Callable[[], Any], within: float, what: str) -> Any:
        """Poll the logs until ``predicate()`` returns something truthy."""
        deadline = time.monotonic() + within
        while True:
            for proc in self.procs.values():
                proc.refresh()
                if proc.killed_at is None and proc.process.returncode not in (None, -signal.SIGKILL):
                    err = (Path(self._dir.name) / f"{proc.ident}.stderr").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{proc.ident} exited with {proc.process.returncode}: {err}")
            if value := predicate():
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.impl}: timed out after {within:.0f}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def wait_or_none(self, predicate: Callable[[], Any], within: float) -> Any:
        """As :meth:`wait`, but None after ``within`` seconds."""
        try:
            return await self.wait(predicate, within, "")
        except TimeoutError:
            return None

    def leader(self) -> Proc | None:
        """The live candidate that leads by its own account (the latest grant, if two say so)."""
        found: list[tuple[float, Proc]] = []
        for proc in self.procs.values():
            last = [e for e in proc.events if e["event"] in ("elected", "lost")]
            if proc.killed_at is None and last and last[-1]["event"] == "elected":
                found.append((last[-1]["t"], proc))
        return max(found, key=lambda f: f[0])[1] if found else None

    def lost_after(self, proc: Proc, t: float) -> bool:
        return any(e["event"] == "lost" and e["t"] > t for e in proc.events)

    def elected_after(self, t: float) -> dict[str, Any] | None:
        found = [e for p in self.procs.values() for e in p.events if e["event"] == "elected" and e["t"] > t]
        return min(found, key=lambda e: e["t"]) if found else None

    def all_ready(self) -> bool:
        return all(p.killed_at is not None or any(e["event"] == "ready" for e in p.events)
                   for p in self.procs.values())

    async def kill(self, proc: Proc) -> float:
        proc.killed_at = time.monotonic()
        proc.process.send_signal(signal.SIGKILL)
        await proc.process.wait()
        return proc.killed_at

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.process.returncode is None:
                proc.process.send_signal(signal.SIGKILL)  # kills a stopped process too
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                await proc.process.wait()
            proc.refresh()
            if proc.proxy is not None:
                await proc.proxy.stop()
        self._dir.cleanup()

    def intervals(self, end: float) -> list[tuple[str, float, float]]:
        """Every leadership interval as (candidate, start, end); see the module docstring."""
        for proc in self.procs.values():
            proc.refresh()
        held_mode = self.impl == "kvstore"
        out = []
        for proc in self.procs.values():
            start: float | None = None
            last_yes, token = 0.0, None
            for e in proc.events:
                if e["event"] == "elected":
                    if start is not None and held_mode:  # a term cut off without its "lost"
                        out.append((proc.ident, start, last_yes))
                    start = last_yes = e["t"]
                    token = e.get("token")
                elif e["event"] == "write" and start is not None and e.get("t_check") and e["token"] == token:
                    last_yes = max(last_yes, e["t_check"])
                elif e["event"] == "lost" and start is not None:
                    out.append((proc.ident, start, last_yes if held_mode else e["t"]))
                    start = None
            if start is not None:
                end_t = last_yes if held_mode else (proc.killed_at if proc.killed_at is not None else end)
                out.append((proc.ident, start, end_t))
        return out


def overlaps(intervals: Sequence[tuple[str, float, float]]) -> tuple[int, float]:
    """(pairs of intervals of different workers that intersect, total seconds of intersection)."""
    count, seconds = 0, 0.0
    for i, (w1, s1, e1) in enumerate(intervals):
        for w2, s2, e2 in intervals[i + 1:]:
            if w1 != w2 and min(e1, e2) > max(s1, s2):
                count += 1
                seconds += min(e1, e2) - max(s1, s2)
    return count, seconds


def _summary(samples: Sequence[float]) -> dict[str, float | None]:
    if not samples:
        return {"median_s": None, "p95_s": None, "min_s": None, "max_s": None}
    ordered = sorted(samples)
    # Nearest rank, as benchmarks.stats: with few samples the p95 is the slowest run or next to it.
    rank = max(1, -(-95 * len(ordered) // 100))
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(rank, len(ordered)) - 1], 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
    }


async def _inject(cluster: Cluster, scenario: str, leader: Proc) -> tuple[float, float, Fault | None]:
    """Start ``scenario``'s fault on ``leader``: (fault time, how long to wait for a new leader, fault)."""
    t = cluster.t
    long_wait = 3 * t.ttl + 30  # only bounds the wait; a failover must happen
    if scenario == "kill":
        return await cluster.kill(leader), long_wait, None
    if scenario == "stop":
        at = time.monotonic()
        leader.process.send_signal(signal.SIGSTOP)
        return at, long_wait, None
    assert leader.proxy is not None
    at = time.monotonic()
    if scenario == "partition":  # requests vanish: held past the read timeout (one TTL)
        fault = leader.proxy.stall(min(10.0, 5 * t.ttl), duration=3 * t.ttl)
        return at, long_wait, fault
    if scenario == "drop":  # UpdateItems land, their replies are lost
        fault = leader.proxy.reset_connection(after_forward=True, operations={"UpdateItem"}, duration=t.ttl + 1)
        return at, long_wait, fault
    if scenario == "delay":  # may keep the lease: wait the fault out plus a TTL and a retry
        fault = leader.proxy.stall(DELAY_S, after_forward=True, duration=DELAY_FOR_S)
        return at, DELAY_FOR_S + t.ttl + t.retry + 1.0, fault
    raise ValueError(f"unknown fault scenario {scenario!r}")


async def _recover(cluster: Cluster, scenario: str, leader: Proc, fault: Fault | None, fault_at: float) -> None:
    """Undo ``scenario``'s fault after the measurement, so the next round starts with three candidates."""
    if scenario == "kill":
        await cluster.spawn()  # after the measurement: no CPU burst in it
        return
    if scenario == "stop":
        leader.process.send_signal(signal.SIGCONT)
    if fault is not None:
        fault.cancel()  # healed (a request held already ends at the client's read timeout)
    # The old leader notices (at once for kvstore; the Vault-style watcher may take a while).
    await cluster.wait_or_none(lambda: cluster.lost_after(leader, fault_at) or leader.process.returncode is not None,
                               2 * cluster.t.ttl + 5)


async def failover_runs(impl: str, timings: Timings, reps: int, endpoint: str,
                        scenario: str = "kill") -> dict[str, Any]:
    """``reps`` faults (``scenario``) of the leader of a three-process cluster; the failover time of each."""
    cluster = Cluster(impl, timings, endpoint, proxied=scenario in PROXIED)
    await cluster.create_table()
    samples: list[float] = []
    no_failover = 0
    settle = timings.renew + timings.retry + 0.5  # followers have seen the live leader's record
    started = time.monotonic()
    try:
        for _ in range(3):
            await cluster.spawn()
        for _ in range(reps):
            leader = await cluster.wait(cluster.leader, 60 + 3 * timings.ttl, "a leader")
            await cluster.wait(cluster.all_ready, 60, "every candidate ready")
            await asyncio.sleep(settle)
            leader = cluster.leader() or leader
            fault_at, within, fault = await _inject(cluster, scenario, leader)
            elected = await cluster.wait_or_none(lambda t=fault_at: cluster.elected_after(t), within)
            if elected is not None:
                samples.append(elected["t"] - fault_at)
            elif scenario == "delay":
                no_failover += 1  # the lease survived the slow replies
            else:
                await _recover(cluster, scenario, leader, fault, fault_at)
                raise RuntimeError(f"{impl}/{scenario}: no new leader within {within:.0f}s")
            await _recover(cluster, scenario, leader, fault, fault_at)
        end = time.monotonic()
        n_overlaps, overlap_s = overlaps(cluster.intervals(end))
    finally:
        await cluster.close()
    bound = timings.ttl + timings.retry
    summary = _summary(samples)
    return {
        "scenario": scenario,
        "impl": impl,
        "ttl_s": timings.ttl,
        "renew_interval_s": round(timings.renew, 3),
        "watch_interval_s": round(timings.watch, 3),
        "retry_interval_s": timings.retry,
        "reps": reps,
        "failovers": len(samples),
        "no_failover": no_failover,
        "samples_s": [round(s, 3) for s in samples],
        **summary,
        **{f"{k.removesuffix('_s')}_over_ttl": (None if v is None else round(v / timings.ttl, 2))
           for k, v in summary.items() if k in ("median_s", "p95_s", "max_s")},
        "bound_s": bound,
        "within_bound": sum(1 for s in samples if s <= bound),
        "overlaps": n_overlaps,
        "overlap_s": round(overlap_s, 3),
        "wall_s": round(time.monotonic() - started, 1),
    }


async def skew_run(impl: str, timings: Timings, skew: float, duration: float, endpoint: str) -> dict[str, Any]:
    """Two candidates with true clocks, then one whose wall clock is ``skew`` s ahead; nobody dies."""
    cluster = Cluster(impl, timings, endpoint)
    await cluster.create_table()
    try:
        for _ in range(2):
            await cluster.spawn()
        await cluster.wait(cluster.leader, 60 + 3 * timings.ttl, "a leader")
        await cluster.spawn(skew=skew)
        await cluster.wait(cluster.all_ready, 60, "every candidate ready")
        start = time.monotonic()
        await asyncio.sleep(duration)
        end = time.monotonic()
        intervals = cluster.intervals(end)
        changes = sum(1 for p in cluster.procs.values() for e in p.events
                      if e["event"] == "elected" and e["t"] >= start)
        n_overlaps, overlap_s = overlaps(intervals)
    finally:
        await cluster.close()
    return {
        "impl": impl,
        "ttl_s": timings.ttl,
        "skew_s": skew,
        "duration_s": duration,
        "takeovers_of_a_live_leader": changes,
        "overlaps": n_overlaps,
        "overlap_s": round(overlap_s, 3),
    }


async def run(endpoint: str, *, scenarios: Sequence[str], ttl: float, rounds: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # FaultProxy.stop() cancels a connection it still holds (a stall); asyncio logs that as an error.
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    failover: list[dict[str, Any]] = []  # the SIGKILL comparison, kvstore against Vault-style
    faults: list[dict[str, Any]] = []  # every failover scenario (kvstore, and Vault-style for kills)
    skew: list[dict[str, Any]] = []
    t = Timings.for_ttl(ttl)
    for scenario in scenarios:
        if scenario in ("kill", "kill-ttl15"):
            kt = t if scenario == "kill" else Timings.for_ttl(15.0)
            reps = rounds if scenario == "kill" else max(1, rounds // 3)
            print(f"kill: TTL {kt.ttl:g}s, {reps} SIGKILL(s) per implementation ...", file=sys.stderr, flush=True)
            # Both implementations at once: same engine, same moment, half the wall time.
            results = list(await asyncio.gather(*(failover_runs(impl, kt, reps, endpoint) for impl in IMPLS)))
            failover.extend(results)
            faults.extend(results)
        elif scenario == "skew":
            duration = max(5.0, 2.5 * ttl)
            print(f"skew: TTL {ttl:g}s, one contender's clock +{ttl:g}s, {duration:g}s ...", file=sys.stderr,
                  flush=True)
            skew = list(await asyncio.gather(*(skew_run(impl, t, ttl, duration, endpoint) for impl in IMPLS)))
            for r in skew:
                print(f"  {r['impl']:8} takeovers {r['takeovers_of_a_live_leader']}, overlaps {r['overlaps']} "
                      f"({r['overlap_s']}s)", file=sys.stderr, flush=True)
            continue
        else:
            print(f"{scenario}: TTL {ttl:g}s, {rounds} round(s), kvstore ...", file=sys.stderr, flush=True)
            results = [await failover_runs("kvstore", t, rounds, endpoint, scenario)]
            faults.extend(results)
        for r in results:
            print(f"  {r['impl']:8} median {r['median_s']}s p95 {r['p95_s']}s max {r['max_s']}s "
                  f"(TTL {r['ttl_s']:g}s), overlaps {r['overlaps']}", file=sys.stderr, flush=True)
    return {"scenarios": faults, "failover": failover, "skew": skew}


def table(report: dict[str, Any]) -> str:
    """The failover scenarios as a text table (and the skew run under it)."""
    def num(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:.3g}{unit}" if unit == "x" else f"{v:.2f}{unit}"

    head = ("scenario", "impl", "TTL", "failovers", "median", "p95", "max", "median/TTL", "p95/TTL",
            "max/TTL", "overlaps")
    rows = [head]
    for r in report["scenarios"]:
        fo = f"{r['failovers']}/{r['reps']}"
        rows.append((r["scenario"], r["impl"], f"{r['ttl_s']:g}s", fo, num(r["median_s"], "s"), num(r["p95_s"], "s"),
                     num(r["max_s"], "s"), num(r["median_over_ttl"], "x"), num(r["p95_over_ttl"], "x"),
                     num(r["max_over_ttl"], "x"), str(r["overlaps"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in report["skew"]:
        lines.append(f"skew {r['impl']}: clock +{r['skew_s']:g}s for {r['duration_s']:g}s, takeovers of a live "
                     f"leader {r['takeovers_of_a_live_leader']}, overlaps {r['overlaps']} ({r['overlap_s']}s)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ttls = sorted({r["ttl_s"] for r in report["failover"]})
    fig, grid = plt.subplots(1, len(ttls) + 1, figsize=(4.2 * (len(ttls) + 1), 4.2), squeeze=False)
    axes = list(grid[0])
    colors = {"kvstore": "tab:blue", "vault": "tab:orange"}
    for ax, ttl in zip(axes, ttls, strict=False):
        rows = [r for r in report["failover"] if r["ttl_s"] == ttl]
        for i, r in enumerate(rows):
            xs = [i + (j - (len(r["samples_s"]) - 1) / 2) * 0.04 for j in range(len(r["samples_s"]))]
            ax.scatter(xs, r["samples_s"], color=colors[r["impl"]], alpha=0.7, zorder=3)
            if r["median_s"] is not None:
                ax.hlines(r["median_s"], i - 0.25, i + 0.25, color=colors[r["impl"]], linewidth=2.5)
        ax.axhline(rows[0]["bound_s"], color="grey", linestyle="--", label="TTL + retry interval")
        ax.axhline(ttl, color="grey", linestyle=":", label="TTL")
        ax.set_xticks(range(len(rows)), [r["impl"] for r in rows])
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylim(0, rows[0]["bound_s"] * 1.25)
        ax.set_title(f"failover after SIGKILL, TTL {ttl:g}s")
        ax.set_ylabel("seconds from kill to new leader")
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[-1]
    labels, values = [], []
    for r in report["scenarios"]:
        labels.append(f"{r['impl']}\n{r['scenario']} TTL {r['ttl_s']:g}")
        values.append(r["overlaps"])
    for r in report["skew"]:
        labels.append(f"{r['impl']}\nskew +{r['skew_s']:g}s")
        values.append(r["overlaps"])
    ax.bar(range(len(values)), values,
           color=[colors["kvstore" if "kvstore" in lab else "vault"] for lab in labels])
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_title("overlapping leadership intervals")
    ax.set_ylabel("count (kvstore must be 0)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--candidate"]:  # started by the driver: --candidate IMPL SKEW <rig options>
        return candidate(argv[1], float(argv[2]), argv[3:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.failover", description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma list of {', '.join(SCENARIOS)} (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=None, help="faults per scenario (default 3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="2 rounds per scenario unless --rounds says otherwise")
    p.add_argument("--ttl", type=float, default=2.0, help="the lease TTL of the scenarios in seconds (default 2)")
    p.add_argument("--endpoint", default=os.environ.get("AWS_DYNAMODB_ENDPOINT"),
                   help="a running DynamoDB(-compatible) endpoint; default: start DynamoDB Local")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "failover.json")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "failover.png")
    args = p.parse_args(argv)
    if args.ttl <= 0:
        p.error("--ttl must be > 0")
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    if rounds < 1:
        p.error("--rounds must be >= 1")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios:
        p.error(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SCENARIOS)}")

    started = time.monotonic()
    with endpoint_or_local(args.endpoint) as endpoint:
        results = asyncio.run(run(endpoint, scenarios=scenarios, ttl=args.ttl, rounds=rounds))
    report = {
        "benchmark": "failover",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "scenarios_run": scenarios,
        "rounds": rounds,
        "ttl_s": args.ttl,
        "engine": args.endpoint or f"DynamoDB Local ({ENGINE_PACKAGE}), started by the benchmark",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "method": (
            "Three candidate processes (kvstore: tests/failover_worker.py) per cluster campaign for one lock; "
            "the leader is faulted (SIGKILL, "
            "SIGSTOP, partition / dropped UpdateItem replies / 1 s delayed replies through a FaultProxy "
            "per worker) after the others watched it for renew+retry+0.5 s; failover = CLOCK_MONOTONIC "
            "of the next 'elected' event minus the fault. For kills kvstore and the Vault-style baseline "
            "run concurrently on the same DynamoDB Local. Timings: renew = watch = TTL/3, retry = 1 s. "
            "p95 is nearest-rank; *_over_ttl = seconds / TTL."
        ),
        **results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot(report, args.plot)
    print(table(report))
    print(f"wrote {args.json} and {args.plot} ({report['wall_s']}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
