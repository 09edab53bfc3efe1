"""DynamoDBBackend specifics on DynamoDB Local: the table layout, request plans and failure modes."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

import kvstore
from kvstore import BackendClosed, EngineUnavailable, Entry, TableNotFound
from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import free_port


async def scan(b: DynamoDBBackend) -> dict[tuple[str, str], dict[str, Any]]:
    out = await b.table.call("scan", ConsistentRead=True)
    return {(i["Path"]["S"], i["Key"]["S"]): i for i in out["Items"]}


async def test_table_layout_is_vaults(dynamo: DynamoDBBackend) -> None:
    await dynamo.put(Entry("a/b/c", b"v"))
    items = await scan(dynamo)
    # The record, plus one pointer per folder above it.
    assert set(items) == {("a/b", "c"), ("a", "b/"), (" ", "a/")}
    assert items[("a/b", "c")]["Value"] == {"B": b"v"}
    assert "S" in items[("a/b", "c")]["Version"]
    desc = await dynamo.table.describe()
    assert desc is not None
    assert {k["AttributeName"]: k["KeyType"] for k in desc["KeySchema"]} == {"Path": "HASH", "Key": "RANGE"}


async def test_reads_a_table_vault_wrote(dynamo: DynamoDBBackend) -> None:
    # Vault's older writers stored values as base64 strings and no version attribute.
    legacy = [
        {"Path": {"S": " "}, "Key": {"S": "sys/"}},
        {"Path": {"S": "sys"}, "Key": {"S": "token"}, "Value": {"S": base64.b64encode(b"\x01secret").decode()}},
        {"Path": {"S": "sys"}, "Key": {"S": "_core-lock"}, "Value": {"S": "x"}},
    ]
    await dynamo.table.call("batch_write_item", RequestItems={dynamo.table.name: [
        {"PutRequest": {"Item": i}} for i in legacy]})
    assert await dynamo.get("sys/token") == Entry("sys/token", b"\x01secret")
    assert await dynamo.list("") == ["sys/"]
    assert await dynamo.list("sys/") == ["token"]  # the lock record stays hidden


async def test_put_of_a_key_deeper_than_one_batch(dynamo: DynamoDBBackend) -> None:
    key = "/".join(f"d{i}" for i in range(30))  # 29 pointers + the record: two batches
    await dynamo.put(Entry(key, b"deep"))
    assert await dynamo.get(key) == Entry(key, b"deep")
    assert await dynamo.list("d0/d1/") == ["d2/"]
    assert await dynamo.list("/".join(f"d{i}" for i in range(29)) + "/") == ["d29"]
    assert len(await scan(dynamo)) == 30
    await dynamo.delete(key)
    assert await scan(dynamo) == {}  # every pointer pruned


async def test_request_plan(dynamo: DynamoDBBackend) -> None:
    counts = dynamo.table.requests
    await dynamo.put(Entry("f/sibling", b"1"))
    before = counts.copy()
    await dynamo.put(Entry("f/g/h", b"1"))
    assert counts - before == {"batch_write_item": 1}, "a put is one BatchWriteItem"
    before = counts.copy()
    await dynamo.get("f/g/h")
    assert counts - before == {"get_item": 1}
    before = counts.copy()
    await dynamo.list("f/")
    assert counts - before == {"query": 1}
    await dynamo.put(Entry("f/g/i", b"1"))
    before = counts.copy()
    await dynamo.delete("f/g/h")
    # The folder keeps a sibling: the record's delete, then one Query (after it, so that two
    # deletes emptying one folder cannot both see the other's key).
    assert counts - before == {"batch_write_item": 1, "query": 1}
    before = counts.copy()
    await dynamo.delete("f/g/i")
    assert await dynamo.list("f/") == ["sibling"]
    await dynamo.aclose()  # waits for the background re-checks, so the counts are final
    # f/g/ empties: the pointer's token, a second probe, the conditional delete (with the parent's
    # token read alongside), a probe of f/ (which keeps "sibling"); then two re-checks of f/g;
    # and the list above.
    assert counts - before == {"batch_write_item": 1, "query": 6, "get_item": 2, "delete_item": 1}


async def test_deep_delete_stops_probing_at_the_first_folder_with_children(dynamo: DynamoDBBackend) -> None:
    deep = "a/b/c/d/e/f/g/h"
    await dynamo.put(Entry(deep, b"1"))
    await dynamo.put(Entry("a/b/c/d/e/f/x", b"1"))  # the emptied folder's parent keeps a child
    counts = dynamo.table.requests
    before = counts.copy()
    await dynamo.delete(deep)
    # g/ empties; its parent f/ still holds x: one pointer removed, no probe above f/.
    assert (counts - before)["delete_item"] == 1
    assert (counts - before)["query"] <= 4  # two probes of g, one of f, maybe the first re-check
    assert await dynamo.list("a/b/c/d/e/f/") == ["x"]
    before = counts.copy()
    await dynamo.delete("a/b/c/d/e/f/x")
    # Now every level empties: six pointers removed, deepest first, one conditional delete each.
    assert (counts - before)["delete_item"] == 6
    assert await dynamo.list("") == []
    assert await scan(dynamo) == {}


async def test_list_reads_every_page(dynamo: DynamoDBBackend) -> None:
    # 1100 names of ~1000 bytes is over Query's 1 MB page: list must follow LastEvaluatedKey.
    names = [f"{i:04d}" + "n" * 1000 for i in range(1100)]
    requests = [{"PutRequest": {"Item": {"Path": {"S": "big"}, "Key": {"S": n}, "Value": {"B": b""}}}}
                for n in names]
    await asyncio.gather(*(dynamo.writer.write(requests[i:i + 25]) for i in range(0, len(requests), 25)))
    before = dynamo.table.requests["query"]
    assert await dynamo.list("big/") == names
    assert dynamo.table.requests["query"] - before >= 2, "the listing spanned more than one page"


async def test_requests_carry_kvstores_fixed_user_agent(dynamo: DynamoDBBackend) -> None:
    # Built once (botocore would rebuild it twice per request): the same header on every request.
    seen: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        agent = request.headers["User-Agent"]
        seen.append(agent.decode() if isinstance(agent, bytes) else agent)

    events = dynamo.table.client.meta.events
    events.register("before-send.dynamodb", capture)
    try:
        await dynamo.put(Entry("ua/k", b"v"))
        await dynamo.get("ua/k")
    finally:
        events.unregister("before-send.dynamodb", capture)
    assert len(seen) >= 2 and len(set(seen)) == 1
    assert seen[0].startswith(f"kvstore/{kvstore.__version__} aiobotocore/")


async def test_permit_pool_bounds_requests_in_flight(dynamodb_conf: dict[str, str]) -> None:
    async with await DynamoDBBackend.create({**dynamodb_conf, "max_parallel": "4"}) as b:
        await asyncio.gather(*(b.put(Entry(f"p/{i}", b"x")) for i in range(40)))
        stats = b.table.permits.statistics()
        assert stats.size == 4
        assert 1 <= stats.peak_in_use <= 4
        assert len(await b.list("p/")) == 40


async def test_provisioned_table_uses_configured_capacity(dynamodb_conf: dict[str, str]) -> None:
    conf = {**dynamodb_conf, "billing_mode": "PROVISIONED", "read_capacity": "7", "write_capacity": "9"}
    async with await DynamoDBBackend.create(conf) as b:
        desc = await b.table.describe()
        assert desc is not None
        assert desc["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
        assert desc["ProvisionedThroughput"]["WriteCapacityUnits"] == 9


async def test_unreachable_endpoint_is_a_typed_error() -> None:
    conf = {"endpoint": f"http://127.0.0.1:{free_port()}", "table": "nowhere", "access_key": "x",
            "secret_key": "y", "dynamodb_max_retries": "0", "connect_timeout": "1"}
    with pytest.raises(EngineUnavailable):
        # environ={}: the session's AWS_DYNAMODB_ENDPOINT would otherwise win over the config.
        await DynamoDBBackend.create(conf, environ={})


async def test_deleted_table_is_a_typed_error(dynamo: DynamoDBBackend) -> None:
    await dynamo.put(Entry("k", b"v"))
    await dynamo.table.call("delete_table")
    with pytest.raises(TableNotFound):
        await dynamo.get("k")
    with pytest.raises(TableNotFound):
        await dynamo.put(Entry("k", b"v"))


async def test_closed_backend_refuses_calls(dynamodb_conf: dict[str, str]) -> None:
    b = await DynamoDBBackend.create(dynamodb_conf)
    await b.aclose()
    await b.aclose()  # idempotent
    with pytest.raises(BackendClosed):
        await b.get("k")
    with pytest.raises(RuntimeError):  # BackendClosed is misuse, a RuntimeError too
        await b.put(Entry("k", b"v"))


async def test_existing_table_is_reused(dynamo: DynamoDBBackend, dynamodb_conf: dict[str, str]) -> None:
    await dynamo.put(Entry("keep", b"1"))
    async with await DynamoDBBackend.create(dynamodb_conf) as again:
        assert await again.get("keep") == Entry("keep", b"1")
