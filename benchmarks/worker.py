"""One process per target: the target, its event loop and its wire counts live there alone.

Why processes: peak RSS (``getrusage``) is per process, so only a process that holds nothing but
one target can report that target's memory; the wire tap counts a whole process's requests, so
separate processes keep kvstore's and raw's counts apart; and neither target's garbage or event
loop slows the other. The targets still take turns (the parent sends one cell at a time), so they
never compete for the engine.

The parent side is :class:`TargetWorker`; the child runs :func:`main`. They talk over a pipe:

- parent -> child: ``("warmup", WarmupSpec)``, ``("cell", CellSpec)``, ``("stop", None)``;
- child -> parent: ``("ready", facts)`` or ``("failed", why)`` once, then per request any number of
  ``("progress", n)`` / ``("phase", text)`` and one ``("done", summary)`` or ``("error", trace)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks import memory, tap
from benchmarks.config import Scenario
from benchmarks.keyspace import KeySpace
from benchmarks.runner import CellRun, run_plan
from benchmarks.targets import Target, TargetSettings, open_target
from benchmarks.workloads import LEAVES_LOADED, NEEDS_LOADED, plan

__all__ = ["CellSpec", "TargetUnavailable", "TargetWorker", "WarmupSpec", "WorkerDied", "main"]

#: Concurrency of untimed preloads: fast, but well under the pool size.
_PRELOAD_CONCURRENCY = 32
#: How long a worker may take to import its library and open the target (a cold import of
#: aiobotocore plus table checks takes 1-3 s here; shared CI machines are slower).
READY_TIMEOUT = 120.0


class TargetUnavailable(Exception):
    """The target could not be opened (for kvstore: typically not importable yet)."""


class WorkerDied(Exception):
    """The worker process ended while the parent was waiting for it."""


@dataclass(frozen=True, slots=True)
class CellSpec:
    """Run round ``part`` of ``parts`` of ``workload`` on ``scenario``.

    A round is a contiguous slice of the workload's plan. The worker preloads the key space before
    round 0 if it must, merges the rounds, and answers the last one with the cell's summary
    (earlier rounds answer ``{"partial": True, ...}``).
    """

    scenario: Scenario
    workload: str
    fanout: int
    seed: int
    part: int = 0
    parts: int = 1


@dataclass(frozen=True, slots=True)
class WarmupSpec:
    """Untimed put/get/list/delete of ``ops`` keys before the first cell."""

    ops: int
    seed: int


# --------------------------------------------------------------------------- child side


def _scrub_environment() -> None:
    """Drop AWS_*/DYNAMODB_* variables: kvstore's config lets the environment override the config
    map (as Vault's does), which could point one target at another table or endpoint."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "DYNAMODB_")):
            del os.environ[name]


def _value(scenario: Scenario, seed: int) -> bytes:
    # Random bytes: nothing between client and engine compresses, but make sure of it.
    return random.Random(f"{seed}:value:{scenario.value_size}").randbytes(scenario.value_size)


class _Child:
    def __init__(self, conn: Connection, target: Target) -> None:
        self.conn = conn
        self.target = target
        self.loaded: set[str] = set()
        self.rounds: CellRun | None = None

    async def preload(self, space: KeySpace, value: bytes, seed: int) -> None:
        self.conn.send(("phase", f"preloading {space.keys} keys"))
        await run_plan(self.target, plan("put", space, seed), value=value, concurrency=_PRELOAD_CONCURRENCY)
        self.loaded.add(space.namespace)

    async def cell(self, spec: CellSpec) -> dict[str, object]:
        sc = spec.scenario
        space = KeySpace(sc.id, sc.depth, sc.keys, spec.fanout)
        value = _value(sc, spec.seed)
        if spec.part == 0:
            self.rounds = None
            if NEEDS_LOADED[spec.workload] and space.namespace not in self.loaded:
                await self.preload(space, value, spec.seed)
            # From the first round on, the key space is neither fully there nor fully gone.
            self.loaded.discard(space.namespace)
            memory.reset_peak()  # the cell's peak, not the preload's or an earlier cell's
        ops = plan(spec.workload, space, spec.seed)
        # Collect now, untimed: a full collection costs tens of milliseconds and would otherwise
        # land in whichever target's round happened to cross the threshold.
        gc.collect()
        chunk = ops[spec.part * len(ops) // spec.parts : (spec.part + 1) * len(ops) // spec.parts]
        self.conn.send(("phase", f"round {spec.part + 1}/{spec.parts}"))
        run = await run_plan(
            self.target,
            chunk,
            value=value,
            concurrency=sc.concurrency,
            progress=lambda n: self.conn.send(("progress", n)),
        )
        self.rounds = run if self.rounds is None else self.rounds.merge(run)
        if spec.part < spec.parts - 1:
            return {"partial": True, "round_ops_per_s": run.round_rates}
        if LEAVES_LOADED[spec.workload]:
            self.loaded.add(space.namespace)
        summary = self.rounds.summary()
        self.rounds = None
        return summary

    async def warmup(self, spec: WarmupSpec) -> dict[str, object]:
        space = KeySpace("warmup", 3, spec.ops, 10)
        value = random.Random(spec.seed).randbytes(1024)
        self.conn.send(("phase", "warming up"))
        errors = 0
        for workload in ("put", "get", "list", "delete"):
            run = await run_plan(self.target, plan(workload, space, spec.seed), value=value, concurrency=16)
            errors += run.errors
        return {"errors": errors, "peak_rss_mb": memory.peak_rss_mb()}


async def _serve(conn: Connection, name: str, settings: TargetSettings) -> None:
    wire = tap.install()
    try:
        target = await open_target(name, settings)
    except BaseException as exc:  # reported: the parent skips the target
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        facts = dict(target.describe())
        memory.reset_peak()
        facts.update(
            {
                "wire_tap": wire,
                "rss_after_open_mb": memory.current_rss_mb(),
                "rss_method": memory.method(),
                "pid": os.getpid(),
            }
        )
        conn.send(("ready", facts))
        child = _Child(conn, target)
        while True:
            # Blocking between cells is fine: nothing else runs on this loop meanwhile.
            kind, payload = conn.recv()
            if kind == "stop":
                break
            try:
                if kind == "warmup":
                    result = await child.warmup(payload)
                elif kind == "cell":
                    result = await child.cell(payload)
                else:
                    raise ValueError(f"unknown request {kind!r}")
                conn.send(("done", result))
            except Exception:  # the parent records it and carries on
                conn.send(("error", traceback.format_exc(limit=8)))
    finally:
        await target.aclose()


def main(conn: Connection, name: str, settings: TargetSettings) -> None:
    """Child process entry point: open target ``name`` and serve the parent's requests."""
    _scrub_environment()
    try:
        asyncio.run(_serve(conn, name, settings))
    finally:
        conn.close()


# --------------------------------------------------------------------------- parent side


class TargetWorker:
    """The parent's handle on one target's worker process."""

    def __init__(self, name: str, settings: TargetSettings) -> None:
        self.name = name
        ctx = multiprocessing.get_context("spawn")  # no inherited event loop, locks or clients
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=main, args=(child_conn, name, settings), name=f"bench-{name}", daemon=True)
        self._child_conn = child_conn
        self.facts: dict[str, Any] = {}

    async def _recv(self, wait_s: float | None) -> tuple[str, Any]:
        # poll() in a thread keeps the parent's loop free (it may be serving the latency proxy).
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self._conn.poll, wait_s):
            raise TimeoutError(f"{self.name} worker did not answer within {wait_s} s")
        try:
            message: tuple[str, Any] = self._conn.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise WorkerDied(f"{self.name} worker exited (code {self._process.exitcode})") from None
        return message

    async def start(self) -> dict[str, Any]:
        """Start the process and wait until its target is open.

        :raises TargetUnavailable: the target could not be opened; the process has ended.
        """
        self._process.start()
        self._child_conn.close()  # only the child holds its end now, so its exit reads as EOF
        try:
            kind, payload = await self._recv(READY_TIMEOUT)
        except (TimeoutError, WorkerDied) as exc:
            self.kill()
            raise TargetUnavailable(str(exc)) from exc
        if kind != "ready":
            self._process.join(timeout=10)
            raise TargetUnavailable(str(payload))
        facts: dict[str, Any] = payload
        self.facts = facts
        return facts

    async def request(
        self,
        kind: str,
        spec: CellSpec | WarmupSpec,
        *,
        on_progress: Callable[[int], None] | None = None,
        on_phase: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Send one warmup or cell and wait for its summary.

        :raises RuntimeError: the cell raised in the worker (the traceback is the message).
        :raises WorkerDied: the worker process ended.
        """
        self._conn.send((kind, spec))
        while True:
            tag, payload = await self._recv(None)
            if tag == "progress":
                if on_progress is not None:
                    on_progress(payload)
            elif tag == "phase":
                if on_phase is not None:
                    on_phase(payload)
            elif tag == "done":
                result: dict[str, Any] = payload
                return result
            else:
                raise RuntimeError(f"{self.name} worker failed:\n{payload}")

    async def stop(self) -> None:
        """Ask the worker to close its target and exit; kill it if it does not within 30 s."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop", None))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._process.join, 30)
        self.kill()

    def kill(self) -> None:
        """End the process now if it still runs (idempotent)."""
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._conn.close()
