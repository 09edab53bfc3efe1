"""How a DynamoDBBackend gets its connection: typed config values, DynamoDB Local without any AWS
setup, and a caller's own session or client (which the backend then does not close)."""

from __future__ import annotations

import pytest
from aiobotocore.session import get_session

from kvstore import ConfigError, Entry
from kvstore.dynamodb import DynamoDBBackend, DynamoDBConfig


def test_numbers_and_flags_are_accepted_where_the_key_means_one() -> None:
    config = DynamoDBConfig.from_mapping(
        {"max_parallel": 64, "ha_enabled": True, "lock_ttl": 30.5, "create_table": False}, environ={}
    )
    assert (config.max_parallel, config.ha_enabled, config.create_table) == (64, True, False)
    assert config.lock_timings.ttl == 30.5
    with pytest.raises(ConfigError, match="'table' must be a string"):
        DynamoDBConfig.from_mapping({"table": 123}, environ={})
    with pytest.raises(ConfigError, match="'max_parallel' must be a string"):
        DynamoDBConfig.from_mapping({"max_parallel": True}, environ={})  # a flag is no count
    with pytest.raises(ConfigError, match="invalid max parallel"):
        DynamoDBConfig.from_mapping({"max_parallel": 0}, environ={})


async def test_a_loopback_endpoint_needs_no_aws_credentials(dynamodb_endpoint: str, table_name: str) -> None:
    # No access_key, and an environment without AWS credentials: the README's first example.
    env = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    async with await DynamoDBBackend.create({"endpoint": dynamodb_endpoint, "table": table_name}, environ=env) as b:
        await b.put(Entry("a/b", b"1"))
        assert await b.list("a/") == ["b"]


async def test_an_aiobotocore_session_of_the_callers(dynamodb_endpoint: str, table_name: str) -> None:
    session = get_session()
    conf = {"endpoint": dynamodb_endpoint, "table": table_name, "access_key": "local", "secret_key": "local"}
    async with await DynamoDBBackend.create(conf, environ={}, session=session) as b:
        await b.put(Entry("k", b"v"))
        assert await b.get("k") == Entry("k", b"v")


async def test_a_client_of_the_callers_is_used_and_left_open(dynamodb_endpoint: str, table_name: str) -> None:
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name="us-east-1", endpoint_url=dynamodb_endpoint,
        aws_access_key_id="local", aws_secret_access_key="local",
    ) as client:
        async with await DynamoDBBackend.create({"table": table_name}, environ={}, client=client) as b:
            await b.put(Entry("k", b"v"))
        # The backend closed; the client it did not open still works.
        out = await client.get_item(TableName=table_name, Key={"Path": {"S": " "}, "Key": {"S": "k"}})
        assert out["Item"]["Value"]["B"] == b"v"


async def test_an_aioboto3_session_of_the_callers(dynamodb_endpoint: str, table_name: str) -> None:
    aioboto3 = pytest.importorskip("aioboto3")
    session = aioboto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    async with await DynamoDBBackend.create(
        {"endpoint": dynamodb_endpoint, "table": table_name}, environ={}, session=session
    ) as b:
        await b.put(Entry("k", b"v"))
        assert await b.get("k") == Entry("k", b"v")


async def test_session_and_client_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        await DynamoDBBackend.create({"table": "tbl"}, environ={}, session=object(), client=object())
