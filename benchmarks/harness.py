"""Run a benchmark: engine, tables, one worker per target, every cell, then JSON and plots.

:func:`run_benchmarks` is the entry point for code (``python -m benchmarks`` and a future
``kvstore bench`` both call it); :func:`arun_benchmarks` is the same for callers already inside
an event loop. A run:

1. starts DynamoDB Local unless an endpoint is given (the run's engine, recorded with its version);
2. creates one PAY_PER_REQUEST table per target (deleted at the end, whatever happens);
3. optionally puts the latency proxy in the data path (:mod:`benchmarks.latency`);
4. starts one worker process per target and warms each up (untimed);
5. runs every cell in rounds: per scenario and workload, the plan is cut into ``rounds`` slices
   and the targets take turns slice by slice, alternating which goes first, so that load bursts
   on a shared machine and slow drift of the engine (JIT, GC, growing tables) hit both alike;
6. writes ``results/<run id>.json`` and ``latest.json``, the PNG plots, and returns a report.

A target that cannot be opened (kvstore's backend not importable yet, say) is recorded as
unavailable and the run goes on with the others; ratios then read None.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.config import BenchConfig, Scenario, standard_config
from benchmarks.latency import DataPath, data_path
from benchmarks.report import compare, format_table, write_json
from benchmarks.tables import run_tables, table_name
from benchmarks.targets import TargetSettings
from benchmarks.worker import CellSpec, TargetUnavailable, TargetWorker, WarmupSpec, WorkerDied

__all__ = ["RESULTS_DIR", "BenchReport", "arun_benchmarks", "run_benchmarks"]

#: Where results go unless the caller says otherwise.
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: How requests and items are counted, written into every result file.
COUNTING = (
    "wire.*: every HTTP attempt sent by the target's process, counted in aiobotocore's "
    "AioEndpoint._send (same hook for both targets, retries included); items = write/delete "
    "entries of BatchWriteItem, keys of BatchGetItem/transactions, 1 per single-item call, 0 per "
    "Query. self_counted.*: the raw target's own count (must equal wire.*). proxy.*: requests the "
    "latency proxy forwarded, when one is in the path. cpu_ms_per_op: user+system CPU time of the "
    "target's worker process per operation (the client's own cost; robust to other load on the "
    "machine, unlike ops/s and latency). peak_rss_mb: getrusage max RSS of the "
    "target's worker process during the cell (VmHWM reset before each cell; see targets.*.rss_method)."
)


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
        """A short plain-text table of the comparisons."""
        return format_table(self.comparisons)


class _Progress:
    """tqdm on stderr when asked for, otherwise nothing (tqdm is imported only when used)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="op", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def shrink(self, n: int) -> None:
        """Take ``n`` operations off the total (a target dropped before it ran any)."""
        if self._bar is not None:
            self._bar.total -= n
            self._bar.refresh()

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description(text, refresh=False)

    def phase(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _new_run_id(label: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%Sz")
    return f"{stamp}-{label}-{secrets.token_hex(2)}"


async def _start_workers(
    config: BenchConfig, endpoint: str, run_id: str, notes: list[str]
) -> tuple[dict[str, TargetWorker], dict[str, Any]]:
    workers: dict[str, TargetWorker] = {}
    facts: dict[str, Any] = {}
    pending = {
        name: TargetWorker(
            name,
            TargetSettings(endpoint=endpoint, table=table_name(run_id, name), max_parallel=config.max_parallel),
        )
        for name in config.targets
    }
    started = await asyncio.gather(*(w.start() for w in pending.values()), return_exceptions=True)
    for (name, worker), outcome in zip(pending.items(), started, strict=True):
        if isinstance(outcome, TargetUnavailable):
            facts[name] = {"unavailable": str(outcome)}
            notes.append(f"target {name} unavailable: {outcome}")
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            workers[name] = worker
            facts[name] = {**outcome, "table": table_name(run_id, name)}
    return workers, facts


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
    """Run the benchmark against a running engine at ``endpoint`` (see the module docstring).

    ``results_dir=None`` writes nothing (the report is still returned). ``log`` receives one-line
    notes (target unavailable, cell failed) as they happen.
    """
    config = config or standard_config()
    config.validate()
    run_id = _new_run_id(config.label)
    started_at, t0 = _now(), time.monotonic()
    notes: list[str] = []
    scenarios = config.scenarios()
    results: list[dict[str, Any]] = []
    doc: dict[str, Any] = {
        "schema": 1,
        "run_id": run_id,
        "started_at": started_at,
        "config": dataclasses.asdict(config),
        "machine": machine.machine_info(),
        "software": machine.software_info(),
        "engine": engine or machine.engine_info(endpoint, jar=None, managed=False),
        "counting": COUNTING,
    }

    def note(text: str) -> None:
        notes.append(text)
        bar.write(text)
        if log is not None:
            log(text)

    tables = [table_name(run_id, name) for name in config.targets]
    bar = _Progress(0, enabled=False)
    async with run_tables(endpoint, tables), data_path(endpoint, config.latency_ms) as path:
        doc["data_path"] = path.describe()
        workers, doc["targets"] = await _start_workers(config, path.endpoint, run_id, notes)
        for text in notes:
            if log is not None:
                log(text)
        bar = _Progress(config.total_ops() * len(workers), enabled=progress)
        try:
            for name, worker in list(workers.items()):
                bar.describe(f"warm-up {name}")
                try:
                    spec = WarmupSpec(config.warmup_ops, config.seed)
                    warm = await worker.request("warmup", spec, on_phase=bar.phase)
                    doc["targets"][name]["warmup"] = warm
                except (RuntimeError, WorkerDied) as exc:
                    note(f"target {name} failed its warm-up, dropped: {str(exc).splitlines()[-1]}")
                    doc["targets"][name]["unavailable"] = str(exc)
                    worker.kill()
                    del workers[name]
                    bar.shrink(config.total_ops())
            cells = _Cells(config, workers, bar, path, note)
            for scenario in scenarios:
                for workload in scenario.workloads:
                    results.extend(await cells.run(scenario, workload))
        finally:
            bar.close()
            await asyncio.gather(*(w.stop() for w in workers.values()), return_exceptions=True)

    doc["finished_at"] = _now()
    doc["machine"]["load_avg_at_end"] = machine.load_avg()
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    doc["results"] = results
    doc["comparisons"] = compare(results)
    doc["notes"] = notes
    report = BenchReport(doc)
    if results_dir is not None:
        report.json_path = write_json(doc, results_dir, run_id)
        if plots:
            from benchmarks.plots import write_plots

            report.plot_paths = write_plots(doc, results_dir, run_id)
    return report


class _Cells:
    """Runs the cells of one workload on one scenario, round by round, the targets taking turns."""

    def __init__(
        self,
        config: BenchConfig,
        workers: dict[str, TargetWorker],
        bar: _Progress,
        path: DataPath,
        note: Callable[[str], None],
    ) -> None:
        self.config = config
        self.workers = workers
        self.targets = list(workers)  # every target that started, in a fixed order
        self.bar = bar
        self.path = path
        self.note = note
        self.turn = 0  # alternates which target goes first, round after round

    async def run(self, scenario: Scenario, workload: str) -> list[dict[str, Any]]:
        """One result per target (a failed target's result says so under ``failed``)."""
        sc = scenario
        cells: dict[str, dict[str, Any]] = {
            name: {"target": name, "workload": workload, "scenario": sc.id, **sc.params(), "sweeps": list(sc.sweeps)}
            for name in self.targets
        }
        progressed = dict.fromkeys(self.targets, 0)
        forwarded = dict.fromkeys(self.targets, 0)
        parts = min(self.config.rounds, sc.keys)
        for part in range(parts):
            order = self.targets if self.turn % 2 == 0 else self.targets[::-1]
            self.turn += 1
            for name in order:
                if name not in self.workers or "failed" in cells[name]:
                    continue
                self.bar.describe(f"{workload:<6} c={sc.concurrency} d={sc.depth} v={sc.value_size} {name}")

                def advance(n: int, name: str = name) -> None:
                    progressed[name] += n
                    self.bar.update(n)

                self.path.reset_counts()
                spec = CellSpec(sc, workload, self.config.fanout, self.config.seed, part, parts)
                try:
                    summary = await self.workers[name].request(
                        "cell", spec, on_progress=advance, on_phase=self.bar.phase
                    )
                except (RuntimeError, WorkerDied) as exc:
                    cells[name]["failed"] = str(exc)
                    self.note(f"{name} {workload} {sc.id} failed: {str(exc).strip().splitlines()[-1]}")
                    if isinstance(exc, WorkerDied):
                        self.workers.pop(name).kill()
                    continue
                forwarded[name] += self.path.forwarded() or 0
                if not summary.get("partial"):
                    cells[name].update(summary)
        for name, cell in cells.items():
            self.bar.update(max(0, sc.keys - progressed[name]))
            if "failed" in cell:
                continue
            if self.path.proxy is not None:
                cell["proxy"] = {"requests_per_op": round(forwarded[name] / max(1, sc.keys), 3)}
            if cell.get("errors"):
                self.note(f"{name} {workload} {sc.id}: {cell['errors']} errors, first: {cell['first_error']}")
            _check_self_count(cell, self.note)
        return list(cells.values())


def _check_self_count(cell: dict[str, Any], note: Callable[[str], None]) -> None:
    """The raw target counts its own requests; if the wire tap disagrees, the tap is wrong."""
    own, wire = cell.get("self_counted"), cell.get("wire")
    fields = ("requests_per_op", "items_per_op")
    if own and wire and any(own[f] != wire[f] for f in fields):
        note(f"wire tap disagrees with raw's own count in {cell['workload']} {cell['scenario']}: {wire} vs {own}")


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
    options: dict[str, Any] = {"results_dir": results_dir, "progress": progress, "plots": plots, "log": log}
    if endpoint:
        return asyncio.run(arun_benchmarks(config, endpoint=endpoint, **options))
    from kvstore.engine import LocalEngine, install_engine

    jar = install_engine()
    with LocalEngine.start() as eng:
        facts = machine.engine_info(eng.endpoint, jar=jar, managed=True)
        return asyncio.run(arun_benchmarks(config, endpoint=eng.endpoint, engine=facts, **options))
