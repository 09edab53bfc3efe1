"""Lanes of group commit and coalesced reads: throughput and client CPU per lane count, same run.

    .venv/bin/python -m benchmarks.experiments.lanes [--ops 3000] [--rounds 3] [--lanes 1,2,3,4,6]
        [--concurrency 64] [--folders 10] [--latency-ms 0] [--endpoint URL] [--json PATH]

What :data:`kvstore.dynamodb.coalesce.WRITE_LANES` and ``READ_LANES`` rest on. Per operation and lane count, ``ops``
operations run ``rounds`` times in a closed loop of ``concurrency`` tasks, through a fresh
``GroupReader`` / ``GroupWriter`` with that many lanes; lane counts take turns round by round (the
first one rotating), so noise hits all of them. CPU is ``time.thread_time()`` of the event-loop
thread around each round (the engine runs in another process). Figures are the median round's.

- **get**: ``GroupReader.get(path, name)``, a consistent read of an existing 1 KiB record;
- **put**: ``GroupWriter.write([*pointers, record])``, the requests a backend put sends (built by
  ``FolderPointers.requests_for`` and ``record_item``, one fresh version per put).

Keys have depth 3, spread over ``folders`` leaf folders (``lanes/f3/k17``), so concurrent puts
share the pointer of ``lanes/`` and of their folder. *Items/put* is what a put cost in written
items (requests sent, minus those shared with another put in the same batch); *requests/op*
counts every request the table sent (``Table.requests``); p50/p95 are per operation, over every
round. The client is the backend's own (``DynamoDBBackend.table``), so it is configured exactly as
in production.

On loopback a lane's request returns in a millisecond or two, so CPU decides and one lane can look
as good as two. ``--latency-ms 5`` (a FaultProxy in its own thread, as ``python -m benchmarks
--latency-ms``) shows what extra lanes are for: with real round trips, one lane caps throughput at
one batch per round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.engine import data_path, endpoint_or_local
from benchmarks.experiments.closed_loop import Op, closed_loop
from benchmarks.report import environment
from benchmarks.runner import RESULTS_DIR
from benchmarks.targets import run_tables
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.coalesce import READ_LANES, WRITE_LANES, GroupReader, GroupWriter
from kvstore.dynamodb.pointers import FolderPointers
from kvstore.dynamodb.records import new_version, record_item
from kvstore.dynamodb.table import Table
from kvstore.entry import Entry
from kvstore.keys import split

OPERATIONS = ("get", "put")
_VALUE_SIZE = 1024
_DEADLINE = 30.0  # the backend's default write_deadline


class Sample(NamedTuple):
    cpu: float  # s
    wall: float  # s
    errors: int
    requests: Counter[str]  # requests the table sent, per operation
    shared: int  # write requests saved by sharing (puts only)
    latencies: list[float]  # s, one per operation


def _put(writer: GroupWriter, value: bytes) -> Op:
    async def put(key: str) -> bool:
        version = new_version()
        record = {"PutRequest": {"Item": record_item(Entry(key, value), version)}}
        return await writer.write([*FolderPointers.requests_for([key], version), record])

    return put


def _get(reader: GroupReader) -> Op:
    return lambda key: reader.get(*split(key))


async def _sample(table: Table, operation: str, lanes: int, value: bytes, keys: list[str],
                  concurrency: int) -> Sample:
    """One round of ``operation`` through a fresh reader or writer with ``lanes`` lanes."""
    writer = GroupWriter(table, lanes=lanes, deadline=_DEADLINE)
    op = _put(writer, value) if operation == "put" else _get(GroupReader(table, lanes=lanes, deadline=_DEADLINE))
    sent = table.requests.copy()
    latencies: list[float] = []
    cpu, wall, errors = await closed_loop(op, keys, concurrency, latencies)
    return Sample(cpu, wall, errors, table.requests - sent, writer.shared_items, latencies)


def _percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def measure(endpoint: str, via: str, ops: int, rounds: int, lanes: tuple[int, ...], concurrency: int,
                  folders: int, seed: int = 1) -> list[dict[str, Any]]:
    """The rows of the table; tables are made at ``endpoint``, operations go through ``via``."""
    rng = random.Random(seed)
    value = rng.randbytes(_VALUE_SIZE)
    name = f"kvbench-lanes-{int(time.time())}"
    keys = [f"lanes/f{i % folders}/k{i}" for i in range(ops)]
    sent = sum(len(FolderPointers.requests_for([k], "")) + 1 for k in keys)  # write requests, one round
    conf = {"endpoint": via, "table": name, "region": "us-east-1", "access_key": "local",
            "secret_key": "local", "max_parallel": "128"}
    rows: list[dict[str, Any]] = []
    async with run_tables(endpoint, [name]), await DynamoDBBackend.create(conf, environ={}) as backend:
        table = backend.table
        await closed_loop(_put(GroupWriter(table, deadline=_DEADLINE), value), keys, 32)  # every get finds its record
        for n in lanes:  # warm-up: connections, engine JIT
            for operation in OPERATIONS:
                await _sample(table, operation, n, value, keys[: min(200, ops)], concurrency)
        for operation in OPERATIONS:
            samples: dict[int, list[Sample]] = {n: [] for n in lanes}
            for r in range(rounds):
                plan = rng.sample(keys, len(keys))
                for n in lanes[r % len(lanes):] + lanes[: r % len(lanes)]:
                    samples[n].append(await _sample(table, operation, n, value, plan, concurrency))
            for n, got in samples.items():
                requests = sum((s.requests for s in got), Counter[str]())
                rows.append({
                    "operation": operation, "lanes": n,
                    "ops_per_s": round(ops / statistics.median(s.wall for s in got), 1),
                    "cpu_ms_per_op": round(statistics.median(s.cpu for s in got) * 1000 / ops, 4),
                    "items_per_put": round(statistics.median(sent - s.shared for s in got) / ops, 3)
                    if operation == "put" else None,
                    "requests_per_op": round(statistics.median(s.requests.total() for s in got) / ops, 4),
                    "p50_ms": _percentile_ms([t for s in got for t in s.latencies], 0.50),
                    "p95_ms": _percentile_ms([t for s in got for t in s.latencies], 0.95),
                    "requests": {k: round(v / (ops * rounds), 4) for k, v in sorted(requests.items())},
                    "cpu_ms_per_op_rounds": [round(s.cpu * 1000 / ops, 4) for s in got],
                    "ops_per_s_rounds": [round(ops / s.wall, 1) for s in got],
                    "errors": sum(s.errors for s in got),
                })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """One row per (operation, lanes); ``*`` marks the lane count kvstore uses for that operation."""
    header = (f"{'op':<4} {'lanes':>6} | {'ops/s':>7} | {'CPU ms/op':>9} | {'items/put':>9} | {'requests/op':>11} | "
              f"{'p50 ms':>7} | {'p95 ms':>7}")
    title = f"operations sharing requests, by lane count (* = kvstore's: get {READ_LANES}, put {WRITE_LANES})"
    lines = [title, header, "-" * len(header)]
    for r in rows:
        ours = READ_LANES if r["operation"] == "get" else WRITE_LANES
        mark = ("*" if r["lanes"] == ours else "") + ("!" if r["errors"] else "")
        items = "-" if r["items_per_put"] is None else f"{r['items_per_put']:.3f}"
        lines.append(f"{r['operation']:<4} {r['lanes']:>4}{mark:<2} | {r['ops_per_s']:>7,.0f} | "
                     f"{r['cpu_ms_per_op']:>9.3f} | {items:>9} | {r['requests_per_op']:>11.4f} | "
                     f"{r['p50_ms']:>7.1f} | {r['p95_ms']:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.lanes", description=__doc__.split("\n")[0])
    p.add_argument("--ops", type=int, default=3000, help="operations per round (default 3000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lanes", default="1,2,3,4,6", help="lane counts to compare (default 1,2,3,4,6)")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop tasks (default 64)")
    p.add_argument("--folders", type=int, default=10, help="leaf folders the keys spread over (default 10)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added per request through a FaultProxy")
    p.add_argument("--endpoint", help="DynamoDB endpoint (default: start DynamoDB Local)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "lanes.json")
    args = p.parse_args(argv)
    lanes = tuple(int(n) for n in args.lanes.split(",") if n.strip())
    if not lanes or min(lanes) < 1 or min(args.ops, args.rounds, args.concurrency, args.folders) < 1:
        p.error("--lanes, --ops, --rounds, --concurrency and --folders must be positive")
    with endpoint_or_local(args.endpoint) as url, data_path(url, args.latency_ms) as via:
        rows = asyncio.run(measure(url, via, args.ops, args.rounds, lanes, args.concurrency, args.folders))
    doc = {"experiment": "lanes", "ops": args.ops, "rounds": args.rounds, "lanes": list(lanes),
           "default_lanes": {"get": READ_LANES, "put": WRITE_LANES}, "concurrency": args.concurrency,
           "folders": args.folders, "latency_ms": args.latency_ms,
           "value_size": _VALUE_SIZE, "depth": 3, **environment(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print(f"\nresults: {args.json}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
