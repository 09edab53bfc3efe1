"""Experiment: how should a versioned write (CAS) reach DynamoDB, and its folder pointers with it?

A versioned create (``if_version=ABSENT``) must make the key reachable from ``list`` (its folder
pointers) and succeed only if the key is absent; a versioned update or delete only if the key holds
a given version. Two request plans can do each:

``*-txn``
    One TransactWriteItems: the record's Put (or Delete) with its condition, plus a Put per folder
    pointer. Atomic: a refused write writes nothing, not even a pointer. What ``commit`` sends for
    several writes.
``*-pointers-first`` / ``delete-item``
    One BatchWriteItem with the pointers (none at depth 1), then one conditional PutItem of the
    record (``ReturnValuesOnConditionCheckFailure=ALL_OLD``); a delete is one conditional
    DeleteItem. Two sequential round trips for a put with pointers, but no transaction.

``*-kvstore`` rows time the recipes themselves (``create``, ``put_versioned``,
``delete_versioned``), i.e. the plan kvstore chose plus its own layers; ``put`` is the plain,
unconditional put (one BatchWriteItem), for scale.

Each cell writes fresh keys at a given depth (depth d has d-1 folder pointers, all keys of a cell
share their folders) with a given number of concurrent writers, each op timed on its own. Plans
are interleaved round by round and each cell reports the median over rounds of p50, p95 and
throughput, so a drifting engine does not favour whichever plan ran first.

Run (starts DynamoDB Local unless ``--endpoint`` or ``AWS_DYNAMODB_ENDPOINT`` names one)::

    .venv/bin/python -m benchmarks.experiments.cas [--ops 200] [--rounds 3] [--json out.json]

The figures and the decision (pointers-first) are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benchmarks.engine import endpoint_or_local
from benchmarks.report import percentile
from kvstore import ABSENT, Entry
from kvstore.backend import Absent
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.records import (
    item_key,
    new_version,
    pointer_items,
    record_item,
    version_condition,
)
from kvstore.recipes import create, delete_versioned, put_versioned

__all__ = ["PATHS", "main", "run"]

Op = Callable[[DynamoDBBackend, str], Awaitable[None]]


_VALUE = b"x" * 100
_VERSIONS: dict[str, str] = {}
"""The current version of each key that a timed update or delete is conditional on."""


async def _txn_put(backend: DynamoDBBackend, key: str, expected: str | Absent) -> str:
    """One TransactWriteItems: the conditional record Put and a Put per folder pointer."""
    version = new_version()
    table = backend.table.name
    items: list[dict[str, Any]] = [
        {"Put": {"TableName": table, "Item": record_item(Entry(key, _VALUE), version), **version_condition(expected)}}
    ]
    items += [{"Put": {"TableName": table, "Item": p}} for p in pointer_items(key, new_version())]
    await backend.table.call("transact_write_items", TransactItems=items)
    return version


async def _pointers_first_put(backend: DynamoDBBackend, key: str, expected: str | Absent) -> str:
    """One BatchWriteItem with the folder pointers (if any), then one conditional PutItem."""
    pointers = [{"PutRequest": {"Item": p}} for p in pointer_items(key, new_version())]
    if pointers:
        await backend.writer.write(pointers)
    version = new_version()
    item = record_item(Entry(key, _VALUE), version)
    await backend.table.call("put_item", key=key, Item=item, **version_condition(expected))
    return version


async def _create_txn(backend: DynamoDBBackend, key: str) -> None:
    await _txn_put(backend, key, ABSENT)


async def _create_pointers_first(backend: DynamoDBBackend, key: str) -> None:
    await _pointers_first_put(backend, key, ABSENT)


async def _create_kvstore(backend: DynamoDBBackend, key: str) -> None:
    await create(backend, Entry(key, _VALUE))


async def _update_txn(backend: DynamoDBBackend, key: str) -> None:
    _VERSIONS[key] = await _txn_put(backend, key, _VERSIONS[key])


async def _update_pointers_first(backend: DynamoDBBackend, key: str) -> None:
    _VERSIONS[key] = await _pointers_first_put(backend, key, _VERSIONS[key])


async def _update_kvstore(backend: DynamoDBBackend, key: str) -> None:
    _VERSIONS[key] = await put_versioned(backend, Entry(key, _VALUE), if_version=_VERSIONS[key])


# Pruning emptied folders follows a delete in every plan alike, so the raw plans leave it out.
async def _delete_txn(backend: DynamoDBBackend, key: str) -> None:
    delete = {"TableName": backend.table.name, "Key": item_key(key), **version_condition(_VERSIONS[key])}
    await backend.table.call("transact_write_items", TransactItems=[{"Delete": delete}])


async def _delete_item(backend: DynamoDBBackend, key: str) -> None:
    await backend.table.call("delete_item", key=key, Key=item_key(key), **version_condition(_VERSIONS[key]))


async def _delete_kvstore(backend: DynamoDBBackend, key: str) -> None:
    await delete_versioned(backend, key, if_version=_VERSIONS[key])


async def _plain_put(backend: DynamoDBBackend, key: str) -> None:
    await backend.put(Entry(key, _VALUE))


#: The request plans compared, by name. ``*-kvstore`` is what the recipes send (the plan chosen,
#: plus kvstore's own layers); ``put`` is the unconditional put, for scale.
PATHS: dict[str, Op] = {
    "create-txn": _create_txn,
    "create-pointers-first": _create_pointers_first,
    "create-kvstore": _create_kvstore,
    "update-txn": _update_txn,
    "update-pointers-first": _update_pointers_first,
    "update-kvstore": _update_kvstore,
    "delete-txn": _delete_txn,
    "delete-item": _delete_item,
    "delete-kvstore": _delete_kvstore,
    "put": _plain_put,
}

#: Plans that need the key to exist (created, untimed, before the cell starts).
_NEEDS_KEY = {name for name in PATHS if name.startswith(("update-", "delete-"))}


def _key(depth: int, i: int, run_id: str) -> str:
    folders = [f"d{j}" for j in range(depth - 1)]
    return "/".join([run_id, *folders, f"k{i}"]) if depth > 1 else f"{run_id}-k{i}"


async def _cell(backend: DynamoDBBackend, path: str, depth: int, concurrency: int, ops: int) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:8]
    keys = [_key(depth, i, run_id) for i in range(ops)]
    if path in _NEEDS_KEY:
        for key in keys:
            _VERSIONS[key] = await create(backend, Entry(key, _VALUE))
    op = PATHS[path]
    latencies: list[float] = []
    queue = list(reversed(keys))

    async def worker() -> None:
        while queue:
            key = queue.pop()
            t0 = time.perf_counter()
            await op(backend, key)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "ops_per_s": ops / wall}


async def run(
    endpoint: str,
    *,
    ops: int,
    rounds: int,
    depths: Sequence[int],
    concurrencies: Sequence[int],
    paths: Sequence[str],
) -> list[dict[str, Any]]:
    """Every (depth, concurrency, path) cell, as JSON-ready rows with median figures."""
    conf = {
        "endpoint": endpoint,
        "table": f"bench-cas-{uuid.uuid4().hex[:8]}",
        "region": "us-east-1",
        "access_key": "local",
        "secret_key": "local",
        "billing_mode": "PAY_PER_REQUEST",
    }
    rows: list[dict[str, Any]] = []
    async with await DynamoDBBackend.create(conf) as backend:
        # Warm the JVM and the connection pool so the first cell is not charged for it.
        for i in range(50):
            await _create_txn(backend, f"warm/{i}")
            await _create_pointers_first(backend, f"warm/x{i}")
        for depth in depths:
            for conc in concurrencies:
                samples: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
                for _ in range(rounds):
                    for path in paths:
                        samples[path].append(await _cell(backend, path, depth, conc, ops))
                for path in paths:
                    row: dict[str, Any] = {"depth": depth, "pointers": depth - 1, "concurrency": conc, "path": path}
                    for metric in ("p50_ms", "p95_ms", "ops_per_s"):
                        row[metric] = round(statistics.median(s[metric] for s in samples[path]), 2)
                    rows.append(row)
                    print(
                        f"depth={depth} conc={conc:>3} {path:<22} p50={row['p50_ms']:7.2f} ms  "
                        f"p95={row['p95_ms']:7.2f} ms  {row['ops_per_s']:8.1f} ops/s",
                        file=sys.stderr,
                        flush=True,
                    )
    return rows


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print (or save) the table of figures."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.cas", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_DYNAMODB_ENDPOINT"))
    p.add_argument("--ops", type=int, default=200, help="operations per cell and round (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--depths", type=_ints, default=[1, 3, 6], help="key depths (default 1,3,6)")
    p.add_argument("--concurrency", type=_ints, default=[1, 16], help="writers (default 1,16)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"subset of {','.join(PATHS)} (default all)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    paths = [x for x in args.paths.split(",") if x]
    unknown = set(paths) - set(PATHS)
    if unknown:
        p.error(f"unknown paths: {', '.join(sorted(unknown))}")
    with endpoint_or_local(args.endpoint) as endpoint:
        rows = asyncio.run(
            run(
                endpoint,
                ops=args.ops,
                rounds=args.rounds,
                depths=args.depths,
                concurrencies=args.concurrency,
                paths=paths,
            )
        )
    text = json.dumps(rows, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
