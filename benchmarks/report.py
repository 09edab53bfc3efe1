"""Turn cell results into the report: percentiles, kvstore/raw ratios, JSON, a text table, PNG plots.

Ratios are kvstore divided by raw (``ratio``), kvstore-plain (``coalesce=false``) divided by raw
(``ratio_plain``) and kvstore divided by kvstore-plain (``coalesce_gain``): for throughput above 1
favours the first, for latency, CPU, requests and items below 1 does. A ratio is None when either
side is missing (a target that could not be opened, a cell that failed). matplotlib is imported
only to plot, with the Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.workloads import SWEEP_WORKLOADS, TARGETS, WORKLOADS

__all__ = ["FIGURES", "compare", "environment", "format_table", "latency_summary", "percentile", "ratio",
           "round_ratios", "write_json", "write_plots"]

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
}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ascending values, an observed value; NaN if empty."""
    if not sorted_values:
        return math.nan
    return float(sorted_values[min(max(1, math.ceil(q / 100 * len(sorted_values))), len(sorted_values)) - 1])


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds."""
    ms = sorted(v / 1e6 for v in latencies_ns)
    if not ms:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "max"), math.nan)
    out = {f"p{q}": round(percentile(ms, q), 3) for q in (50, 95, 99)}
    return {**out, "mean": round(sum(ms) / len(ms), 3), "max": round(ms[-1], 3)}


def ratio(kvstore: float | None, raw: float | None) -> float | None:
    """kvstore / raw rounded to 3 places; None when either side is missing or raw is zero."""
    if kvstore is None or raw is None or raw == 0 or math.isnan(kvstore) or math.isnan(raw):
        return None
    return round(kvstore / raw, 3)


def _dig(doc: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = doc
    for part in path:
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    ok = isinstance(cur, int | float) and not (isinstance(cur, float) and math.isnan(cur))
    return float(cur) if ok else None


def round_ratios(kvstore: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, float] | None:
    """Throughput ratio of each pair of rounds (they ran back to back): median, min and max.

    A pair is barely touched by load that comes and goes; the spread shows how noisy the run was.
    """
    kv, rw = kvstore.get("ops_per_s_rounds") or [], raw.get("ops_per_s_rounds") or []
    if not kv or len(kv) != len(rw) or not all(rw):
        return None
    pairs = sorted(k / r for k, r in zip(kv, rw, strict=True))
    mid = len(pairs) // 2
    median = pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2
    return {"median": round(median, 3), "min": round(pairs[0], 3), "max": round(pairs[-1], 3)}


def compare(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (scenario, workload): each target's figures and the ratios between them.

    ``ratio`` is kvstore/raw, ``ratio_plain`` kvstore-plain/raw (kvstore with ``coalesce=false``) and
    ``coalesce_gain`` kvstore/kvstore-plain; each is None when a side did not run.
    """
    grouped: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for cell in results:
        grouped.setdefault((cell["scenario"], cell["workload"]), {})[cell["target"]] = cell
    out: list[dict[str, Any]] = []
    for (scenario, workload), by in grouped.items():
        any_cell = next(iter(by.values()))
        figs = {t: ({n: _dig(by[t], p) for n, p in FIGURES.items()} if t in by else {}) for t in TARGETS}

        def ratios(a: str, b: str) -> dict[str, float | None]:
            return {name: ratio(figs[a].get(name), figs[b].get(name)) for name in FIGURES}  # noqa: B023

        def rounds(a: str, b: str) -> dict[str, float] | None:
            return round_ratios(by[a], by[b]) if figs[a] and figs[b] else None  # noqa: B023

        out.append({
            "scenario": scenario,
            "workload": workload,
            **{k: any_cell[k] for k in ("depth", "value_size", "concurrency", "keys", "sweeps")},
            "folders": any_cell.get("folders", 0),
            **{t: figs[t] or None for t in TARGETS},
            "ratio": ratios("kvstore", "raw"),
            "ratio_plain": ratios("kvstore-plain", "raw"),
            "coalesce_gain": ratios("kvstore", "kvstore-plain"),
            "ops_per_s_round_ratio": rounds("kvstore", "raw"),
            "plain_ops_per_s_round_ratio": rounds("kvstore-plain", "raw"),
        })
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
    return "-" if value is None else f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _trio(values: Sequence[float | None], digits: int) -> str:
    return "/".join(_num(v, digits) for v in values)


def format_table(comparisons: Iterable[Mapping[str, Any]]) -> str:
    """Per cell: ops/s, p95, client CPU ms/op (kvstore, raw, ratio), requests and items per op.

    ``rounds`` is the lowest-highest throughput ratio over the paired rounds: a wide range means
    the machine was noisy and the ratio should not be read to two decimals. When kvstore-plain
    (``coalesce=false``) ran, its figures sit between kvstore's and raw's, with ``pl/raw``
    (kvstore-plain/raw) and ``gain`` (kvstore/kvstore-plain, what coalescing buys) beside kv/raw.
    A folders-sweep row reads ``put@10f`` (its keys in 10 leaf folders).
    """
    comparisons = list(comparisons)
    if not any(c.get("kvstore-plain") for c in comparisons):
        return _format_pair_table(comparisons)
    header = (f"{'workload':<8} {'conc':>4} {'dep':>3} {'value':>6} | {'ops/s kv':>8} {'plain':>6} {'raw':>6} | "
              f"{'kv/raw':>6} {'pl/raw':>6} {'gain':>6} {'rounds':>9} | {'p95 ms kv/pl/raw':>17} | "
              f"{'cpu ms/op kv/pl/raw':>19} | {'req/op kv/pl/raw':>16} | {'items/op kv/pl/raw':>18}")
    lines = [header, "-" * len(header)]
    for c in comparisons:
        kv, pl, raw = (c.get(t) or {} for t in TARGETS)
        rr = c.get("ops_per_s_round_ratio")
        spread = f"{rr['min']:.2f}-{rr['max']:.2f}" if rr else "-"
        name = f"{c['workload']}@{c['folders']}f" if c.get("folders") else c["workload"]

        def trio(fig: str, digits: int) -> str:
            return _trio([kv.get(fig), pl.get(fig), raw.get(fig)], digits)  # noqa: B023

        lines.append(
            f"{name:<8} {c['concurrency']:>4} {c['depth']:>3} {c['value_size']:>6} | "
            f"{_num(kv.get('ops_per_s')):>8} {_num(pl.get('ops_per_s')):>6} {_num(raw.get('ops_per_s')):>6} | "
            f"{_x(c['ratio']['ops_per_s']):>6} {_x(c['ratio_plain']['ops_per_s']):>6} "
            f"{_x(c['coalesce_gain']['ops_per_s']):>6} {spread:>9} | {trio('p95_ms', 1):>17} | "
            f"{trio('cpu_ms_per_op', 2):>19} | {trio('requests_per_op', 2):>16} | {trio('items_per_op', 2):>18}"
        )
    return "\n".join(lines)


def _format_pair_table(comparisons: Iterable[Mapping[str, Any]]) -> str:
    """The two-target table (kvstore and raw only)."""
    header = (f"{'workload':<8} {'conc':>4} {'dep':>3} {'value':>6} | {'ops/s kv':>8} {'raw':>6} {'ratio':>6} "
              f"{'rounds':>9} | {'p95ms kv':>8} {'raw':>6} {'ratio':>6} | {'cpu/op kv':>9} {'raw':>5} "
              f"{'ratio':>6} | {'req kv/raw':>10} | {'items kv/raw':>12}")
    lines = [header, "-" * len(header)]
    for c in comparisons:
        kv, raw, r, rr = c["kvstore"] or {}, c["raw"] or {}, c["ratio"], c.get("ops_per_s_round_ratio")
        spread = f"{rr['min']:.2f}-{rr['max']:.2f}" if rr else "-"
        req = f"{_num(kv.get('requests_per_op'), 2)}/{_num(raw.get('requests_per_op'), 2)}"
        items = f"{_num(kv.get('items_per_op'), 2)}/{_num(raw.get('items_per_op'), 2)}"
        name = f"{c['workload']}@{c['folders']}f" if c.get("folders") else c["workload"]
        lines.append(
            f"{name:<8} {c['concurrency']:>4} {c['depth']:>3} {c['value_size']:>6} | "
            f"{_num(kv.get('ops_per_s')):>8} {_num(raw.get('ops_per_s')):>6} {_x(r['ops_per_s']):>6} {spread:>9} | "
            f"{_num(kv.get('p95_ms'), 1):>8} {_num(raw.get('p95_ms'), 1):>6} {_x(r['p95_ms']):>6} | "
            f"{_num(kv.get('cpu_ms_per_op'), 2):>9} {_num(raw.get('cpu_ms_per_op'), 2):>5} "
            f"{_x(r['cpu_ms_per_op']):>6} | {req:>10} | {items:>12}"
        )
    return "\n".join(lines)


# -- where the run happened ----------------------------------------------------------------------


def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def environment() -> dict[str, Any]:
    """Machine and software facts for the results, so runs from different machines are not confused."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "load_avg_at_start": load_avg()},
        "software": {"python": platform.python_version(), **{d: version(d) for d in ("aiobotocore", "botocore",
                                                                                      "aiohttp", "kvstore")},
                     "git": {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}},
    }


# -- plots -----------------------------------------------------------------------------------------

_STYLE = {"kvstore": {"color": "#1f77b4", "marker": "o", "linestyle": "-"},
          "kvstore-plain": {"color": "#2ca02c", "marker": "^", "linestyle": ":"},
          "raw": {"color": "#ff7f0e", "marker": "s", "linestyle": "--"}}
#: (file name, sweep, x, figure, y label, log y): one PNG each, one panel per workload.
_PLOTS = (
    ("throughput", "concurrency", "concurrency", "ops_per_s", "operations / s", False),
    ("latency_p95", "concurrency", "concurrency", "p95_ms", "p95 latency (ms, log)", True),
    ("cpu", "concurrency", "concurrency", "cpu_ms_per_op", "client CPU ms / operation", False),
    ("depth", "depth", "depth", "ops_per_s", "operations / s", False),
    ("value_size", "value_size", "value_size", "ops_per_s", "operations / s", False),
)


def _plot(doc: Mapping[str, Any], sweep: str, x: str, figure: str, ylabel: str, log_y: bool, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    rows = [c for c in doc["comparisons"] if sweep in c["sweeps"]]
    # A point shared by two sweeps carries both sweeps' workloads; plot only this sweep's own.
    workloads = [w for w in WORKLOADS if w in SWEEP_WORKLOADS[sweep] and any(r["workload"] == w for r in rows)]
    if not workloads:
        return False
    rounds = {(r["scenario"], r["workload"], r["target"]): r.get("ops_per_s_rounds") or [] for r in doc["results"]}
    ncols = min(3, len(workloads))
    nrows = -(-len(workloads) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(workloads):]:
        ax.set_visible(False)
    for ax, workload in zip(flat, workloads, strict=False):
        wrows = sorted((r for r in rows if r["workload"] == workload), key=lambda r: r[x])
        for target, style in _STYLE.items():
            points = [(r[x], (r.get(target) or {}).get(figure), rounds.get((r["scenario"], workload, target)))
                      for r in wrows]
            points = [p for p in points if p[1] is not None]
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, label=target, linewidth=2, markersize=6, **style)
            if figure == "ops_per_s":  # band: slowest to fastest round
                lows = [min(p[2] or [p[1]]) for p in points]
                highs = [max(p[2] or [p[1]]) for p in points]
                ax.fill_between(xs, lows, highs, color=style["color"], alpha=0.12, linewidth=0)
        xticks = sorted({r[x] for r in wrows})
        ax.set_title(workload, fontsize=12, fontweight="bold")
        ax.set_xlabel(x.replace("_", " "))
        if len(xticks) > 1:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(xticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_yscale("log") if log_y else ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for row in axes:
        row[0].set_ylabel(ylabel)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) or 1, frameon=False)
    cfg, latency = doc["config"], doc["data_path"]["latency_ms"]
    where = (f"depth {cfg['base_depth']}, {cfg['base_value_size']} B values" if sweep == "concurrency"
             else f"concurrency {cfg['sweep_concurrency']}") + (f", +{latency:g} ms/request" if latency else "")
    shown = " vs ".join("raw aiobotocore" if t == "raw" else t for t in _STYLE if t in cfg.get("targets", _STYLE))
    fig.suptitle(f"{ylabel.split(' (')[0]} vs {x.replace('_', ' ')}: {shown} ({where})", fontsize=11)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(doc: Mapping[str, Any], results_dir: Path, run_id: str) -> list[Path]:
    """Write ``<run_id>-<name>.png`` per plot that has data, each copied to ``latest-<name>.png``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sweep, x, figure, ylabel, log_y in _PLOTS:
        path = results_dir / f"{run_id}-{name}.png"
        if _plot(doc, sweep, x, figure, ylabel, log_y, path):
            shutil.copyfile(path, results_dir / f"latest-{name}.png")
            paths.append(path)
    return paths
