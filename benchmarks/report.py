"""Turn cell results into the run's report: kvstore/raw ratios, the JSON files, a short table.

Ratios are always kvstore divided by raw, so for throughput above 1 is better than raw and for
latency, requests, items and memory below 1 is better. A ratio is None when either side is
missing (a target that failed to open, a cell that failed).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.stats import ratio

__all__ = ["FIGURES", "compare", "figures", "format_table", "round_ratios", "write_json"]

#: The figures compared per cell, and where each lives in a cell result.
FIGURES: dict[str, tuple[str, ...]] = {
    "ops_per_s": ("ops_per_s",),
    "p50_ms": ("latency_ms", "p50"),
    "p95_ms": ("latency_ms", "p95"),
    "p99_ms": ("latency_ms", "p99"),
    "cpu_ms_per_op": ("cpu_ms_per_op",),
    "requests_per_op": ("wire", "requests_per_op"),
    "items_per_op": ("wire", "items_per_op"),
    "bytes_per_op": ("wire", "bytes_per_op"),
    "peak_rss_mb": ("peak_rss_mb",),
}


def _dig(doc: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = doc
    for part in path:
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, int | float) and not (isinstance(cur, float) and math.isnan(cur)):
        return float(cur)
    return None


def figures(cell: Mapping[str, Any]) -> dict[str, float | None]:
    """The comparable figures of one cell result."""
    return {name: _dig(cell, path) for name, path in FIGURES.items()}


def round_ratios(kvstore: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, float] | None:
    """Throughput ratio of each pair of rounds (kvstore's round i against raw's round i).

    The rounds of a pair ran back to back, so their ratio is barely touched by load that comes
    and goes on a shared machine; the spread between pairs shows how noisy the run was.
    """
    kv, rw = kvstore.get("ops_per_s_rounds") or [], raw.get("ops_per_s_rounds") or []
    if not kv or len(kv) != len(rw) or not all(rw):
        return None
    pairs = sorted(k / r for k, r in zip(kv, rw, strict=True))
    mid = len(pairs) // 2
    median = pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2
    return {"median": round(median, 3), "min": round(pairs[0], 3), "max": round(pairs[-1], 3)}


def compare(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (scenario, workload): both targets' figures and their ratios."""
    grouped: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for cell in results:
        grouped.setdefault((cell["scenario"], cell["workload"]), {})[cell["target"]] = cell
    out: list[dict[str, Any]] = []
    for (scenario, workload), by_target in grouped.items():
        any_cell = next(iter(by_target.values()))
        kv = figures(by_target["kvstore"]) if "kvstore" in by_target else {}
        raw = figures(by_target["raw"]) if "raw" in by_target else {}
        out.append(
            {
                "scenario": scenario,
                "workload": workload,
                "depth": any_cell["depth"],
                "value_size": any_cell["value_size"],
                "concurrency": any_cell["concurrency"],
                "keys": any_cell["keys"],
                "sweeps": any_cell["sweeps"],
                "kvstore": kv or None,
                "raw": raw or None,
                "ratio": {name: ratio(kv.get(name), raw.get(name)) for name in FIGURES},
                "ops_per_s_round_ratio": (
                    round_ratios(by_target["kvstore"], by_target["raw"])
                    if "kvstore" in by_target and "raw" in by_target
                    else None
                ),
            }
        )
    return out


def _clean(value: Any) -> Any:
    """NaN and infinities become None: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(doc: Mapping[str, Any], results_dir: Path, run_id: str) -> Path:
    """Write ``<run_id>.json`` and copy it to ``latest.json``; return the run's file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{run_id}.json"
    path.write_text(json.dumps(_clean(doc), indent=2, allow_nan=False, default=str) + "\n")
    shutil.copyfile(path, results_dir / "latest.json")
    return path


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(comparisons: Iterable[Mapping[str, Any]]) -> str:
    """A plain-text table: per cell, throughput, p95, client CPU ms/op, requests and items per op.

    ``rounds`` is the lowest and highest throughput ratio of the paired rounds: a wide range means
    the machine was noisy and the cell's ratio should not be read to two decimals. ``req`` and
    ``items`` are per operation, kvstore/raw.
    """
    header = (
        f"{'workload':<8} {'conc':>4} {'dep':>3} {'value':>6} | "
        f"{'ops/s kv':>8} {'raw':>6} {'ratio':>6} {'rounds':>9} | "
        f"{'p95ms kv':>8} {'raw':>6} {'ratio':>6} | "
        f"{'cpu/op kv':>9} {'raw':>5} {'ratio':>6} | "
        f"{'req kv/raw':>10} | {'items kv/raw':>12}"
    )
    lines = [header, "-" * len(header)]
    for c in comparisons:
        kv = c["kvstore"] or {}
        raw = c["raw"] or {}
        r = c["ratio"]
        rr = c.get("ops_per_s_round_ratio")
        spread = f"{rr['min']:.2f}-{rr['max']:.2f}" if rr else "-"
        req = f"{_num(kv.get('requests_per_op'), 2)}/{_num(raw.get('requests_per_op'), 2)}"
        items = f"{_num(kv.get('items_per_op'), 2)}/{_num(raw.get('items_per_op'), 2)}"
        lines.append(
            f"{c['workload']:<8} {c['concurrency']:>4} {c['depth']:>3} {c['value_size']:>6} | "
            f"{_num(kv.get('ops_per_s')):>8} {_num(raw.get('ops_per_s')):>6} {_ratio(r['ops_per_s']):>6} {spread:>9} | "
            f"{_num(kv.get('p95_ms'), 1):>8} {_num(raw.get('p95_ms'), 1):>6} {_ratio(r['p95_ms']):>6} | "
            f"{_num(kv.get('cpu_ms_per_op'), 2):>9} {_num(raw.get('cpu_ms_per_op'), 2):>5} "
            f"{_ratio(r['cpu_ms_per_op']):>6} | "
            f"{req:>10} | {items:>12}"
        )
    return "\n".join(lines)
