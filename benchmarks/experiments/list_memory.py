"""Experiment: peak memory of ``list`` against consuming ``iter_list`` on a folder of many children.

A folder of ``--children`` keys (default 100,000) is written straight into a fresh DynamoDB Local
table through the backend's batch writer (record items, 25 per BatchWriteItem, many batches in
flight). Each measurement then runs in a fresh Python process (so one mode's heap cannot be reused
by the other; allocators rarely give memory back): it opens the backend, warms the client with a
one-name ``list_page``, and reads the whole folder once, either with ``list`` (all names in one
list) or by consuming ``iter_list`` (counting names, keeping none). Two figures per mode:

- ``tracemalloc_peak_mib``: the peak of Python allocations during the read (tracemalloc on);
- ``rss_delta_mib``: the peak resident set size during the read, sampled every 2 ms by a thread,
  minus the RSS just before it (a separate run, tracemalloc off: it costs memory itself).

Run (starts DynamoDB Local unless ``--endpoint`` or ``AWS_DYNAMODB_ENDPOINT`` names one; about a
minute and a half with the defaults on a 2-core machine)::

    .venv/bin/python -m benchmarks.experiments.list_memory [--children 100000] [--page-size 1000]
        [--endpoint URL] [--out DIR]

Writes ``benchmarks/results/list-memory-<timestamp>.json`` and ``list-memory-<timestamp>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.engine import endpoint_or_local
from kvstore import Entry
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.records import new_version, record_item
from kvstore.dynamodb.writer import WriteRequest

__all__ = ["main", "measure", "populate"]

_RESULTS = Path(__file__).resolve().parent.parent / "results"
_FOLDER = "bench/list"
_MODES = ("list", "iter_list")
_MIB = 1024 * 1024


def _conf(endpoint: str, table: str) -> dict[str, str]:
    return {"endpoint": endpoint, "table": table, "region": "us-east-1", "access_key": "local",
            "secret_key": "local", "billing_mode": "PAY_PER_REQUEST"}


def _name(i: int) -> str:
    return f"k{i:07d}"


async def populate(endpoint: str, table: str, children: int) -> float:
    """Write ``children`` keys into folder ``bench/list/``; return the seconds it took."""
    t0 = time.perf_counter()
    async with await DynamoDBBackend.create(_conf(endpoint, table)) as backend:
        await backend.put(Entry(f"{_FOLDER}/{_name(0)}", b"v"))  # through put: the folder's pointers
        chunk = 2500  # 100 BatchWriteItem calls in flight (the writer sends a group's batches at once)
        for start in range(1, children, chunk):
            requests: list[WriteRequest] = [
                {"PutRequest": {"Item": record_item(Entry(f"{_FOLDER}/{_name(i)}", b"v"), new_version())}}
                for i in range(start, min(start + chunk, children))
            ]
            await backend.writer.write(requests)
    return time.perf_counter() - t0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssPeak:
    """The highest RSS seen by a thread sampling every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002) -> None:
        self.peak = _rss()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


async def measure(endpoint: str, table: str, mode: str, *, traced: bool, page_size: int) -> dict[str, Any]:
    """Read the folder once with ``mode``; the peak memory of that read (in this process)."""
    async with await DynamoDBBackend.create(_conf(endpoint, table)) as backend:
        await backend.list_page(f"{_FOLDER}/", limit=1)  # warm: client, connection, model loading
        gc.collect()
        count = 0
        if traced:
            tracemalloc.start()
        before = _rss()
        t0 = time.perf_counter()
        with _RssPeak() as rss:
            if mode == "list":
                names = await backend.list(f"{_FOLDER}/")
                count = len(names)
                del names
            else:
                async for _ in backend.iter_list(f"{_FOLDER}/", page_size=page_size):
                    count += 1
        seconds = time.perf_counter() - t0
        out: dict[str, Any] = {"mode": mode, "names": count, "seconds": round(seconds, 3)}
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out["tracemalloc_peak_mib"] = round(peak / _MIB, 3)
        else:
            out["rss_delta_mib"] = round((rss.peak - before) / _MIB, 3)
        return out


def _child(endpoint: str, table: str, mode: str, traced: bool, page_size: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.experiments.list_memory", "--measure", mode, "--endpoint", endpoint,
           "--table", table, "--page-size", str(page_size)]
    if traced:
        cmd.append("--traced")
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def plot(rows: Sequence[dict[str, Any]], children: int, path: Path) -> None:
    """Two groups of bars (tracemalloc peak, RSS delta), one bar per mode, MiB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [("tracemalloc_peak_mib", "tracemalloc peak"), ("rss_delta_mib", "RSS delta (peak)")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.38
    for j, mode in enumerate(_MODES):
        row = next(r for r in rows if r["mode"] == mode)
        values = [row[f] for f, _ in figures]
        xs = [i + (j - 0.5) * width for i in range(len(figures))]
        bars = ax.bar(xs, values, width, label=f"{mode}()" if mode == "list" else "async for ... in iter_list()")
        ax.bar_label(bars, fmt="%.1f MiB", padding=2, fontsize=8)
    ax.set_xticks(range(len(figures)), [label for _, label in figures])
    ax.set_ylabel("MiB")
    ax.set_title(f"Reading a folder of {children:,} children from DynamoDB Local")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def main(argv: Sequence[str] | None = None) -> int:
    """Populate the folder, measure each mode in its own process, write the JSON and the plot."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments.list_memory",
                                description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_DYNAMODB_ENDPOINT"))
    p.add_argument("--children", type=int, default=100_000, help="keys in the folder (default 100000)")
    p.add_argument("--page-size", type=int, default=1000, help="iter_list page size (default 1000)")
    p.add_argument("--out", type=Path, default=_RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument("--measure", choices=_MODES, help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument("--table", help=argparse.SUPPRESS)
    p.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        doc = asyncio.run(measure(args.endpoint, args.table, args.measure, traced=args.traced,
                                  page_size=args.page_size))
        print(json.dumps(doc))
        return 0
    started = time.perf_counter()
    with endpoint_or_local(args.endpoint) as endpoint:
        table = f"bench-list-{uuid.uuid4().hex[:8]}"
        write_s = asyncio.run(populate(endpoint, table, args.children))
        print(f"wrote {args.children} children in {write_s:.1f} s", file=sys.stderr, flush=True)
        rows = []
        for mode in _MODES:
            traced = _child(endpoint, table, mode, True, args.page_size)
            plain = _child(endpoint, table, mode, False, args.page_size)
            assert traced["names"] == plain["names"] == args.children, (traced, plain)
            row = {"mode": mode, "names": plain["names"], "seconds": plain["seconds"],
                   "seconds_traced": traced["seconds"], "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"],
                   "rss_delta_mib": plain["rss_delta_mib"]}
            rows.append(row)
            print(f"{mode:<10} tracemalloc peak {row['tracemalloc_peak_mib']:8.2f} MiB  "
                  f"RSS delta {row['rss_delta_mib']:8.2f} MiB  {row['seconds']:.2f} s", file=sys.stderr, flush=True)
    stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "experiment": "list_memory",
        "timestamp": stamp,
        "engine": "DynamoDB Local",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "children": args.children,
        "page_size": args.page_size,
        "populate_s": round(write_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "rows": rows,
    }
    json_path = args.out / f"list-memory-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    png_path = args.out / f"list-memory-{stamp}.png"
    plot(rows, args.children, png_path)
    print(f"wrote {json_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
