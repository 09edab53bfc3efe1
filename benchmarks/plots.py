"""PNG plots of a run's comparisons, kvstore against raw, one panel per workload.

- ``throughput``: ops/s against concurrency (the concurrency sweep);
- ``latency_p95``: p95 latency against concurrency;
- ``cpu``: the client's CPU time per operation against concurrency (the figure least disturbed by
  other load on the machine: it shows what kvstore's own layers cost);
- ``sweeps``: ops/s against key depth and against value size (when those sweeps ran).

matplotlib is imported here only, with the Agg backend, so the harness and its worker processes
never pay for it and no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.config import SWEEP_WORKLOADS, WORKLOADS

__all__ = ["write_plots"]

_STYLE = {
    "kvstore": {"color": "#1f77b4", "marker": "o", "linestyle": "-"},
    "raw": {"color": "#ff7f0e", "marker": "s", "linestyle": "--"},
}


_COLUMNS = 3

Rounds = Mapping[tuple[str, str, str], Sequence[float]]


def _series(
    rows: Sequence[Mapping[str, Any]], x: str, target: str, figure: str, rounds: Rounds
) -> tuple[list[float], list[float], list[float], list[float]]:
    """x, y, and the lowest/highest per-round throughput (for the band) of one target."""
    xs: list[float] = []
    ys: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    for row in sorted(rows, key=lambda r: r[x]):
        side = row.get(target) or {}
        value = side.get(figure)
        if value is None:
            continue
        xs.append(row[x])
        ys.append(value)
        spread = rounds.get((row["scenario"], row["workload"], target)) or [value]
        lows.append(min(spread))
        highs.append(max(spread))
    return xs, ys, lows, highs


def _panels(
    comparisons: Sequence[Mapping[str, Any]],
    rounds: Rounds,
    *,
    sweep: str,
    x: str,
    figure: str,
    ylabel: str,
    xlabel: str,
    title: str,
    path: Path,
    log_y: bool = False,
) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    rows = [c for c in comparisons if sweep in c["sweeps"]]
    # A point shared by two sweeps carries both sweeps' workloads; plot only this sweep's own.
    workloads = [w for w in WORKLOADS if w in SWEEP_WORKLOADS[sweep] and any(r["workload"] == w for r in rows)]
    if not workloads:
        return None
    ncols = min(_COLUMNS, len(workloads))
    nrows = -(-len(workloads) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(workloads) :]:
        ax.set_visible(False)
    for ax, workload in zip(flat, workloads, strict=False):
        wrows = [r for r in rows if r["workload"] == workload]
        xticks = sorted({r[x] for r in wrows})
        for target, style in _STYLE.items():
            xs, ys, lows, highs = _series(wrows, x, target, figure, rounds if figure == "ops_per_s" else {})
            if xs:
                ax.plot(xs, ys, label=target, linewidth=2, markersize=6, **style)
                if lows != ys or highs != ys:
                    ax.fill_between(xs, lows, highs, color=style["color"], alpha=0.12, linewidth=0)
        ax.set_title(workload, fontsize=12, fontweight="bold")
        ax.set_xlabel(xlabel)
        if len(xticks) > 1:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(xticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(FixedLocator([]))
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, which="major", alpha=0.3)
    for row in axes:
        row[0].set_ylabel(ylabel)
    handles, labels = flat[0].get_legend_handles_labels()
    if figure == "ops_per_s":
        labels = [f"{label} (band: slowest-fastest round)" for label in labels]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) or 1, fontsize=10, frameon=False)
    fig.suptitle(title, fontsize=12)
    # Leave a strip at the bottom for the shared legend and one at the top for the title.
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: Mapping[str, Any], results_dir: Path, run_id: str) -> list[Path]:
    """Write the run's PNGs as ``<run_id>-<name>.png`` and copy each to ``latest-<name>.png``."""
    import shutil

    comparisons: list[Mapping[str, Any]] = report["comparisons"]
    rounds: dict[tuple[str, str, str], Sequence[float]] = {
        (r["scenario"], r["workload"], r["target"]): r.get("ops_per_s_rounds") or [] for r in report["results"]
    }
    cfg = report["config"]
    latency = report["data_path"]["latency_ms"]
    where = f"depth {cfg['base_depth']}, {cfg['base_value_size']} B values" + (
        f", +{latency:g} ms/request" if latency else ""
    )
    sweep_where = f"concurrency {cfg['sweep_concurrency']}" + (f", +{latency:g} ms/request" if latency else "")
    results_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path | None] = [
        _panels(
            comparisons,
            rounds,
            sweep="concurrency",
            x="concurrency",
            figure="ops_per_s",
            ylabel="operations / s",
            xlabel="concurrency",
            title=f"Throughput vs concurrency: kvstore vs raw aiobotocore ({where})",
            path=results_dir / f"{run_id}-throughput.png",
        ),
        _panels(
            comparisons,
            rounds,
            sweep="concurrency",
            x="concurrency",
            figure="p95_ms",
            ylabel="p95 latency (ms, log)",
            xlabel="concurrency",
            title=f"p95 latency vs concurrency: kvstore vs raw aiobotocore ({where})",
            path=results_dir / f"{run_id}-latency_p95.png",
            log_y=True,
        ),
        _panels(
            comparisons,
            rounds,
            sweep="concurrency",
            x="concurrency",
            figure="cpu_ms_per_op",
            ylabel="client CPU ms / operation",
            xlabel="concurrency",
            title=f"Client CPU per operation vs concurrency: kvstore vs raw ({where})",
            path=results_dir / f"{run_id}-cpu.png",
        ),
        _panels(
            comparisons,
            rounds,
            sweep="depth",
            x="depth",
            figure="ops_per_s",
            ylabel="operations / s",
            xlabel="key depth (segments)",
            title=f"Throughput vs key depth ({sweep_where})",
            path=results_dir / f"{run_id}-depth.png",
        ),
        _panels(
            comparisons,
            rounds,
            sweep="value_size",
            x="value_size",
            figure="ops_per_s",
            ylabel="operations / s",
            xlabel="value size (bytes)",
            title=f"Throughput vs value size ({sweep_where})",
            path=results_dir / f"{run_id}-value_size.png",
        ),
    ]
    paths = [p for p in made if p is not None]
    for p in paths:
        shutil.copyfile(p, results_dir / ("latest-" + p.name.removeprefix(f"{run_id}-")))
    return paths
