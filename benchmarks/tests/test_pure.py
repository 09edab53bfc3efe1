"""The harness's pure parts: data model, key space, plans, item counting, statistics, report, CLI."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from benchmarks import targets as model
from benchmarks.cli import config_from_args, parser
from benchmarks.report import compare, format_table, latency_summary, percentile, ratio, round_ratios
from benchmarks.runner import Wire, items_in
from benchmarks.workloads import (
    MIX,
    TARGETS,
    WORKLOADS,
    BenchConfig,
    KeySpace,
    coalesce_config,
    plan,
    quick_config,
    standard_config,
)


def test_split_and_pointers_follow_vaults_layout() -> None:
    assert model.split("a/b/c") == ("a/b", "c")
    assert model.split("c") == (" ", "c")  # top-level keys live under a single space
    assert model.prefixes("a/b/c") == ["a/", "a/b/"]
    assert model.pointer("a/") == (" ", "a/")
    assert model.pointer("a/b/") == ("a", "b/")


def test_put_is_one_batch_of_pointers_then_record() -> None:
    reqs = model.put_requests("a/b/c", b"v")
    items = [r["PutRequest"]["Item"] for r in reqs]
    assert items == [
        {"Path": {"S": " "}, "Key": {"S": "a/"}},
        {"Path": {"S": "a"}, "Key": {"S": "b/"}},
        {"Path": {"S": "a/b"}, "Key": {"S": "c"}, "Value": {"B": b"v"}},
    ]


def test_raw_model_matches_kvstores_records() -> None:
    # The raw baseline must write what kvstore writes (kvstore adds a Version attribute to records
    # and a token, also in Version, to pointers).
    records = pytest.importorskip("kvstore.dynamodb.records")
    for key in ("c", "a/c", "a/b/c", "a/b/c/d/e/f/g/h"):
        ours = [r["PutRequest"]["Item"] for r in model.put_requests(key, b"x")]
        theirs = [{k: v for k, v in p.items() if k != "Version"} for p in records.pointer_items(key, "t")]
        assert ours[:-1] == theirs
        assert {k: v for k, v in ours[-1].items() if k != "Value"} == records.item_key(key)


@pytest.mark.parametrize("depth", range(1, 9))
def test_keyspace_has_the_asked_depth_and_folder_size(depth: int) -> None:
    space = KeySpace("ns", depth, 95, 10)
    keys = space.all_keys()
    assert len(set(keys)) == 95
    assert all(len(k.split("/")) == depth for k in keys)
    folders = space.leaf_folders()
    assert len(folders) == (1 if depth <= 2 else 10)
    if depth >= 3:
        assert Counter(space.folder(i) for i in range(95))[folders[0]] == 10


def test_plans_are_deterministic_and_complete() -> None:
    space = KeySpace("ns", 3, 200, 10)
    for workload in WORKLOADS:
        assert plan(workload, space, 1) == plan(workload, space, 1)
        assert len(plan(workload, space, 1)) == 200
    assert sorted(op.arg for op in plan("put", space, 1)) == sorted(space.all_keys())
    assert sorted(op.arg for op in plan("delete", space, 1)) == sorted(space.all_keys())


def test_mix_shares_and_churn_deletes() -> None:
    ops = plan("mix", KeySpace("ns", 3, 4000, 10), 7)
    kinds = Counter(op.kind for op in ops)
    for kind, share in MIX.items():
        assert abs(kinds[kind] / len(ops) - share) < 0.03
    known = set(KeySpace("ns", 3, 4000, 10).all_keys())
    # Deletes never remove a key of the key space: later workloads still find every key.
    assert not any(op.arg in known for op in ops if op.kind == "delete")


def test_tap_counts_items_per_request_body() -> None:
    body = json.dumps({"RequestItems": {"t": [{"PutRequest": {}}, {"DeleteRequest": {}}]}}).encode()
    assert items_in("BatchWriteItem", body) == 2
    assert items_in("GetItem", b"{}") == 1
    assert items_in("Query", b"{}") == 0
    assert items_in("TransactWriteItems", json.dumps({"TransactItems": [{}, {}, {}]}).encode()) == 3
    assert items_in("BatchGetItem", json.dumps({"RequestItems": {"t": {"Keys": [{}, {}]}}}).encode()) == 2


def test_wire_counts_subtract_to_an_interval() -> None:
    counts = Wire()
    counts.record("GetItem", b"{}")
    before = counts.copy()
    counts.record("BatchWriteItem", json.dumps({"RequestItems": {"t": [{}, {}, {}]}}).encode())
    interval = counts - before
    assert (interval.requests, interval.items) == (1, 3)
    assert dict(interval.by_operation) == {"BatchWriteItem": 1}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3
    assert math.isnan(percentile([], 50))
    assert latency_summary([1_000_000, 2_000_000])["max"] == 2.0


def test_ratios() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert round_ratios({"ops_per_s_rounds": [10, 30]}, {"ops_per_s_rounds": [10, 10]}) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
    }


def test_compare_pairs_targets_and_tolerates_a_missing_one() -> None:
    base = {"scenario": "s", "workload": "get", "depth": 3, "value_size": 1, "concurrency": 1, "keys": 1}
    kv = {**base, "target": "kvstore", "ops_per_s": 50.0, "latency_ms": {"p95": 2.0}, "sweeps": []}
    raw = {**base, "target": "raw", "ops_per_s": 100.0, "latency_ms": {"p95": 1.0}, "sweeps": []}
    (both,) = compare([kv, raw])
    assert both["ratio"]["ops_per_s"] == 0.5
    assert both["ratio"]["p95_ms"] == 2.0
    (alone,) = compare([raw])
    assert alone["kvstore"] is None and alone["ratio"]["ops_per_s"] is None
    assert "get" in format_table([both, alone])


def test_scenarios_merge_shared_points() -> None:
    cfg = standard_config()
    scenarios = cfg.scenarios()
    ids = [s.id for s in scenarios]
    assert len(ids) == len(set(ids))
    shared = next(s for s in scenarios if s.sweeps == ("concurrency", "depth"))
    assert shared.workloads == WORKLOADS
    only_put = BenchConfig(workloads=("put",)).scenarios()
    assert all(s.workloads == ("put",) for s in only_put)


def test_config_validation() -> None:
    quick_config().validate()
    for bad in (BenchConfig(depths=(9,)), BenchConfig(value_sizes=(0,)), BenchConfig(workloads=("scan",))):
        with pytest.raises(ValueError):
            bad.validate()


def test_cli_options_override_the_set() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--workloads", "scan"])
    args = parser().parse_args(["--quick", "--workloads", "put,get", "--concurrency", "1,64", "--latency-ms", "5"])
    cfg = config_from_args(args)
    assert cfg.quick and cfg.workloads == ("put", "get") and cfg.concurrency == (1, 64) and cfg.latency_ms == 5
    assert config_from_args(parser().parse_args(["--depths", "none"])).depths == ()
    assert config_from_args(parser().parse_args(["--value-sizes", "100,10k"])).value_sizes == (100, 10_000)


def test_three_targets_compare_and_tabulate() -> None:
    base = {"scenario": "s", "workload": "put", "depth": 3, "value_size": 1, "concurrency": 64, "keys": 1,
            "sweeps": [], "folders": 10}
    cells = [{**base, "target": t, "ops_per_s": v, "ops_per_s_rounds": [v], "wire": {"items_per_op": i}}
             for t, v, i in (("kvstore", 300.0, 1.2), ("kvstore-plain", 100.0, 3.0), ("raw", 100.0, 3.0))]
    (row,) = compare(cells)
    assert row["ratio"]["ops_per_s"] == 3.0 and row["ratio_plain"]["ops_per_s"] == 1.0
    assert row["coalesce_gain"]["ops_per_s"] == 3.0 and row["ratio"]["items_per_op"] == 0.4
    text = format_table([row])
    assert "gain" in text and "put@10f" in text and "1.20/3.00/3.00" in text
    (pair,) = compare([c for c in cells if c["target"] != "kvstore-plain"])
    assert pair["kvstore-plain"] is None and pair["coalesce_gain"]["ops_per_s"] is None
    assert "gain" not in format_table([pair])


def test_coalesce_set_has_hot_folders_and_three_targets() -> None:
    cfg = coalesce_config()
    cfg.validate()
    assert cfg.targets == TARGETS and "kvstore-plain" in TARGETS
    scenarios = cfg.scenarios()
    assert {s.concurrency for s in scenarios if not s.folders} == {1, 16, 64, 256}
    (hot,) = [s for s in scenarios if s.folders]
    assert (hot.concurrency, hot.folders, hot.workloads) == (64, 10, ("put",))
    space = KeySpace(hot.id, hot.depth, hot.keys, hot.fanout(cfg.fanout))
    assert len(space.leaf_folders()) == 10
    args = parser().parse_args(["--coalesce", "--targets", "kvstore-plain,raw", "--folders", "5"])
    assert config_from_args(args).targets == ("kvstore-plain", "raw")
    assert config_from_args(args).folders == (5,)
    with pytest.raises(ValueError):
        BenchConfig(base_depth=1, folders=(10,)).validate()
