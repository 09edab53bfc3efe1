"""Tests of :class:`kvstore.testing.faults.FaultProxy` against a real DynamoDB Local.

Each test drives a real aiobotocore client through the proxy and checks that the fault looks to
the client exactly as DynamoDB would make it look (error codes, ``UnprocessedItems``, connection
errors, read timeouts), and that it would fail if the fault were not injected. The engine is
the session's DynamoDB Local (the ``dynamodb_endpoint`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import aiohttp
import botocore.session
import pytest
import pytest_asyncio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from kvstore.testing.faults import MAX_STALL_SECONDS, FaultProxy

_NO_RETRIES = {"max_attempts": 0, "mode": "legacy"}
_TABLE_NUMBERS = itertools.count()


def _config(*, read_timeout: float = 5.0, retries: dict[str, Any] | None = None) -> AioConfig:
    return AioConfig(
        connect_timeout=2.0,
        read_timeout=read_timeout,
        retries=retries if retries is not None else _NO_RETRIES,
    )


def _client(endpoint: str, config: AioConfig | None = None) -> Any:
    """An aiobotocore DynamoDB client context manager for ``endpoint``."""
    return get_session().create_client(
        "dynamodb",
        endpoint_url=endpoint,
        config=config or _config(),
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _sync_client(endpoint: str, config: Config) -> Any:
    """A synchronous botocore DynamoDB client, as code outside any event loop would use."""
    return botocore.session.get_session().create_client(
        "dynamodb",
        endpoint_url=endpoint,
        config=config,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _item(pk: str, **extra: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, **{k: {"S": v} for k, v in extra.items()}}


def _code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def _body(error: ClientError) -> dict[str, Any]:
    """The parsed error response, modeled fields (``Item``, ``CancellationReasons``) included."""
    return cast(dict[str, Any], error.response)


# ------------------------------------------------------------------------------------ fixtures


@pytest_asyncio.fixture
async def direct(dynamodb_endpoint: str) -> AsyncIterator[Any]:
    """A client straight to the engine, for set-up and for checking what really landed."""
    async with _client(dynamodb_endpoint) as client:
        yield client


async def _make_table(direct: Any) -> str:
    name = f"faults-{uuid.uuid4().hex[:8]}-{next(_TABLE_NUMBERS)}"
    await direct.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest_asyncio.fixture
async def table(direct: Any) -> AsyncIterator[str]:
    name = await _make_table(direct)
    yield name
    await direct.delete_table(TableName=name)


@pytest_asyncio.fixture
async def table2(direct: Any) -> AsyncIterator[str]:
    name = await _make_table(direct)
    yield name
    await direct.delete_table(TableName=name)


@pytest_asyncio.fixture
async def proxy(dynamodb_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(dynamodb_endpoint, seed=7) as running:
        yield running


@pytest_asyncio.fixture
async def client(proxy: FaultProxy) -> AsyncIterator[Any]:
    async with _client(proxy.endpoint) as c:
        yield c


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds; timing assertions must survive a loaded machine."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def _landed(direct: Any, table: str, pk: str) -> bool:
    response = await direct.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
    return "Item" in response


async def _scan_keys(direct: Any, table: str) -> set[str]:
    response = await direct.scan(TableName=table, ConsistentRead=True)
    return {item["pk"]["S"] for item in response["Items"]}


# ------------------------------------------------------------------------------------ forwarding


@pytest.mark.asyncio
async def test_forwards_transparently_and_counts(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    await client.put_item(TableName=table, Item=_item("a", v="1"))
    got = await client.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)

    assert got["Item"] == _item("a", v="1")
    assert await _landed(direct, table, "a")
    stats = proxy.stats()
    assert stats["PutItem"].seen == stats["PutItem"].forwarded == 1
    assert stats["GetItem"].seen == stats["GetItem"].forwarded == 1
    assert stats.faulted == 0
    assert stats["DeleteItem"].seen == 0
    proxy.reset_stats()
    assert proxy.stats().seen == 0


@pytest.mark.asyncio
async def test_proxy_listens_on_loopback_only(proxy: FaultProxy) -> None:
    assert proxy.endpoint.startswith("http://127.0.0.1:")
    assert proxy.port > 0


# ------------------------------------------------------------------------------------ latency


@pytest.mark.asyncio
async def test_latency_delays_only_the_chosen_operations(proxy: FaultProxy, client: Any, table: str) -> None:
    fault = proxy.latency(0.15, jitter=0.05, operations={"GetItem"})
    await client.put_item(TableName=table, Item=_item("a"))

    started = time.monotonic()
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    elapsed = time.monotonic() - started

    assert 0.15 <= elapsed < 2.0
    assert fault.fired == 1  # the PutItem was not delayed
    assert proxy.stats().faulted == 0  # latency is not a fault


# ------------------------------------------------------------------------------------ throttling


@pytest.mark.asyncio
async def test_throttle_n_times_then_forwards(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    proxy.throttle(times=2, operations={"PutItem"})

    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            await client.put_item(TableName=table, Item=_item("a"))
        assert _code(caught.value) == "ProvisionedThroughputExceededException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert not await _landed(direct, table, "a")

    await client.put_item(TableName=table, Item=_item("a"))
    assert await _landed(direct, table, "a")
    put = proxy.stats()["PutItem"]
    assert (put.seen, put.forwarded, put.faulted) == (3, 1, 2)
    assert put.faults == {"throttle": 2}


@pytest.mark.asyncio
@pytest.mark.parametrize("code", ["ThrottlingException", "RequestLimitExceeded"])
async def test_throttle_codes(proxy: FaultProxy, client: Any, table: str, code: Any) -> None:
    proxy.throttle(code=code, times=1)
    with pytest.raises(ClientError) as caught:
        await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    assert _code(caught.value) == code
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})  # only once


@pytest.mark.asyncio
async def test_throttle_for_a_duration(proxy: FaultProxy, client: Any, table: str) -> None:
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})  # warm up: connect, load the model
    fault = proxy.throttle(duration=1.0)
    with pytest.raises(ClientError) as caught:
        await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    assert _code(caught.value) == "ProvisionedThroughputExceededException"
    await _until(lambda: not fault.active)
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    get = proxy.stats()["GetItem"]
    assert (get.seen, get.faulted) == (3, 1)


@pytest.mark.asyncio
async def test_botocore_retries_the_throttle(proxy: FaultProxy, direct: Any, table: str) -> None:
    """botocore recognises the answer as a retryable throttle (and accepts its CRC)."""
    proxy.throttle(times=2, operations={"PutItem"})
    async with _client(proxy.endpoint, _config(retries={"max_attempts": 3, "mode": "legacy"})) as retrying:
        response = await retrying.put_item(TableName=table, Item=_item("a"))
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert proxy.stats()["PutItem"].seen == 3
    assert await _landed(direct, table, "a")


# ------------------------------------------------------------------------------------ partial batches


def _puts(table: str, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {table: [{"PutRequest": {"Item": _item(k)}} for k in keys]}


@pytest.mark.asyncio
async def test_partial_batch_write_keep(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    keys = [f"k{i}" for i in range(5)]
    fault = proxy.partial_batch(keep=2, times=1)

    response = await client.batch_write_item(RequestItems=_puts(table, keys))

    assert response["UnprocessedItems"] == _puts(table, keys[2:])
    assert await _scan_keys(direct, table) == set(keys[:2])
    assert fault.fired == 1

    # Retrying the unprocessed part (the fault is used up) completes the batch.
    again = await client.batch_write_item(RequestItems=response["UnprocessedItems"])
    assert again["UnprocessedItems"] == {}
    assert await _scan_keys(direct, table) == set(keys)
    stats = proxy.stats()["BatchWriteItem"]
    assert (stats.seen, stats.forwarded, stats.faulted) == (2, 2, 1)


@pytest.mark.asyncio
async def test_partial_batch_write_fraction_and_duration(
    proxy: FaultProxy, client: Any, direct: Any, table: str
) -> None:
    proxy.partial_batch(fraction=0.5, duration=5.0)
    keys = [f"k{i}" for i in range(5)]
    request = _puts(table, keys)
    rounds = 0
    while request and rounds < 10:  # bounded: each round makes progress
        rounds += 1
        request = (await client.batch_write_item(RequestItems=request))["UnprocessedItems"]
    # 5 -> 2 land (floor 2.5), 3 -> 1, 2 -> 1, 1 -> 1 (at least one goes through)
    assert rounds == 4
    assert await _scan_keys(direct, table) == set(keys)


@pytest.mark.asyncio
async def test_partial_batch_write_across_tables(
    proxy: FaultProxy, client: Any, direct: Any, table: str, table2: str
) -> None:
    proxy.partial_batch(keep=3, times=1)
    request = {**_puts(table, ["a1", "a2"]), **_puts(table2, ["b1", "b2"])}

    response = await client.batch_write_item(RequestItems=request)

    assert response["UnprocessedItems"] == _puts(table2, ["b2"])
    assert await _scan_keys(direct, table) == {"a1", "a2"}
    assert await _scan_keys(direct, table2) == {"b1"}


@pytest.mark.asyncio
async def test_partial_batch_keep_zero_forwards_nothing(
    proxy: FaultProxy, client: Any, direct: Any, table: str
) -> None:
    proxy.partial_batch(keep=0, times=1)
    request = _puts(table, ["a", "b"])

    response = await client.batch_write_item(RequestItems=request)

    assert response["UnprocessedItems"] == request
    assert await _scan_keys(direct, table) == set()
    stats = proxy.stats()["BatchWriteItem"]
    assert (stats.forwarded, stats.faulted) == (0, 1)


@pytest.mark.asyncio
async def test_partial_batch_get(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    for key in ("a", "b", "c"):
        await direct.put_item(TableName=table, Item=_item(key))
    proxy.partial_batch(keep=1, operations={"BatchGetItem"}, times=1)
    keys = [{"pk": {"S": k}} for k in ("a", "b", "c")]

    response = await client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})

    assert response["Responses"][table] == [_item("a")]
    assert response["UnprocessedKeys"] == {table: {"Keys": keys[1:], "ConsistentRead": True}}


@pytest.mark.asyncio
async def test_partial_batch_is_ignored_when_nothing_to_withhold(proxy: FaultProxy, client: Any, table: str) -> None:
    fault = proxy.partial_batch(keep=5, times=1)
    response = await client.batch_write_item(RequestItems=_puts(table, ["a", "b"]))
    assert response["UnprocessedItems"] == {}
    assert fault.fired == 0 and fault.active  # not used up by a batch it did not shorten


def test_partial_batch_rejects_other_operations(dynamodb_endpoint: str) -> None:
    proxy = FaultProxy(dynamodb_endpoint)
    with pytest.raises(ValueError):
        proxy.partial_batch(keep=1, operations={"PutItem"})
    with pytest.raises(ValueError):
        proxy.partial_batch()
    with pytest.raises(ValueError):
        proxy.stall(MAX_STALL_SECONDS + 1)
    with pytest.raises(ValueError):
        proxy.transaction_conflict(operations={"BatchWriteItem"})


# ------------------------------------------------------------------------------------ rewritten bodies carry a CRC


@pytest.mark.asyncio
async def test_rewritten_responses_have_crc_and_length(proxy: FaultProxy, table: str) -> None:
    """botocore checks x-amz-crc32 on DynamoDB answers: every rewritten body must carry its own."""
    proxy.partial_batch(keep=1, times=1)
    proxy.throttle(times=1, operations={"GetItem"})
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
        "X-Amz-Date": "20240101T000000Z",
    }
    async with aiohttp.ClientSession() as session:
        for operation, body in (
            ("BatchWriteItem", {"RequestItems": _puts(table, ["a", "b"])}),
            ("GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}}}),
        ):
            async with session.post(
                proxy.endpoint,
                data=json.dumps(body),
                headers={**headers, "X-Amz-Target": f"DynamoDB_20120810.{operation}"},
            ) as response:
                payload = await response.read()
                assert response.headers["x-amz-crc32"] == str(zlib.crc32(payload) & 0xFFFFFFFF)
                assert int(response.headers["Content-Length"]) == len(payload)
                if operation == "BatchWriteItem":
                    assert response.status == 200
                    assert json.loads(payload)["UnprocessedItems"] == _puts(table, ["b"])
                else:
                    assert response.status == 400
                    assert json.loads(payload)["__type"].endswith("#ProvisionedThroughputExceededException")


# ------------------------------------------------------------------------------------ transaction conflicts


def _transaction(table: str, keys: list[str]) -> list[dict[str, Any]]:
    return [{"Put": {"TableName": table, "Item": _item(k)}} for k in keys]


@pytest.mark.asyncio
async def test_transaction_conflict(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    proxy.transaction_conflict(times=1)

    with pytest.raises(ClientError) as caught:
        await client.transact_write_items(TransactItems=_transaction(table, ["a", "b"]))

    assert _code(caught.value) == "TransactionCanceledException"
    reasons = _body(caught.value)["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["TransactionConflict", "TransactionConflict"]
    assert await _scan_keys(direct, table) == set()  # never forwarded
    assert proxy.stats()["TransactWriteItems"].forwarded == 0

    await client.transact_write_items(TransactItems=_transaction(table, ["a", "b"]))
    assert await _scan_keys(direct, table) == {"a", "b"}


@pytest.mark.asyncio
async def test_transaction_conflict_on_some_items(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.transaction_conflict(indexes={1}, times=1)
    with pytest.raises(ClientError) as caught:
        await client.transact_write_items(TransactItems=_transaction(table, ["a", "b", "c"]))
    reasons = _body(caught.value)["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "TransactionConflict", "None"]
    assert "[None, TransactionConflict, None]" in caught.value.response["Error"]["Message"]


# ------------------------------------------------------------------------------------ connection resets


@pytest.mark.asyncio
@pytest.mark.parametrize(("how", "error"), [("rst", EndpointConnectionError), ("close", ConnectionClosedError)])
async def test_reset_before_forward_loses_the_request(
    proxy: FaultProxy, client: Any, direct: Any, table: str, how: Any, error: type[Exception]
) -> None:
    proxy.reset_connection(how=how, times=1, operations={"PutItem"})

    with pytest.raises(error):
        await client.put_item(TableName=table, Item=_item("a"))

    assert not await _landed(direct, table, "a")
    await client.put_item(TableName=table, Item=_item("a"))  # a new connection works
    assert await _landed(direct, table, "a")
    put = proxy.stats()["PutItem"]
    assert (put.seen, put.forwarded, put.faulted) == (2, 1, 1)


@pytest.mark.asyncio
async def test_reset_after_forward_is_an_ambiguous_failure(
    proxy: FaultProxy, client: Any, direct: Any, table: str
) -> None:
    proxy.reset_connection(after_forward=True, times=1)

    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        await client.put_item(TableName=table, Item=_item("a"))

    assert await _landed(direct, table, "a")  # the write landed, only the answer was lost
    put = proxy.stats()["PutItem"]
    assert (put.forwarded, put.faulted) == (1, 1)


# ------------------------------------------------------------------------------------ stalls


@pytest.mark.asyncio
async def test_stall_before_forward_times_out_and_loses_the_request(proxy: FaultProxy, direct: Any, table: str) -> None:
    started = time.monotonic()
    proxy.stall(1.2, times=1)
    async with _client(proxy.endpoint, _config(read_timeout=0.3)) as impatient:
        with pytest.raises(ReadTimeoutError):
            await impatient.put_item(TableName=table, Item=_item("a"))

    await asyncio.sleep(max(0.0, started + 1.4 - time.monotonic()))  # past the stall: never forwarded late
    assert not await _landed(direct, table, "a")
    assert proxy.stats()["PutItem"].forwarded == 0


@pytest.mark.asyncio
async def test_stall_after_forward_times_out_after_the_write(proxy: FaultProxy, direct: Any, table: str) -> None:
    proxy.stall(5.0, after_forward=True, times=1)  # ends early: the client hangs up
    async with _client(proxy.endpoint, _config(read_timeout=0.3)) as impatient:
        with pytest.raises(ReadTimeoutError):
            await impatient.put_item(TableName=table, Item=_item("a"))
    assert await _landed(direct, table, "a")


@pytest.mark.asyncio
async def test_short_stall_then_respond_or_reset(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    proxy.stall(0.2, times=1)
    started = time.monotonic()
    await client.put_item(TableName=table, Item=_item("a"))
    assert time.monotonic() - started >= 0.2
    assert await _landed(direct, table, "a")

    proxy.stall(0.2, then="reset", times=1)
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        await client.put_item(TableName=table, Item=_item("b"))
    assert not await _landed(direct, table, "b")


@pytest.mark.asyncio
async def test_stop_cancels_a_stalled_request(dynamodb_endpoint: str, table: str) -> None:
    proxy = FaultProxy(dynamodb_endpoint)
    await proxy.start()
    try:
        stall = proxy.stall(30.0)
        async with _client(proxy.endpoint, _config(read_timeout=20.0)) as patient:
            call = asyncio.ensure_future(patient.put_item(TableName=table, Item=_item("a")))
            await _until(lambda: stall.fired == 1)
            assert not call.done()
            started = time.monotonic()
            await proxy.stop()
            assert time.monotonic() - started < 2.0
            with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
                await asyncio.wait_for(call, 5.0)
    finally:
        await proxy.stop()  # idempotent


# ------------------------------------------------------------------------------------ ALL_OLD stripping


@pytest.mark.asyncio
async def test_strip_all_old_from_conditional_check_failure(
    proxy: FaultProxy, client: Any, direct: Any, table: str
) -> None:
    await direct.put_item(TableName=table, Item=_item("a", v="old"))
    request: dict[str, Any] = {
        "TableName": table,
        "Item": _item("a", v="new"),
        "ConditionExpression": "attribute_not_exists(pk)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    with pytest.raises(ClientError) as unstripped:
        await client.put_item(**request)
    assert _body(unstripped.value)["Item"] == _item("a", v="old")  # the engine sends it

    fault = proxy.strip_all_old(times=1)
    with pytest.raises(ClientError) as stripped:
        await client.put_item(**request)
    assert _code(stripped.value) == "ConditionalCheckFailedException"
    assert "Item" not in _body(stripped.value)
    assert fault.fired == 1
    assert proxy.stats()["PutItem"].faults == {"strip_all_old": 1}


@pytest.mark.asyncio
async def test_strip_all_old_from_transaction_reasons(proxy: FaultProxy, client: Any, direct: Any, table: str) -> None:
    await direct.put_item(TableName=table, Item=_item("a", v="old"))
    proxy.strip_all_old()
    with pytest.raises(ClientError) as caught:
        await client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": _item("a"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {"Put": {"TableName": table, "Item": _item("b")}},
            ]
        )
    reasons = _body(caught.value)["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["ConditionalCheckFailed", "None"]
    assert all("Item" not in r for r in reasons)
    assert proxy.stats()["TransactWriteItems"].faulted == 1


# ------------------------------------------------------------------------------------ control


@pytest.mark.asyncio
async def test_clear_and_cancel(proxy: FaultProxy, client: Any, table: str) -> None:
    throttle = proxy.throttle(operations={"GetItem"})  # no limit: until cleared
    conflict = proxy.transaction_conflict()
    for _ in range(3):
        with pytest.raises(ClientError):
            await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    assert throttle.fired == 3

    proxy.clear("throttle")
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})
    assert not throttle.active and conflict.active

    conflict.cancel()
    await client.transact_write_items(TransactItems=_transaction(table, ["a"]))

    proxy.throttle()
    proxy.clear()
    assert proxy.faults() == []
    await client.get_item(TableName=table, Key={"pk": {"S": "a"}})


@pytest.mark.asyncio
async def test_faults_that_answer_do_not_use_up_a_partial_batch(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.throttle(times=1, operations={"BatchWriteItem"})
    partial = proxy.partial_batch(keep=1, times=1)

    with pytest.raises(ClientError):
        await client.batch_write_item(RequestItems=_puts(table, ["a", "b"]))
    assert partial.fired == 0  # the throttled batch never reached the engine

    response = await client.batch_write_item(RequestItems=_puts(table, ["a", "b"]))
    assert response["UnprocessedItems"] == _puts(table, ["b"])
    assert partial.fired == 1


@pytest.mark.asyncio
async def test_times_is_exact_under_concurrency(proxy: FaultProxy, client: Any, table: str) -> None:
    proxy.throttle(times=5, operations={"PutItem"})
    results = await asyncio.gather(
        *(client.put_item(TableName=table, Item=_item(f"k{i}")) for i in range(20)), return_exceptions=True
    )
    throttled = [r for r in results if isinstance(r, ClientError)]
    assert len(throttled) == 5
    assert all(_code(r) == "ProvisionedThroughputExceededException" for r in throttled)
    assert not [r for r in results if isinstance(r, BaseException) and not isinstance(r, ClientError)]
    put = proxy.stats()["PutItem"]
    assert (put.seen, put.forwarded, put.faulted) == (20, 15, 5)


@pytest.mark.asyncio
async def test_unreachable_upstream_is_a_connection_error() -> None:
    async with FaultProxy("http://127.0.0.1:9", upstream_timeout=2.0) as proxy:
        async with _client(proxy.endpoint) as unreachable:
            with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
                await unreachable.list_tables()
        stats = proxy.stats()["ListTables"]
        assert (stats.seen, stats.forwarded, stats.upstream_errors) == (1, 0, 1)


# ------------------------------------------------------------------------------------ in a thread


@pytest.fixture
def threaded_proxy(dynamodb_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(dynamodb_endpoint).in_thread() as running:
        yield running


def test_in_thread_with_a_synchronous_client(threaded_proxy: FaultProxy, dynamodb_endpoint: str) -> None:
    """Synchronous code (its own loop, another thread) drives and steers a threaded proxy."""
    sync = _sync_client(threaded_proxy.endpoint, Config(retries={"max_attempts": 0, "mode": "legacy"}, read_timeout=5))
    threaded_proxy.throttle(times=1, code="ThrottlingException")
    with pytest.raises(ClientError) as caught:
        sync.list_tables()
    assert _code(caught.value) == "ThrottlingException"
    sync.list_tables()
    assert threaded_proxy.stats()["ListTables"].seen == 2

    # A separate event loop (as code running its own asyncio.run would) works too.
    async def list_async() -> list[str]:
        async with _client(threaded_proxy.endpoint) as c:
            return list((await c.list_tables())["TableNames"])

    assert isinstance(asyncio.run(list_async()), list)
    assert threaded_proxy.stats()["ListTables"].forwarded == 2


def test_in_thread_stops_on_exit(dynamodb_endpoint: str) -> None:
    with FaultProxy(dynamodb_endpoint).in_thread() as running:
        endpoint = running.endpoint
    sync = _sync_client(endpoint, Config(retries={"max_attempts": 0, "mode": "legacy"}, connect_timeout=1))
    with pytest.raises(EndpointConnectionError):
        sync.list_tables()
