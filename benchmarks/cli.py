"""``python -m benchmarks``: parse options, run the benchmark, print the ratios table.

Without ``--endpoint`` it starts DynamoDB Local for the run. ``kvstore bench`` calls :func:`main`.
The exit status is 0 when every target ran every cell without errors, 1 otherwise (a target that
could not be opened, a failed cell, operations that raised), 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path

from benchmarks.runner import RESULTS_DIR, run_benchmarks
from benchmarks.workloads import TARGETS, WORKLOADS, BenchConfig, coalesce_config, quick_config, standard_config

__all__ = ["main", "parser"]


def _name_list(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (got {text!r})")
        return names

    return parse


def _size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1000, "m": 1000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100, 10k)") from None


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(_size(part) for part in text.split(","))


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark kvstore's DynamoDB backend against the same requests sent raw with aiobotocore.",
    )
    p.add_argument("--quick", action="store_true", help="smoke-sized set, well under a minute")
    p.add_argument("--coalesce", action="store_true",
                   help="issue 11's set: put/get/mix at concurrency 1,16,64,256 and put by 64 writers in 10 folders")
    p.add_argument("--endpoint", help="DynamoDB endpoint URL (default: start DynamoDB Local for the run)")
    p.add_argument("--workloads", type=_name_list(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    p.add_argument("--targets", type=_name_list(TARGETS), help=f"subset of {','.join(TARGETS)}")
    p.add_argument("--concurrency", type=_int_list, help="concurrency levels of the main sweep, e.g. 1,64")
    p.add_argument("--depths", type=_int_list, help="key depths of the depth sweep (1-8; 'none' to skip)")
    p.add_argument("--value-sizes", type=_int_list, help="value sizes of the size sweep (100,10k,100k; 'none' skips)")
    p.add_argument("--depth", dest="base_depth", metavar="DEPTH", type=int,
                   help="key depth of the concurrency sweep (default 3)")
    p.add_argument("--value-size", dest="base_value_size", metavar="SIZE", type=_size,
                   help="value size of the concurrency sweep (default 1024)")
    p.add_argument("--sweep-concurrency", type=int, help="concurrency of the depth and size sweeps")
    p.add_argument("--folders", type=_int_list,
                   help="folders sweep: put with the keys spread over this many leaf folders, e.g. 10 ('none' skips)")
    p.add_argument("--folders-concurrency", type=int, help="writers of the folders sweep (default 64)")
    p.add_argument("--keys", type=int, help="keys (= timed operations) per cell of the concurrency sweep")
    p.add_argument("--sweep-keys", type=int, help="keys per cell of the depth and size sweeps")
    p.add_argument("--latency-ms", type=float, help="add this latency per request (through a FaultProxy)")
    p.add_argument("--max-parallel", type=int, help="kvstore's max_parallel and raw's connection pool (default 128)")
    p.add_argument("--seed", type=int, help="seed of the operation plans")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The standard (or quick) configuration with the options given on the command line."""
    if args.quick and args.coalesce:
        raise ValueError("choose one of --quick and --coalesce")
    base = quick_config() if args.quick else coalesce_config() if args.coalesce else standard_config()
    names = [f.name for f in fields(BenchConfig) if f.name not in ("quick", "label")]
    return replace(base, **{n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; see the module docstring for the exit status."""
    p = parser()
    args = p.parse_args(argv)
    try:
        config = config_from_args(args)
        config.validate()
    except ValueError as exc:
        p.error(str(exc))
    report = run_benchmarks(
        config,
        endpoint=args.endpoint,
        results_dir=args.results,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    data = report.data
    engine = data["engine"]
    print(
        f"\nrun {data['run_id']} ({config.label}), {data['duration_s']} s; engine "
        f"{engine.get('package') or engine['endpoint']}; data path {data['data_path']['via']}"
        + (f" +{config.latency_ms:g} ms" if config.latency_ms else "")
    )
    print("ratios are kvstore/raw: ops/s above 1 and p95/req/items below 1 favour kvstore"
          + ("; pl = kvstore-plain (coalesce=false), gain = kvstore/kvstore-plain ops/s"
             if "kvstore-plain" in config.targets else "") + "\n")
    print(report.table())
    for note in data["notes"]:
        print(f"note: {note}")
    if report.json_path is not None:
        print(f"\nresults: {report.json_path}")
    for path in report.plot_paths:
        print(f"plot:    {path}")
    failed = data["notes"] or any(c.get("failed") or c.get("errors") for c in data["results"])
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
