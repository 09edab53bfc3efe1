"""Configuration: Vault's keys and environment variables, validated with clear errors."""

from __future__ import annotations

import pytest

from kvstore import ConfigError
from kvstore.dynamodb import DynamoDBBackend, DynamoDBConfig


def test_defaults_are_vaults() -> None:
    c = DynamoDBConfig.from_mapping({}, {})
    assert (c.table, c.region, c.read_capacity, c.write_capacity, c.max_parallel, c.ha_enabled) == (
        "vault-dynamodb-backend", "us-east-1", 5, 5, 128, False)
    assert c.lock_timings.ttl == 15.0 and c.lock_timings.renew_interval == 5.0


def test_environment_wins_over_config() -> None:
    env = {"AWS_DYNAMODB_TABLE": "from-env", "AWS_DYNAMODB_ENDPOINT": "http://e:1", "DYNAMODB_HA_ENABLED": "true",
           "AWS_REGION": "eu-west-1"}
    c = DynamoDBConfig.from_mapping({"table": "from-conf", "endpoint": "http://c:2", "region": "us-west-2"}, env)
    assert (c.table, c.endpoint, c.ha_enabled, c.region) == ("from-env", "http://e:1", True, "eu-west-1")


def test_region_precedence() -> None:
    env = {"AWS_DYNAMODB_REGION": "ap-south-1", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-1"}
    assert DynamoDBConfig.from_mapping({}, env).region == "ap-south-1"
    assert DynamoDBConfig.from_mapping({}, {"AWS_DEFAULT_REGION": "us-west-1"}).region == "us-west-1"
    assert DynamoDBConfig.from_mapping({"region": "sa-east-1"}, {}).region == "sa-east-1"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"read_capacity": "abc"}, 'invalid read capacity: "abc"'),
        ({"write_capacity": "-1"}, "invalid write capacity"),
        ({"max_parallel": "x"}, 'invalid max parallel: "x"'),
        ({"ha_enabled": "yes"}, "invalid ha_enabled"),
        ({"dynamodb_max_retries": "1.5"}, "invalid max retries"),
        ({"billing_mode": "free"}, "invalid billing mode"),
        ({"lock_ttl": "0"}, "invalid lock ttl"),
        ({"endpoint": "localhost:8000"}, "invalid endpoint"),
        ({"table": "a"}, "invalid table name"),
        ({"tabel": "typo"}, "unknown config key"),
    ],
)
def test_invalid_values_are_clear_errors(conf: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DynamoDBConfig.from_mapping(conf, {})


def test_lock_timings_from_config() -> None:
    c = DynamoDBConfig.from_mapping({"lock_ttl": "4", "lock_renew_interval": "1", "lock_retry_interval": "0.5",
                                     "lock_watch_interval": "2"}, {})
    t = c.lock_timings
    assert (t.ttl, t.renew_interval, t.retry_interval, t.watch_interval) == (4.0, 1.0, 0.5, 2.0)


def test_renew_at_or_beyond_ttl_is_accepted_with_a_warning() -> None:
    with pytest.warns(RuntimeWarning, match="renew interval"):
        c = DynamoDBConfig.from_mapping({"lock_ttl": "2", "lock_renew_interval": "3"}, {})
    assert c.lock_timings.renew_interval == 3.0


async def test_create_rejects_bad_config_before_any_io() -> None:
    with pytest.raises(ConfigError, match="invalid read capacity"):
        await DynamoDBBackend.create({"read_capacity": "abc", "endpoint": "http://127.0.0.1:9"})


async def test_missing_table_without_create_table_is_table_not_found(dynamodb_conf: dict[str, str]) -> None:
    from kvstore import TableNotFound

    with pytest.raises(TableNotFound, match="does not exist"):
        await DynamoDBBackend.create({**dynamodb_conf, "create_table": "false"}, environ={})
    # The failed open created nothing: a later open with creation on finds no table and makes one.
    async with await DynamoDBBackend.create(dynamodb_conf, environ={}) as b:
        assert await b.list("") == []
