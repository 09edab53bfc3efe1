"""Group commit and coalesced reads on DynamoDB Local (kvstore.dynamodb.coalesce).

Coalescing is on by default, so the conformance suite, the model-based test and the integrity races
already run with it; these tests pin what it adds: shared requests, shared pointer items, per-key
order, failures that stay with their own operation, and the switch that turns it off.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dynamo_support import proxied

from kvstore import Entry, WriteIncomplete
from kvstore.dynamodb import DynamoDBBackend


async def test_concurrent_puts_share_batches_and_pointer_items(dynamo: DynamoDBBackend) -> None:
    keys = [f"f{i % 2}/sub/k{i}" for i in range(64)]  # two folders: every batch holds puts sharing pointers
    before = dynamo.table.requests["batch_write_item"]
    await asyncio.gather(*(dynamo.put(Entry(k, b"v")) for k in keys))
    sent = dynamo.table.requests["batch_write_item"] - before
    assert sent < len(keys), "concurrent puts shared BatchWriteItem calls"
    assert dynamo.writer.group is not None and dynamo.writer.group.shared_items > 0, "shared folders' pointers"
    got = await asyncio.gather(*(dynamo.get(k) for k in keys))
    assert all(e is not None and e.value == b"v" for e in got)
    assert await dynamo.list("") == ["f0/", "f1/"]
    for i in range(2):
        assert await dynamo.list(f"f{i}/sub/") == sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith(f"f{i}/"))


async def test_batches_pack_puts_into_the_same_folders_together(dynamo: DynamoDBBackend) -> None:
    # Issued interleaved over six folders. Taken in arrival order, each batch of 25 items would
    # carry 18 records and the pointers of all six folders and the root (7); packed by folder, a
    # batch carries about 22 records and 3 pointers.
    batches: list[list[str]] = []  # the Key of every item of every BatchWriteItem sent

    def record(params: dict[str, Any], **_: Any) -> None:
        for requests in params["RequestItems"].values():
            batches.append([r["PutRequest"]["Item"]["Key"]["S"] for r in requests if "PutRequest" in r])

    events = dynamo.table.client.meta.events
    events.register("provide-client-params.dynamodb.BatchWriteItem", record)
    try:
        keys = [f"pk/f{i % 6}/k{i}" for i in range(120)]
        await asyncio.gather(*(dynamo.put(Entry(k, b"v")) for k in keys))
    finally:
        events.unregister("provide-client-params.dynamodb.BatchWriteItem", record)
    with_records = [b for b in batches if any(not k.endswith("/") for k in b)]  # not a pointer reassertion
    records = sum(not k.endswith("/") for b in with_records for k in b)
    pointers = sum(k.endswith("/") for b in with_records for k in b)
    assert records == len(keys)
    assert pointers / records < 0.25, f"{pointers} pointer items for {records} records in {len(with_records)} batches"
    assert await dynamo.list("pk/") == [f"f{i}/" for i in range(6)]
    for i in range(6):
        assert await dynamo.list(f"pk/f{i}/") == sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith(f"pk/f{i}/"))


async def test_per_key_order_is_kept(dynamo: DynamoDBBackend) -> None:
    # Issued in this order without waiting: each must land in this order.
    busy = [dynamo.put(Entry(f"other/{i}", b"x")) for i in range(12)]  # keep every lane busy
    ops = []
    for n in range(20):
        ops += [dynamo.put(Entry(f"o/k{n}", b"1")), dynamo.delete(f"o/k{n}"), dynamo.put(Entry(f"o/j{n}", b"1")),
                dynamo.put(Entry(f"o/j{n}", b"2"))]
    await asyncio.gather(*busy, *ops)
    for n in range(20):
        assert await dynamo.get(f"o/k{n}") is None, "the delete came after the put"
        assert await dynamo.get(f"o/j{n}") == Entry(f"o/j{n}", b"2"), "the last put wins"
    assert await dynamo.list("o/") == sorted(f"j{n}" for n in range(20))


async def test_concurrent_gets_share_batch_get_item(dynamo: DynamoDBBackend) -> None:
    await asyncio.gather(*(dynamo.put(Entry(f"g/{i}", str(i).encode())) for i in range(60)))
    before = dynamo.table.requests.copy()
    keys = [f"g/{i % 80}" for i in range(160)]  # duplicates, and keys that do not exist
    got = await asyncio.gather(*(dynamo.get(k) for k in keys))
    for k, e in zip(keys, got, strict=True):
        n = int(k.split("/")[1])
        assert e == (Entry(k, str(n).encode()) if n < 60 else None)
    used = dynamo.table.requests - before
    assert used["batch_get_item"] >= 1
    assert used["batch_get_item"] + used["get_item"] < len(keys)
    # A lone read is still one GetItem.
    before = dynamo.table.requests.copy()
    assert await dynamo.get("g/1") == Entry("g/1", b"1")
    assert dynamo.table.requests - before == {"get_item": 1}


async def test_switched_off_every_operation_sends_its_own(dynamodb_conf: dict[str, str]) -> None:
    async with await DynamoDBBackend.create({**dynamodb_conf, "coalesce": "false"}) as b:
        assert b.writer.group is None
        await asyncio.gather(*(b.put(Entry(f"s/{i}", b"v")) for i in range(30)))
        before = b.table.requests.copy()
        await asyncio.gather(*(b.get(f"s/{i}") for i in range(30)))
        assert b.table.requests - before == {"get_item": 30}



async def test_an_operation_fails_alone(dynamodb_conf: dict[str, str]) -> None:
    # Every batch forwards only its first item until the deadline: in a shared batch, the
    # operations whose items landed succeed and the others fail, each with its own outcome.
    async with proxied(dynamodb_conf, write_deadline="0.3") as (proxy, b):
        await b.put(Entry("warm", b""))
        storm = proxy.partial_batch(keep=1, duration=2.0)
        keys = [f"top{i}" for i in range(40)]
        results = await asyncio.gather(*(b.put(Entry(k, b"v")) for k in keys), return_exceptions=True)
        storm.cancel()
        failed = [k for k, r in zip(keys, results, strict=True) if isinstance(r, BaseException)]
        assert all(isinstance(r, WriteIncomplete) for r in results if isinstance(r, BaseException))
        assert failed and len(failed) < len(keys), "some operations landed, some did not"
        for k, r in zip(keys, results, strict=True):
            landed = await b.get(k) is not None
            assert landed == (r is None), f"{k}: outcome {r!r} but stored={landed}"


@pytest.mark.parametrize("n", [1, 2])
async def test_cancelling_one_caller_keeps_the_others(dynamo: DynamoDBBackend, n: int) -> None:
    tasks = [asyncio.ensure_future(dynamo.put(Entry(f"c{n}/{i}", b"v"))) for i in range(30)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] in ([3], [])
    for i in range(30):
        if i != 3:
            assert await dynamo.get(f"c{n}/{i}") is not None


async def test_coalesced_calls_lose_nothing_to_partial_batches_and_throttles(dynamodb_conf: dict[str, str]) -> None:
    # Shared BatchWriteItem / BatchGetItem calls answered in part (unprocessed items and keys) or
    # throttled (retried by the SDK, as by default): every put lands, listed, and every get reads it.
    async with proxied(dynamodb_conf) as (proxy, b):
        keys = [f"pb/f{i % 4}/k{i}" for i in range(80)]
        faults = [proxy.partial_batch(fraction=0.5, times=10), proxy.throttle(operations={"BatchWriteItem"}, times=4)]
        await asyncio.gather(*(b.put(Entry(k, k.encode())) for k in keys))
        assert all(f.fired for f in faults), [f.fired for f in faults]
        faults = [proxy.partial_batch(fraction=0.5, operations={"BatchGetItem"}, times=10),
                  proxy.throttle(operations={"BatchGetItem"}, times=3)]
        got = await asyncio.gather(*(b.get(k) for k in [*keys, "pb/f0/absent"]))
        assert got == [*(Entry(k, k.encode()) for k in keys), None]
        assert all(f.fired for f in faults), [f.fired for f in faults]
        assert proxy.stats()["BatchGetItem"].forwarded > 1
        assert await b.list("pb/") == [f"f{i}/" for i in range(4)]
        for i in range(4):
            assert await b.list(f"pb/f{i}/") == sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith(f"pb/f{i}/"))
