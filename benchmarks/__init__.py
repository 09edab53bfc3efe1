"""kvstore's benchmark harness: kvstore's DynamoDBBackend against the same requests sent raw.

Every workload (put, get, list, delete, mix) runs on two *targets* on the same engine in the same
run: **kvstore** (``kvstore.dynamodb.DynamoDBBackend``) and **raw** (an aiobotocore client sending
the requests of kvstore's data model, no kvstore code). Each figure (ops/s, p50/p95/p99 latency,
requests and items per operation, peak RSS) is reported for both, with the ratio kvstore/raw.

Run it as ``python -m benchmarks [--quick]`` or from code::

    from benchmarks import quick_config, run_benchmarks

    report = run_benchmarks(quick_config(), endpoint="http://127.0.0.1:8000")
    print(report.table())

Modules, one concept each: ``config`` (the parameter grid), ``keyspace`` (the keys), ``model``
(the DynamoDB data model for the raw baseline), ``targets``/``raw``/``kvstore_target`` (what is
measured), ``workloads`` (operation plans), ``runner`` (timing one cell), ``tap`` (counting requests
on the wire), ``memory`` (peak RSS), ``worker`` (one process per target), ``tables``, ``latency``
(FaultProxy hook), ``machine`` (facts about the run), ``stats``, ``report`` (ratios, JSON, table),
``plots``, ``harness`` (the run), ``cli``. Its own tests: ``pytest benchmarks/tests``.
"""

from benchmarks.config import TARGETS, WORKLOADS, BenchConfig, Scenario, quick_config, standard_config
from benchmarks.harness import RESULTS_DIR, BenchReport, arun_benchmarks, run_benchmarks

__all__ = [
    "RESULTS_DIR",
    "TARGETS",
    "WORKLOADS",
    "BenchConfig",
    "BenchReport",
    "Scenario",
    "arun_benchmarks",
    "quick_config",
    "run_benchmarks",
    "standard_config",
]
