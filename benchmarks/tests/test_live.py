"""The harness against a real engine: both targets write the same items, and a tiny run works."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from benchmarks import BenchConfig, arun_benchmarks
from benchmarks.targets import open_target, run_tables
from benchmarks.workloads import KeySpace, plan


async def _scan(endpoint: str, table: str) -> list[dict[str, Any]]:
    session = get_session()
    async with session.create_client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    ) as client:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {"TableName": table}
            if start:
                params["ExclusiveStartKey"] = start
            out = await client.scan(**params)
            items += out["Items"]
            start = out.get("LastEvaluatedKey")
            if not start:
                return items


def _comparable(items: list[dict[str, Any]]) -> list[tuple[str, str, bytes | None]]:
    # kvstore also stores a Version attribute on records; the layout is what must agree.
    return sorted((i["Path"]["S"], i["Key"]["S"], i.get("Value", {}).get("B")) for i in items)


async def test_raw_and_kvstore_leave_identical_tables(endpoint: str) -> None:
    run = secrets.token_hex(3)
    names = {t: f"kvbench-test-{run}-{t}" for t in ("kvstore", "kvstore-plain", "raw")}
    space = KeySpace("eq", 4, 60, 5)
    async with run_tables(endpoint, list(names.values())):
        contents = {}
        for target_name, table in names.items():
            target = await open_target(target_name, endpoint, table)
            try:
                for op in plan("put", space, 1):
                    await target.put(op.arg, b"v-" + op.arg.encode())
                assert await target.list("eq/") == ["n0/", "n1/", "n2/"]
                assert await target.get(space.key(7)) == b"v-" + space.key(7).encode()
                for op in plan("delete", space, 1)[:37]:  # empties some folders, not all
                    await target.delete(op.arg)
                for op in plan("mix", space, 1):
                    if op.kind == "put":
                        await target.put(op.arg, b"m")
                    elif op.kind == "delete":
                        await target.delete(op.arg)
            finally:
                await target.aclose()
            contents[target_name] = _comparable(await _scan(endpoint, table))
    assert contents["kvstore"] == contents["raw"]
    assert contents["kvstore-plain"] == contents["raw"]


async def test_a_tiny_run_writes_results_and_plots(endpoint: str, tmp_path: Path) -> None:
    config = BenchConfig(concurrency=(1, 4), depths=(), value_sizes=(), keys=24, warmup_ops=10, rounds=2, label="test")
    report = await arun_benchmarks(config, endpoint=endpoint, results_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["run_id"] == report.data["run_id"]
    assert not doc["notes"], doc["notes"]
    assert {r["target"] for r in doc["results"]} == {"kvstore", "kvstore-plain", "raw"}
    assert len(doc["comparisons"]) == 2 * len(config.workloads)
    for cell in doc["results"]:
        assert cell["ops"] == 24 and cell["errors"] == 0
        assert len(cell["ops_per_s_rounds"]) == 2
        if cell["target"] in ("raw", "kvstore-plain") and cell["workload"] in ("put", "get", "list"):
            # The wire counts match raw's request plan: one request per operation, and a put at
            # depth 3 writes its record and two folder pointers. kvstore without coalescing too.
            assert cell["wire"]["requests_per_op"] == 1.0
            assert cell["wire"]["items_per_op"] == {"put": 3.0, "get": 1.0, "list": 0.0}[cell["workload"]]
    for workload in ("get", "list"):  # kvstore's get and list send exactly raw's requests
        cmp = next(c for c in doc["comparisons"] if c["workload"] == workload and c["concurrency"] == 1)
        assert cmp["ratio"]["requests_per_op"] == 1.0
        assert cmp["ratio_plain"]["requests_per_op"] == 1.0
    assert {p.name for p in report.plot_paths} >= {
        f"{doc['run_id']}-throughput.png",
        f"{doc['run_id']}-latency_p95.png",
        f"{doc['run_id']}-cpu.png",
    }
    assert "kv/raw" in report.table() and "gain" in report.table()  # the three-target table
