"""Run a benchmark: tables, targets, every cell round by round, then the report.

Both targets live in this process and take turns: per scenario and workload the plan is cut into
``rounds`` slices and the targets run slice by slice, alternating which goes first, so load bursts
and engine drift (JIT, GC, growing tables) hit both alike. Because only one target runs at a time,
everything measured around a slice is that target's own:

- **latency** of each operation (``perf_counter_ns``, a closed loop of ``concurrency`` tasks) and
  **throughput** (operations / wall time of the slices);
- **CPU** of the event-loop thread (``thread_time``): both targets send the same requests to the
  same engine, so CPU per operation is the client's own cost, and it hardly moves when other
  processes compete for the cores. The latency proxy, if any, runs in a thread of its own;
- **requests and items on the wire**, counted in aiobotocore's ``AioEndpoint._send``, which every
  client sends each HTTP attempt through (kvstore's included, retries included). Items: entries of
  BatchWriteItem, keys of BatchGetItem/transactions, 1 per single-item call, 0 per Query.
  Background work a target leaves behind (kvstore's follow-up writes) is awaited at the end of
  its round: its requests and CPU are the target's, its time is not.

A failing operation is counted and timed like any other (``errors``, ``first_error``); errors never
stop a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.engine import data_path
from benchmarks.targets import Target, open_target, run_tables
from benchmarks.workloads import BenchConfig, KeySpace, Op, Scenario, plan, standard_config

__all__ = ["RESULTS_DIR", "BenchReport", "CellRun", "arun_benchmarks", "run_benchmarks", "run_plan", "wire"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_PRELOAD_CONCURRENCY = 32
_SETTLE_TIMEOUT = 30.0
COUNTING = (
    "In one process, one target at a time. wire.*: every HTTP attempt of the target's aiobotocore client "
    "(AioEndpoint._send, retries included); items = entries of BatchWriteItem, keys of BatchGetItem/"
    "transactions, 1 per single-item call, 0 per Query. cpu_ms_per_op: CPU time of the event-loop thread "
    "per operation (the client's own cost)."
)
_SINGLE_ITEM = frozenset({"GetItem", "PutItem", "DeleteItem", "UpdateItem"})


# -- counting the wire ---------------------------------------------------------------------------


@dataclass(slots=True)
class Wire:
    """Requests, items and bytes sent by every aiobotocore client of this process, since install."""

    requests: int = 0
    items: int = 0
    bytes_sent: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)

    def copy(self) -> Wire:
        return Wire(self.requests, self.items, self.bytes_sent, Counter(self.by_operation))

    def __sub__(self, other: Wire) -> Wire:
        return Wire(self.requests - other.requests, self.items - other.items, self.bytes_sent - other.bytes_sent,
                    self.by_operation - other.by_operation)

    def __add__(self, other: Wire) -> Wire:
        return Wire(self.requests + other.requests, self.items + other.items, self.bytes_sent + other.bytes_sent,
                    self.by_operation + other.by_operation)

    def record(self, operation: str, body: bytes) -> None:
        self.requests += 1
        self.bytes_sent += len(body)
        self.by_operation[operation] += 1
        self.items += items_in(operation, body)

    def install(self) -> None:
        """Wrap ``AioEndpoint._send`` (once per process) so this counter sees every attempt."""
        from aiobotocore.endpoint import AioEndpoint

        if getattr(AioEndpoint._send, "_kvbench", False):
            return
        original = AioEndpoint._send

        async def _send(endpoint: Any, request: Any) -> Any:
            target = request.headers.get("X-Amz-Target", b"")
            target = target.decode() if isinstance(target, bytes) else target
            body = request.body.encode() if isinstance(request.body, str) else request.body
            self.record(target.rpartition(".")[2] or "?", bytes(body) if isinstance(body, bytes | bytearray) else b"")
            return await original(endpoint, request)

        _send._kvbench = True  # type: ignore[attr-defined]
        AioEndpoint._send = _send  # type: ignore[method-assign]


def items_in(operation: str, body: bytes) -> int:
    """Item-level entries in one request body (see the module docstring)."""
    if operation in _SINGLE_ITEM:
        return 1
    if operation not in ("BatchWriteItem", "BatchGetItem", "TransactWriteItems", "TransactGetItems"):
        return 0
    doc = json.loads(body)
    if operation == "TransactWriteItems" or operation == "TransactGetItems":
        return len(doc.get("TransactItems", ()))
    per_table = doc.get("RequestItems", {}).values()
    return sum(len(v) if operation == "BatchWriteItem" else len(v.get("Keys", ())) for v in per_table)


#: The process's one wire counter.
wire = Wire()


# -- timing one plan -----------------------------------------------------------------------------


@dataclass(slots=True)
class CellRun:
    """The measurements of one plan (or several rounds of it, merged) on one target."""

    latencies_ns: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    wire: Wire = field(default_factory=Wire)
    round_rates: list[float] = field(default_factory=list)

    def merge(self, later: CellRun) -> CellRun:
        """This run followed by ``later`` (a further round of the same cell)."""
        return CellRun(self.latencies_ns + later.latencies_ns, self.kinds + later.kinds, self.wall_s + later.wall_s,
                       self.cpu_s + later.cpu_s, self.errors + later.errors, self.error_kinds + later.error_kinds,
                       self.first_error or later.first_error, self.wire + later.wire,
                       self.round_rates + later.round_rates)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures: throughput, latency, CPU, wire counts per operation."""
        n = len(self.latencies_ns)
        ops = max(n, 1)
        out: dict[str, Any] = {
            "ops": n,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "first_error": self.first_error,
            "wall_s": round(self.wall_s, 4),
            "ops_per_s": round(n / self.wall_s, 1) if self.wall_s > 0 else None,
            "ops_per_s_rounds": [round(r, 1) for r in self.round_rates],
            "latency_ms": report.latency_summary(self.latencies_ns),
            "cpu_ms_per_op": round(self.cpu_s * 1000 / ops, 4),
            "wire": {
                "requests_per_op": round(self.wire.requests / ops, 3),
                "items_per_op": round(self.wire.items / ops, 3),
                "bytes_per_op": round(self.wire.bytes_sent / ops, 1),
                "requests_by_operation": dict(sorted(self.wire.by_operation.items())),
            },
        }
        if len(set(self.kinds)) > 1:  # mix: latency per kind of operation
            out["by_kind"] = {
                kind: report.latency_summary([v for v, k in zip(self.latencies_ns, self.kinds, strict=True)
                                              if k == kind])
                for kind in sorted(set(self.kinds))
            }
        return out


async def run_plan(target: Target, ops: Sequence[Op], *, value: bytes, concurrency: int) -> CellRun:
    """Run ``ops`` on ``target`` with ``concurrency`` tasks pulling from one queue; measure it."""
    calls = {"put": lambda key: target.put(key, value), "get": target.get, "list": target.list,
             "delete": target.delete}
    run = CellRun(latencies_ns=[0] * len(ops), kinds=[op.kind for op in ops])
    todo = iter(enumerate(ops))

    async def worker() -> None:
        for index, op in todo:
            start = time.perf_counter_ns()
            try:
                await calls[op.kind](op.arg)
            except Exception as exc:  # a benchmark that hides errors reports the speed of failing
                run.errors += 1
                run.error_kinds[type(exc).__name__] += 1
                run.first_error = run.first_error or f"{op.kind} {op.arg!r}: {type(exc).__name__}: {exc}"[:500]
            run.latencies_ns[index] = time.perf_counter_ns() - start

    tasks_before, before, cpu0, t0 = asyncio.all_tasks(), wire.copy(), time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(ops))))))
    run.wall_s = time.perf_counter() - t0
    # Work the target left running (kvstore's follow-up writes) is its own: counted in its requests
    # and CPU, not in its time, and finished before the other target's round starts.
    if left := asyncio.all_tasks() - tasks_before - {asyncio.current_task()}:
        await asyncio.wait(left, timeout=_SETTLE_TIMEOUT)
    run.cpu_s, run.wire = time.thread_time() - cpu0, wire - before
    run.round_rates = [len(ops) / run.wall_s] if run.wall_s > 0 else []
    return run


# -- the run ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class BenchReport:
    """The outcome of a run: the JSON document and the files written."""

    data: dict[str, Any]
    json_path: Path | None = None
    plot_paths: list[Path] = field(default_factory=list)

    @property
    def comparisons(self) -> list[dict[str, Any]]:
        """Per (scenario, workload): both targets' figures and kvstore/raw ratios."""
        result: list[dict[str, Any]] = self.data["comparisons"]
        return result

    def table(self) -> str:
        return report.format_table(self.comparisons)


class _Run:
    """One run's state: open targets, which key spaces each holds, the progress bar, the notes."""

    def __init__(self, config: BenchConfig, targets: dict[str, Target], bar: Any, notes: list[str],
                 log: Callable[[str], None] | None) -> None:
        self.config, self.targets, self.bar, self.notes, self.log = config, targets, bar, notes, log
        self.loaded: dict[str, set[str]] = {name: set() for name in targets}
        self.turn = 0

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        if self.log is not None:
            self.log(text)

    async def warmup(self) -> dict[str, Any]:
        """Untimed put/get/list/delete per target: warms the engine's JIT and fills the pools."""
        space = KeySpace("warmup", 3, self.config.warmup_ops, 10)
        value = random.Random(self.config.seed).randbytes(1024)
        facts = {}
        for name, target in self.targets.items():
            errors = 0
            for workload in ("put", "get", "list", "delete"):
                errors += (await run_plan(target, plan(workload, space, self.config.seed), value=value,
                                          concurrency=16)).errors
            facts[name] = {"warmup_errors": errors}
        return facts

    async def cell(self, sc: Scenario, workload: str) -> list[dict[str, Any]]:
        """Run ``workload`` on ``sc`` on every target, round by round; one result per target."""
        space = KeySpace(sc.id, sc.depth, sc.keys, sc.fanout(self.config.fanout))
        value = random.Random(f"{self.config.seed}:value:{sc.value_size}").randbytes(sc.value_size)
        for name, target in self.targets.items():
            if workload != "put" and sc.id not in self.loaded[name]:  # untimed preload
                await run_plan(target, plan("put", space, self.config.seed), value=value,
                               concurrency=_PRELOAD_CONCURRENCY)
        ops = plan(workload, space, self.config.seed)
        parts = min(self.config.rounds, len(ops))
        runs: dict[str, CellRun] = {}
        failed: dict[str, str] = {}
        if self.bar is not None:
            self.bar.set_description(f"{workload:<6} c={sc.concurrency} d={sc.depth} v={sc.value_size}")
        for part in range(parts):
            chunk = ops[part * len(ops) // parts : (part + 1) * len(ops) // parts]
            # Rotate who goes first; with two targets this alternates, with three each leads in turn.
            order = list(self.targets)
            names = order[self.turn % len(order):] + order[: self.turn % len(order)]
            self.turn += 1
            for name in names:
                if name in failed:
                    continue
                gc.collect()  # untimed: a full collection would land in whichever round crossed the threshold
                try:
                    run = await run_plan(self.targets[name], chunk, value=value, concurrency=sc.concurrency)
                except Exception as exc:
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    self.note(f"{name} {workload} {sc.id} failed: {failed[name]}")
                    continue
                runs[name] = runs[name].merge(run) if name in runs else run
                if self.bar is not None:
                    self.bar.update(len(chunk))
        results = []
        for name in self.targets:
            cell = {"target": name, "workload": workload, "scenario": sc.id, **sc.params(), "sweeps": list(sc.sweeps)}
            if name in failed:
                cell["failed"] = failed[name]
            else:
                cell.update(runs[name].summary())
                if cell["errors"]:
                    self.note(f"{name} {workload} {sc.id}: {cell['errors']} errors, first: {cell['first_error']}")
            (self.loaded[name].discard if workload == "delete" else self.loaded[name].add)(sc.id)
            results.append(cell)
        return results


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


async def arun_benchmarks(
    config: BenchConfig | None = None,
    *,
    endpoint: str,
    engine: dict[str, Any] | None = None,
    results_dir: Path | None = RESULTS_DIR,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the benchmark against the engine at ``endpoint`` (see the module docstring).

    ``results_dir=None`` writes nothing (the report is still returned); ``log`` receives the run's
    notes (a target that could not be opened, errors in a cell) as they happen.
    """
    config = config or standard_config()
    config.validate()
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dt%H%M%Sz}-{config.label}-{secrets.token_hex(2)}"
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "schema": 2,
        "run_id": run_id,
        "started_at": _now(),
        "config": dataclasses.asdict(config),
        **report.environment(),
        "engine": engine or {"endpoint": endpoint, "managed": False},
        "data_path": {"latency_ms": config.latency_ms, "via": "FaultProxy" if config.latency_ms else "direct"},
        "counting": COUNTING,
    }
    wire.install()
    notes: list[str] = []
    results: list[dict[str, Any]] = []
    tables = {name: f"kvbench-{run_id}-{name}" for name in config.targets}
    async with run_tables(endpoint, list(tables.values())):
        with data_path(endpoint, config.latency_ms) as target_endpoint:
            async with contextlib.AsyncExitStack() as stack:
                targets: dict[str, Target] = {}
                doc["targets"] = {}
                for name, table in tables.items():
                    try:
                        targets[name] = await open_target(name, target_endpoint, table, config.max_parallel)
                    except Exception as exc:  # recorded; the run goes on with the others
                        doc["targets"][name] = {"unavailable": f"{type(exc).__name__}: {exc}"}
                        notes.append(f"target {name} unavailable: {exc}")
                        continue
                    stack.push_async_callback(targets[name].aclose)
                    doc["targets"][name] = {**targets[name].describe(), "table": table}
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=config.total_ops() * len(targets), unit="op", file=sys.stderr, dynamic_ncols=True)
                run = _Run(config, targets, bar, notes, log)
                try:
                    for name, facts in (await run.warmup()).items():
                        doc["targets"][name].update(facts)
                    for scenario in config.scenarios():
                        for workload in scenario.workloads:
                            results += await run.cell(scenario, workload)
                finally:
                    if bar is not None:
                        bar.close()
    doc.update(finished_at=_now(), duration_s=round(time.monotonic() - t0, 1), load_avg_at_end=report.load_avg(),
               results=results, comparisons=report.compare(results), notes=notes)
    out = BenchReport(doc)
    if results_dir is not None:
        out.json_path = report.write_json(doc, results_dir, run_id)
        if plots:
            out.plot_paths = report.write_plots(doc, results_dir, run_id)
    return out


def run_benchmarks(
    config: BenchConfig | None = None,
    *,
    endpoint: str | None = None,
    results_dir: Path | None = RESULTS_DIR,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the benchmark and return its report; start DynamoDB Local if ``endpoint`` is None.

    Blocking (it runs its own event loop); from async code use :func:`arun_benchmarks`.
    """
    from benchmarks.engine import endpoint_or_local
    from kvstore.engine import ENGINE_PACKAGE

    engine = None if endpoint else {"managed": True, "name": "DynamoDB Local", "package": ENGINE_PACKAGE}
    with endpoint_or_local(endpoint) as url:
        if engine is not None:
            engine["endpoint"] = url
        return asyncio.run(arun_benchmarks(config, endpoint=url, engine=engine, results_dir=results_dir,
                                           progress=progress, plots=plots, log=log))

