"""Client CPU per operation: kvstore, raw aiobotocore and raw aiodynamo, same engine, same run.

    .venv/bin/python -m benchmarks.experiments.cpu [--ops 300] [--rounds 3] [--concurrency 1,64]
        [--clients kvstore,kvstore-plain,aiobotocore,aiodynamo] [--endpoint URL] [--json PATH]

Per client and operation, ``ops`` operations run ``rounds`` times (clients take turns round by
round, the first one rotating), in a closed loop of ``concurrency`` tasks; CPU is
``time.thread_time()`` of the event-loop thread around each round, so it is the client's own cost
(the engine runs in another process). Figures are the median round's.

- **get**: a consistent GetItem of an existing 1 KiB record at depth 3 (kvstore: ``backend.get``,
  which at concurrency > 1 with coalescing shares BatchGetItem calls);
- **put**: the record and its two folder pointers in one BatchWriteItem (kvstore: ``backend.put``;
  aiobotocore: :class:`benchmarks.targets.RawTarget`; aiodynamo: ``Client.batch_write`` with the
  same three items).

aiodynamo (PyPI ``aiodynamo``) needs an HTTP adapter; this uses its aiohttp one. A client whose
package is missing is reported as unavailable; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.engine import endpoint_or_local
from benchmarks.experiments.closed_loop import Op, closed_loop
from benchmarks.report import environment
from benchmarks.runner import RESULTS_DIR
from benchmarks.targets import ROOT_PATH, open_target, pointer, prefixes, run_tables, split
from benchmarks.workloads import KeySpace

CLIENTS = ("kvstore", "kvstore-plain", "aiobotocore", "aiodynamo")
OPERATIONS = ("get", "put")
_VALUE_SIZE = 1024


async def _open_aiodynamo(stack: contextlib.AsyncExitStack, endpoint: str, table: str,
                          value: bytes) -> dict[str, Op]:
    import aiohttp
    from aiodynamo.client import Client
    from aiodynamo.credentials import Key, StaticCredentials
    from aiodynamo.http.aiohttp import AIOHTTP
    from aiodynamo.models import BatchWriteRequest
    from yarl import URL

    session = await stack.enter_async_context(aiohttp.ClientSession())
    client = Client(AIOHTTP(session), StaticCredentials(Key("local", "local")), "us-east-1", URL(endpoint))
    tbl = client.table(table)

    async def get(key: str) -> Any:
        path, name = split(key)
        return await tbl.get_item({"Path": path, "Key": name}, consistent_read=True)

    async def put(key: str) -> None:
        items = [{"Path": p, "Key": k} for p, k in (pointer(f) for f in prefixes(key))]
        path, name = split(key)
        items.append({"Path": path or ROOT_PATH, "Key": name, "Value": value})
        while items:
            out = await client.batch_write({table: BatchWriteRequest(items_to_put=items)})
            items = out[table].unput_items if table in out else []

    return {"get": get, "put": put}


async def _open(name: str, stack: contextlib.AsyncExitStack, endpoint: str, table: str,
                value: bytes) -> dict[str, Op]:
    if name == "aiodynamo":
        return await _open_aiodynamo(stack, endpoint, table, value)
    target = await open_target("raw" if name == "aiobotocore" else name, endpoint, table, 128)
    stack.push_async_callback(target.aclose)
    return {"get": target.get, "put": lambda key: target.put(key, value)}


async def measure(endpoint: str, clients: tuple[str, ...], ops: int, rounds: int,
                  concurrency: tuple[int, ...], seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    value = rng.randbytes(_VALUE_SIZE)
    table = f"kvbench-cpu-{int(time.time())}"
    space = KeySpace("cpu", 3, ops, 10)
    keys = space.all_keys()
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    async with run_tables(endpoint, [table]), contextlib.AsyncExitStack() as stack:
        opened: dict[str, dict[str, Op]] = {}
        for name in clients:
            try:
                opened[name] = await _open(name, stack, endpoint, table, value)
            except Exception as exc:  # e.g. aiodynamo not installed
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        first = next(iter(opened.values()))
        await closed_loop(first["put"], keys, 32)  # every get finds its record
        for client in opened.values():  # warm-up: connections, engine JIT
            for operation in OPERATIONS:
                await closed_loop(client[operation], keys[: min(100, ops)], 8)
        for operation in OPERATIONS:
            for conc in concurrency:
                samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in opened}
                order = list(opened)
                for r in range(rounds):
                    plan = rng.sample(keys, len(keys))
                    for name in order[r % len(order):] + order[: r % len(order)]:
                        samples[name].append(await closed_loop(opened[name][operation], plan, conc))
                for name, got in samples.items():
                    cpu = statistics.median(s[0] for s in got) * 1000 / ops
                    wall = statistics.median(s[1] for s in got)
                    rows.append({"client": name, "operation": operation, "concurrency": conc,
                                 "cpu_ms_per_op": round(cpu, 4), "ops_per_s": round(ops / wall, 1),
                                 "cpu_ms_per_op_rounds": [round(s[0] * 1000 / ops, 4) for s in got],
                                 "errors": sum(s[2] for s in got)})
    return {"rows": rows, "unavailable": unavailable}


def table(rows: list[dict[str, Any]]) -> str:
    """CPU ms/op per client, one row per (operation, concurrency), with each client over aiobotocore."""
    clients = list(dict.fromkeys(r["client"] for r in rows))
    cells = {(r["operation"], r["concurrency"], r["client"]): r for r in rows}
    header = f"{'op':<4} {'conc':>4} | " + " | ".join(f"{c:>22}" for c in clients)
    lines = ["CPU ms/op (ops/s) [x aiobotocore CPU]", header, "-" * len(header)]
    for op, conc in dict.fromkeys((r["operation"], r["concurrency"]) for r in rows):
        base = cells.get((op, conc, "aiobotocore"))
        parts = []
        for c in clients:
            r = cells.get((op, conc, c))
            if r is None:
                parts.append(f"{'-':>22}")
                continue
            x = f"[{r['cpu_ms_per_op'] / base['cpu_ms_per_op']:.2f}x]" if base and base["cpu_ms_per_op"] else ""
            err = "!" if r["errors"] else ""
            parts.append(f"{r['cpu_ms_per_op']:.3f} ({r['ops_per_s']:>5,.0f}) {x:>7}{err}".rjust(22))
        lines.append(f"{op:<4} {conc:>4} | " + " | ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.cpu", description=__doc__.split("\n")[0])
    p.add_argument("--ops", type=int, default=300, help="operations per round (default 300)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", default="1,64", help="closed-loop tasks, e.g. 1 or 1,64 (default 1,64)")
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"subset of {','.join(CLIENTS)}")
    p.add_argument("--endpoint", help="DynamoDB endpoint (default: start DynamoDB Local)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "cpu.json")
    args = p.parse_args(argv)
    clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    if not clients or set(clients) - set(CLIENTS):
        p.error(f"--clients: choose from {','.join(CLIENTS)}")
    concurrency = tuple(int(c) for c in args.concurrency.split(","))
    with endpoint_or_local(args.endpoint) as url:
        out = asyncio.run(measure(url, clients, args.ops, args.rounds, concurrency))
    doc = {"experiment": "cpu", "ops": args.ops, "rounds": args.rounds, "concurrency": list(concurrency),
           "value_size": _VALUE_SIZE, "depth": 3, **environment(), **out}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(out["rows"]))
    for name, why in out["unavailable"].items():
        print(f"unavailable: {name}: {why}")
    print(f"\nresults: {args.json}")
    return 1 if out["unavailable"] or any(r["errors"] for r in out["rows"]) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
