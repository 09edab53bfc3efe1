"""Drive one cell: run a plan of operations on a target at a fixed concurrency and measure it.

``concurrency`` tasks pull operations from one shared plan until it is exhausted (a closed loop:
each task sends its next operation when the previous one answered). Every operation is timed on
its own with ``perf_counter_ns``; throughput is operations over the wall time of the whole plan.
A cell is usually run in several rounds (slices of the plan, the targets taking turns); the
rounds' runs are merged with :meth:`CellRun.merge`, and each round's own rate is kept so the
report can pair kvstore's and raw's rounds.
A failing operation is counted and timed like any other, and the first error is kept for the
report: a benchmark that hides errors reports the speed of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import tap
from benchmarks.memory import peak_rss_mb
from benchmarks.stats import latency_summary
from benchmarks.targets import SelfCounting, Target
from benchmarks.workloads import Op

__all__ = ["CellRun", "run_plan"]


@dataclass(slots=True)
class CellRun:
    """The measurements of one plan on one target (turned into JSON by the worker)."""

    ops: int
    wall_s: float
    latencies_ns: list[int]
    kinds: list[str]
    errors: int = 0
    first_error: str | None = None
    wire: tap.WireCounts | None = None
    self_counts: tuple[int, int] | None = None
    peak_rss_mb: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    round_rates: list[float] = field(default_factory=list)
    #: CPU time (user + system) this process spent during the plan. Both targets send the same
    #: requests to the same engine, so CPU per operation is what each client itself costs; unlike
    #: wall time it hardly moves when other processes compete for the cores.
    cpu_s: float = 0.0

    def merge(self, later: CellRun) -> CellRun:
        """This run followed by ``later`` (a further round of the same cell)."""
        wire = self.wire + later.wire if self.wire is not None and later.wire is not None else None
        own = None
        if self.self_counts is not None and later.self_counts is not None:
            own = (self.self_counts[0] + later.self_counts[0], self.self_counts[1] + later.self_counts[1])
        kinds = dict(self.error_kinds)
        for name, n in later.error_kinds.items():
            kinds[name] = kinds.get(name, 0) + n
        return CellRun(
            ops=self.ops + later.ops,
            wall_s=self.wall_s + later.wall_s,
            latencies_ns=self.latencies_ns + later.latencies_ns,
            kinds=self.kinds + later.kinds,
            errors=self.errors + later.errors,
            first_error=self.first_error or later.first_error,
            wire=wire,
            self_counts=own,
            peak_rss_mb=max(self.peak_rss_mb, later.peak_rss_mb),
            error_kinds=kinds,
            round_rates=self.round_rates + later.round_rates,
            cpu_s=self.cpu_s + later.cpu_s,
        )

    def summary(self) -> dict[str, object]:
        """The JSON-ready figures of this run: throughput, latency, wire counts per op, RSS."""
        ops = max(self.ops, 1)
        out: dict[str, object] = {
            "ops": self.ops,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "first_error": self.first_error,
            "wall_s": round(self.wall_s, 4),
            "ops_per_s": round(self.ops / self.wall_s, 1) if self.wall_s > 0 else None,
            "ops_per_s_rounds": [round(r, 1) for r in self.round_rates],
            "latency_ms": latency_summary(self.latencies_ns),
            "cpu_ms_per_op": round(self.cpu_s * 1000 / ops, 4),
            "peak_rss_mb": self.peak_rss_mb,
        }
        if len(set(self.kinds)) > 1:
            by_kind: dict[str, dict[str, object]] = {}
            for kind in sorted(set(self.kinds)):
                lat = [v for v, k in zip(self.latencies_ns, self.kinds, strict=True) if k == kind]
                by_kind[kind] = {"ops": len(lat), "latency_ms": latency_summary(lat)}
            out["by_kind"] = by_kind
        if self.wire is not None:
            out["wire"] = {
                "requests_per_op": round(self.wire.requests / ops, 3),
                "items_per_op": round(self.wire.items / ops, 3),
                "bytes_per_op": round(self.wire.bytes_sent / ops, 1),
                "http_errors": self.wire.http_errors,
                "requests_by_operation": dict(sorted(self.wire.by_operation.items())),
            }
        if self.self_counts is not None:
            out["self_counted"] = {
                "requests_per_op": round(self.self_counts[0] / ops, 3),
                "items_per_op": round(self.self_counts[1] / ops, 3),
            }
        return out


def _dispatch(target: Target, value: bytes) -> dict[str, Callable[[str], Awaitable[object]]]:
    return {
        "put": lambda key: target.put(key, value),
        "get": target.get,
        "list": target.list,
        "delete": target.delete,
    }


async def run_plan(
    target: Target,
    ops: Sequence[Op],
    *,
    value: bytes,
    concurrency: int,
    progress: Callable[[int], None] | None = None,
) -> CellRun:
    """Run ``ops`` on ``target`` with ``concurrency`` workers; measure latency, wire, RSS.

    ``progress`` is called about five times a second with the number of operations finished since
    the previous call (the worker forwards it to the parent's progress bar).
    """
    calls = _dispatch(target, value)
    latencies = [0] * len(ops)
    run = CellRun(ops=len(ops), wall_s=0.0, latencies_ns=latencies, kinds=[op.kind for op in ops])
    todo = iter(enumerate(ops))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index, op in todo:
            start = time.perf_counter_ns()
            try:
                await calls[op.kind](op.arg)
            except Exception as exc:  # every failure is counted and reported
                run.errors += 1
                name = type(exc).__name__
                run.error_kinds[name] = run.error_kinds.get(name, 0) + 1
                if run.first_error is None:
                    run.first_error = f"{op.kind} {op.arg!r}: {name}: {exc}"[:500]
            latencies[index] = time.perf_counter_ns() - start
            done += 1

    reported = 0

    def flush_progress() -> None:
        nonlocal reported
        if progress is not None and done > reported:
            progress(done - reported)
            reported = done

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(0.2)
            flush_progress()

    wire_before = tap.snapshot() if tap.installed() else None
    self_before = target.self_counts() if isinstance(target, SelfCounting) else None
    reporter = asyncio.create_task(report_progress())
    cpu_started = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(ops))))))
    finally:
        run.wall_s = time.perf_counter() - started
        run.cpu_s = time.process_time() - cpu_started
        run.round_rates = [len(ops) / run.wall_s] if run.wall_s > 0 else []
        reporter.cancel()
        flush_progress()
    if wire_before is not None:
        run.wire = tap.snapshot() - wire_before
    if self_before is not None and isinstance(target, SelfCounting):
        after = target.self_counts()
        run.self_counts = (after[0] - self_before[0], after[1] - self_before[1])
    run.peak_rss_mb = peak_rss_mb()
    return run
