"""kvstore's benchmark harness: kvstore's DynamoDBBackend against the same requests sent raw.

Modules: ``workloads`` (the grid, keys and operation plans), ``targets`` (kvstore and the raw
aiobotocore baseline), ``runner`` (one run: tables, rounds, timing, wire counts), ``report``
(ratios, JSON, table, plots), ``cli`` (``python -m benchmarks``, ``kvstore bench``), ``engine``.
Experiments with their own command lines live in ``benchmarks/experiments/``. See README.md.

    from benchmarks import quick_config, run_benchmarks

    report = run_benchmarks(quick_config(), endpoint="http://127.0.0.1:8000")
    print(report.table())
"""

from benchmarks.runner import RESULTS_DIR, BenchReport, arun_benchmarks, run_benchmarks
from benchmarks.workloads import (
    TARGETS,
    WORKLOADS,
    BenchConfig,
    Scenario,
    coalesce_config,
    quick_config,
    standard_config,
)

__all__ = [
    "RESULTS_DIR",
    "TARGETS",
    "WORKLOADS",
    "BenchConfig",
    "BenchReport",
    "Scenario",
    "arun_benchmarks",
    "coalesce_config",
    "quick_config",
    "run_benchmarks",
    "standard_config",
]
