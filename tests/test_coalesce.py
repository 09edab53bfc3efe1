"""Group commit and coalesced reads on DynamoDB Local (kvstore.dynamodb.coalesce).

Coalescing is on by default, so the conformance suite, the model-based test and the integrity races
already run with it; these tests pin what it adds: shared requests, shared pointer items, per-key
order, failures that stay with their own operation, and the switch that turns it off.
"""

from __future__ import annotations

import asyncio

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
