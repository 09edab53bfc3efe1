"""Experiment: what does CachedBackend buy on gets, across hit rates, against the uncached backend?

A key space of ``--keys`` existing keys is read uniformly at random by ``--concurrency`` tasks for
``--duration`` seconds per cell. Under uniform access an LRU of ``size`` entries hits with
probability ``size / keys`` in steady state, so the hit rate is set by the cache size: 0 % (a
one-entry cache), 50 %, 90 %, 99 % of the key space. Each cached cell starts warm (its cache
filled, untimed); the ``uncached`` rows (one first, one last) read the same keys straight from the
DynamoDBBackend. Rows report the target and the measured hit rate (from ``statistics()``), ops/s,
p50/p95 latency and the speed-up over the mean of the two uncached runs.

Run (starts DynamoDB Local unless ``--endpoint`` or ``AWS_DYNAMODB_ENDPOINT`` names one; about
half a minute with the defaults)::

    .venv/bin/python -m benchmarks.experiments.cache [--keys 1000] [--duration 3] [--concurrency 8]
        [--conf coalesce=false] [--endpoint URL] [--out DIR]

Writes ``benchmarks/results/cache-<timestamp>.json`` and ``cache-<timestamp>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.engine import endpoint_or_local
from kvstore import Backend, Entry, Operation, TxnEntry
from kvstore.cache import CachedBackend
from kvstore.dynamodb import DynamoDBBackend

__all__ = ["HIT_RATES", "main", "run"]

#: Target hit rates of the sweep (each sets the cache size as a fraction of the key space).
HIT_RATES = (0.0, 0.5, 0.9, 0.99)

_RESULTS = Path(__file__).resolve().parent.parent / "results"
_VALUE = b"v" * 100


def _key(i: int) -> str:
    return f"bench/cache/k{i:05d}"


async def _cell(store: Backend, keys: int, concurrency: int, duration: float, seed: int) -> dict[str, float]:
    """Uniformly random gets for ``duration`` seconds; ops/s and latency percentiles."""
    rng = random.Random(seed)
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            key = _key(rng.randrange(keys))
            t0 = time.perf_counter()
            found = await store.get(key)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert found is not None, f"{key} was preloaded"

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"ops": len(latencies), "ops_per_s": len(latencies) / wall, "p50_ms": q[49], "p95_ms": q[94]}


async def run(
    endpoint: str, *, keys: int, duration: float, concurrency: int, extra_conf: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The uncached row, then one row per target hit rate (``extra_conf`` adds backend config keys)."""
    conf = {
        "endpoint": endpoint,
        "table": f"bench-cache-{uuid.uuid4().hex[:8]}",
        "region": "us-east-1",
        "access_key": "local",
        "secret_key": "local",
        "billing_mode": "PAY_PER_REQUEST",
        **(extra_conf or {}),
    }
    rows: list[dict[str, Any]] = []
    async with await DynamoDBBackend.create(conf) as backend:
        for start in range(0, keys, 100):  # preload, 100 keys per transaction
            await backend.transaction(
                [TxnEntry(Operation.PUT, Entry(_key(i), _VALUE)) for i in range(start, min(start + 100, keys))]
            )
        await _cell(backend, keys, concurrency, 1.0, seed=0)  # warm the JVM and the connection pool

        base = await _cell(backend, keys, concurrency, duration, seed=1)
        rows.append({"config": "uncached", "target_hit_rate": None, "cache_size": 0, "hit_rate": 0.0, **base})
        for target in HIT_RATES:
            size = max(1, round(target * keys))
            cache = CachedBackend(backend, size=size)
            for i in range(size):  # warm: a steady-state LRU holds `size` of the keys
                await cache.get(_key(i))
            before = cache.statistics()
            figures = await _cell(cache, keys, concurrency, duration, seed=2)
            after = cache.statistics()
            hits, misses = after.hits - before.hits, after.misses - before.misses
            rows.append({"config": "cached", "target_hit_rate": target, "cache_size": size,
                         "hit_rate": hits / max(1, hits + misses), **figures})
            await cache.aclose()
        # The baseline again, last: the speed-ups divide by the mean of both, so a drifting
        # (shared, loaded) machine does not favour the cells that ran first.
        again = await _cell(backend, keys, concurrency, duration, seed=3)
        rows.append({"config": "uncached", "target_hit_rate": None, "cache_size": 0, "hit_rate": 0.0, **again})
        mean = (base["ops_per_s"] + again["ops_per_s"]) / 2
        for row in rows:
            row["speedup"] = row["ops_per_s"] / mean
            _log(row)
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _log(row: dict[str, Any]) -> None:
    print(
        f"{row['config']:<9} size={row['cache_size']:>5} hit={row['hit_rate']:6.1%} "
        f"{row['ops_per_s']:9.0f} ops/s  p50={row['p50_ms']:6.2f} ms  p95={row['p95_ms']:6.2f} ms  "
        f"x{row['speedup']:.1f}",
        file=sys.stderr,
        flush=True,
    )


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Get throughput against the measured hit rate, cached vs the uncached baseline (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cached = [r for r in rows if r["config"] == "cached"]
    base = statistics.mean(r["ops_per_s"] for r in rows if r["config"] == "uncached")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["hit_rate"] * 100 for r in cached]
    ax.plot(xs, [r["ops_per_s"] for r in cached], "o-", label="CachedBackend(DynamoDB Local)")
    for x, r in zip(xs, cached, strict=True):
        ax.annotate(f"x{r['speedup']:.1f}", (x, r["ops_per_s"]), textcoords="offset points", xytext=(4, 6))
    ax.axhline(base, color="grey", linestyle="--", label="uncached DynamoDBBackend (mean of 2 runs)")
    ax.set_yscale("log")
    ax.set_xlabel("measured hit rate (%)")
    ax.set_ylabel("get ops/s (log)")
    ax.set_title("Read cache: get throughput vs hit rate")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; write the JSON and the plot under benchmarks/results/."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.cache", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_DYNAMODB_ENDPOINT"))
    p.add_argument("--keys", type=int, default=1000, help="key space size (default 1000)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per cell (default 3)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent readers (default 8)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra DynamoDBBackend config, repeatable (e.g. coalesce=false)")
    p.add_argument("--out", type=Path, default=_RESULTS, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.conf)
    with endpoint_or_local(args.endpoint) as endpoint:
        rows = asyncio.run(run(endpoint, keys=args.keys, duration=args.duration, concurrency=args.concurrency,
                               extra_conf=extra))
    stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "experiment": "cache",
        "timestamp": stamp,
        "engine": "DynamoDB Local",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "keys": args.keys,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "backend_conf": extra,
        "rows": rows,
    }
    json_path = args.out / f"cache-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    png_path = args.out / f"cache-{stamp}.png"
    plot(rows, png_path)
    print(f"wrote {json_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
