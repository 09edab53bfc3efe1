"""kvstore.metrics: the OpenTelemetry instruments after a small workload on DynamoDB Local, and the
no-op without opentelemetry.

The global MeterProvider can be set only once per process, so each test gives kvstore its own SDK
provider with an in-memory reader (``kvstore.metrics.use_meter_provider``) and puts the global one
back afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from kvstore import Entry, metrics
from kvstore.cache import CachedBackend
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.permits import PermitPool
from kvstore.testing.faults import FaultProxy

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
sdk_export = pytest.importorskip("opentelemetry.sdk.metrics.export")


@pytest.fixture
def reader() -> Iterator[Any]:
    """An in-memory reader on a MeterProvider that kvstore's instruments use for this test."""
    reader = sdk_export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    metrics.use_meter_provider(provider)
    try:
        yield reader
    finally:
        metrics.use_meter_provider(None)
        provider.shutdown()


def collect(reader: Any) -> dict[str, list[Any]]:
    """Every data point of the ``kvstore`` scope, by metric name (with each metric's unit)."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            if sm.scope.name != "kvstore":
                continue
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
                out.setdefault(f"{m.name}#unit", []).append(m.unit)
    return out


def total(points: list[Any], **attrs: str) -> float:
    """The sum of the counter points whose attributes include ``attrs``."""
    return sum(p.value for p in points if all(p.attributes.get(k) == v for k, v in attrs.items()))


def hist(points: list[Any], **attrs: str) -> tuple[int, float]:
    """(count, sum) of the histogram points whose attributes include ``attrs``."""
    chosen = [p for p in points if all(p.attributes.get(k) == v for k, v in attrs.items())]
    return sum(p.count for p in chosen), sum(p.sum for p in chosen)


@pytest_asyncio.fixture
async def proxied(dynamodb_conf: dict[str, str]) -> AsyncIterator[tuple[FaultProxy, DynamoDBBackend]]:
    """A backend behind a fault proxy, without SDK retries (so a throttle reaches kvstore)."""
    async with FaultProxy(dynamodb_conf["endpoint"], seed=3) as proxy:
        conf = {**dynamodb_conf, "endpoint": proxy.endpoint, "dynamodb_max_retries": "0", "coalesce": "false"}
        backend = await DynamoDBBackend.create(conf, environ={})
        try:
            yield proxy, backend
        finally:
            await backend.aclose()


async def test_workload_on_dynamodb_local(reader: Any, proxied: tuple[FaultProxy, DynamoDBBackend]) -> None:
    proxy, store = proxied
    await store.put(Entry("m/a", b"1"))
    await store.put(Entry("m/b", b"2"))
    assert (await store.get("m/a")) == Entry("m/a", b"1")
    assert await store.get("m/missing") is None

    # A throttled BatchWriteItem (retried by the writer) and one that comes back partly unprocessed.
    proxy.throttle(times=1, operations={"BatchWriteItem"})
    await store.put(Entry("m/c", b"3"))
    proxy.partial_batch(keep=0, times=1)
    await store.put(Entry("m/d", b"4"))
    assert (await store.get("m/d")) == Entry("m/d", b"4")

    # A cache miss, then a hit (and a cached negative entry).
    cached = CachedBackend(store)
    await cached.get("m/a")
    await cached.get("m/a")
    await cached.get("m/none")
    await cached.get("m/none")
    # Three successful GetItems (m/a, m/missing, m/d) plus the cache's two misses (before the lock,
    # whose acquire reads the record too).
    count, seconds = hist(collect(reader)["kvstore.request.duration"], operation="GetItem", outcome="ok")
    assert count == 5
    assert 0 < seconds < 30

    # A lock held, renewed at least twice, then released.
    lock = store.lock_with("m/leader", "node-1", ttl=2.0, renew_interval=0.1)
    lost = await lock.lock()
    held = collect(reader)["kvstore.lock.held"]
    assert total(held, lock="m/leader") == 1
    for _ in range(100):
        points = collect(reader).get("kvstore.lock.renewals", [])
        if total(points, lock="m/leader", outcome="ok") >= 2:
            break
        await asyncio.sleep(0.05)
    assert not lost.is_set()
    await lock.unlock()

    got = collect(reader)
    duration = got["kvstore.request.duration"]
    assert got["kvstore.request.duration#unit"] == ["s"]
    assert tuple(duration[0].explicit_bounds) == metrics.DURATION_BUCKETS  # seconds, not the ms defaults
    assert hist(duration, operation="BatchWriteItem", outcome="ok")[0] >= 5
    assert hist(duration, operation="BatchWriteItem", outcome="error")[0] == 1
    assert hist(duration, operation="DescribeTable", outcome="ok")[0] >= 1
    assert {p.attributes["outcome"] for p in duration} <= {"ok", "error"}

    errors = got["kvstore.request.errors"]
    assert total(errors, operation="BatchWriteItem", **{"error.type": "Throttled"}) == 1
    assert total(errors, code="ProvisionedThroughputExceededException") == 1
    assert total(got["kvstore.throttles"], operation="BatchWriteItem") == 1

    retries = got["kvstore.batch.retries"]
    assert total(retries, operation="BatchWriteItem", reason="Throttled") == 1
    assert total(retries, operation="BatchWriteItem", reason="unprocessed") == 1
    # keep=0 handed back the whole batch: m/d's record and its folder pointer(s).
    assert total(got["kvstore.batch.unprocessed_items"], operation="BatchWriteItem") >= 1

    assert total(got["kvstore.cache.hits"]) == 2
    assert total(got["kvstore.cache.misses"]) == 2

    assert total(got["kvstore.lock.held"], lock="m/leader") == 0  # granted, then released
    assert total(got["kvstore.lock.renewals"], lock="m/leader", outcome="ok") >= 2
    assert total(got["kvstore.lock.renewals"], outcome="error") == 0

    # Nothing is in flight now; the gauges exist and read zero for this store's pool.
    assert total(got["kvstore.permits.in_use"]) >= 0
    assert "kvstore.permits.waiting" in got


async def test_permit_gauges(reader: Any) -> None:
    pool = PermitPool(1)
    stats = collect(reader)
    base_in_use = total(stats["kvstore.permits.in_use"])
    base_waiting = total(stats["kvstore.permits.waiting"])
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with pool.permit():
            entered.set()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await entered.wait()
    await asyncio.sleep(0)
    got = collect(reader)
    assert total(got["kvstore.permits.in_use"]) - base_in_use == 1
    assert total(got["kvstore.permits.waiting"]) - base_waiting == 2
    assert pool.statistics().waiting == 2
    tasks[2].cancel()  # a waiter that gives up no longer counts
    await asyncio.sleep(0)
    assert total(collect(reader)["kvstore.permits.waiting"]) - base_waiting == 1
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    got = collect(reader)
    assert total(got["kvstore.permits.in_use"]) == base_in_use
    assert total(got["kvstore.permits.waiting"]) == base_waiting
    assert pool.statistics().in_use == 0


async def test_lock_held_counts_down_once(reader: Any) -> None:
    async with InmemBackend() as store:
        lock = store.lock_with("x/leader", "a", ttl=0.5, renew_interval=0.1)
        lost = await lock.lock()
        assert total(collect(reader)["kvstore.lock.held"], lock="x/leader") == 1
        await lock.unlock()
        await lock.unlock()  # idempotent: still counted down once
        assert lost.is_set()
        assert total(collect(reader)["kvstore.lock.held"], lock="x/leader") == 0

        other = store.lock_with("x/other", "b", ttl=0.5, renew_interval=0.1)
        lost = await other.lock()
        assert total(collect(reader)["kvstore.lock.held"], lock="x/other") == 1
    # Closing the backend makes the holder step down by itself (the deadline task sees it).
    await asyncio.wait_for(lost.wait(), 5)
    assert total(collect(reader)["kvstore.lock.held"], lock="x/other") == 0
    with contextlib.suppress(Exception):
        await other.unlock()
    assert total(collect(reader)["kvstore.lock.held"], lock="x/other") == 0


async def test_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """With opentelemetry not importable, every hook is a no-op and the store works as before."""
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # makes `import opentelemetry...` fail
    try:
        reloaded = importlib.reload(metrics)
        assert reloaded.AVAILABLE is False
        reloaded.record_request("get_item", 0.01, None)
        reloaded.record_request("put_item", 0.01, RuntimeError("x"))
        reloaded.record_batch_retry("batch_write_item")
        reloaded.record_unprocessed("batch_write_item", 3)
        reloaded.record_cache(hit=True)
        reloaded.record_lock_held("k")
        reloaded.record_lock_released("k", asyncio.Event())
        reloaded.record_renewal("k", "ok")
        with reloaded.timed_request("get_item"):
            pass
        async with InmemBackend() as inner:
            store = CachedBackend(inner)
            await store.put(Entry("a/b", b"1"))
            assert await store.get("a/b") == Entry("a/b", b"1")
            assert await store.get("a/b") == Entry("a/b", b"1")
            lock = inner.lock_with("a/lock", "v", ttl=1.0, renew_interval=0.1)
            await lock.lock()
            await lock.unlock()
        pool = PermitPool(2)
        async with pool.permit():
            assert pool.statistics().in_use == 1
    finally:
        monkeypatch.undo()
        importlib.reload(metrics)
    assert metrics.AVAILABLE is True


def test_no_provider_set_is_a_no_op() -> None:
    """With the API installed but no MeterProvider, the hooks build nothing and time nothing."""
    from opentelemetry import metrics as otel_metrics

    if type(otel_metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider":
        pytest.skip("this process has a global MeterProvider")
    metrics.use_meter_provider(None)
    assert metrics.timed_request("get_item") is metrics.timed_request("put_item")  # the shared no-op
    metrics.record_request("get_item", 0.01, None)
    metrics.record_cache(hit=True)
