"""DynamoDBConfig: the backend's settings, read from Vault's config keys and environment variables.

Keys and variables follow Vault's DynamoDB backend so an existing Vault configuration works
unchanged; the environment wins over the mapping. Every value is validated here, once, and a bad
one is a :class:`~kvstore.errors.ConfigError` naming the key (``invalid read capacity: "abc"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvstore.errors import ConfigError
from kvstore.lease import DEFAULT_TIMINGS, LockTimings
from kvstore.permits import DEFAULT_PERMITS

__all__ = ["DEFAULT_REGION", "DEFAULT_TABLE", "ENV_VARS", "ConfigValue", "DynamoDBConfig"]

ConfigValue = str | int | float | bool
"""What a config mapping may hold: Vault's strings, or a number / flag where the key means one."""

DEFAULT_TABLE = "vault-dynamodb-backend"
DEFAULT_REGION = "us-east-1"
#: Vault's provisioned capacity for tables it creates.
DEFAULT_CAPACITY = 5
BILLING_MODES = ("PROVISIONED", "PAY_PER_REQUEST")

#: The environment variables that override each config key, first match wins (Vault's names).
#: Public so that tools which let their own flags win (the CLI) drop exactly these.
ENV_VARS: Mapping[str, tuple[str, ...]] = {
    "table": ("AWS_DYNAMODB_TABLE",),
    "endpoint": ("AWS_DYNAMODB_ENDPOINT",),
    "region": ("AWS_DYNAMODB_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "read_capacity": ("AWS_DYNAMODB_READ_CAPACITY",),
    "write_capacity": ("AWS_DYNAMODB_WRITE_CAPACITY",),
    "dynamodb_max_retries": ("AWS_DYNAMODB_MAX_RETRIES",),
    "ha_enabled": ("DYNAMODB_HA_ENABLED",),
}

_KNOWN_KEYS = frozenset(
    {
        "table", "read_capacity", "write_capacity", "endpoint", "region", "dynamodb_max_retries",
        "ha_enabled", "max_parallel", "access_key", "secret_key", "session_token", "billing_mode",
        "lock_ttl", "lock_renew_interval", "lock_retry_interval", "lock_watch_interval",
        "write_deadline", "connect_timeout", "read_timeout", "table_active_timeout", "create_table",
        "coalesce",
    }
)


@dataclass(frozen=True, slots=True)
class DynamoDBConfig:
    """Validated settings of a :class:`~kvstore.dynamodb.DynamoDBBackend`."""

    table: str = DEFAULT_TABLE
    region: str = DEFAULT_REGION
    endpoint: str | None = None
    read_capacity: int = DEFAULT_CAPACITY
    write_capacity: int = DEFAULT_CAPACITY
    billing_mode: str = "PROVISIONED"
    max_retries: int | None = None
    """The SDK's retry attempts for throttling and 5xx; ``None`` keeps botocore's default."""
    ha_enabled: bool = False
    max_parallel: int = DEFAULT_PERMITS
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    lock_timings: LockTimings = DEFAULT_TIMINGS
    write_deadline: float = 30.0
    """How long unprocessed batch items are retried before a put fails with WriteIncomplete."""
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    table_active_timeout: float = 120.0
    create_table: bool = True
    """Create the table when it is missing (Vault does). Off, a missing table is TableNotFound:
    what read-only tools want, so a mistyped table name does not quietly create a new table."""
    coalesce: bool = True
    """Let concurrent operations share BatchWriteItem / BatchGetItem calls (group commit and
    coalesced reads, :mod:`kvstore.dynamodb.coalesce`). Off, every operation sends its own requests
    (what the raw-equivalence benchmark compares against)."""

    @classmethod
    def from_mapping(
        cls, conf: Mapping[str, ConfigValue] | None = None, environ: Mapping[str, str] | None = None
    ) -> DynamoDBConfig:
        """Build from Vault-style ``conf`` keys, with environment variables taking precedence.

        Values are strings, as in Vault's config; numbers and booleans are accepted where the
        key means one (``{"max_parallel": 64, "ha_enabled": True}``).

        :raises ConfigError: an unknown key or an invalid value.
        """
        env = os.environ if environ is None else environ
        unknown = sorted(set(conf or {}) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        text = {k: _as_text(k, v) for k, v in (conf or {}).items()}

        def pick(key: str) -> str | None:
            for name in ENV_VARS.get(key, ()):
                if env.get(name):
                    return env[name]
            v = text.get(key)
            return v if v not in (None, "") else None

        table = pick("table") or DEFAULT_TABLE
        if not 3 <= len(table) <= 255 or not all(c.isalnum() or c in "_-." for c in table):
            raise ConfigError(f"invalid table name: {table!r} (3-255 of a-z A-Z 0-9 _ - .)")
        region = pick("region") or DEFAULT_REGION
        endpoint = pick("endpoint")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"invalid endpoint: {endpoint!r} (an http:// or https:// URL)")
        billing = (pick("billing_mode") or "PROVISIONED").upper()
        if billing not in BILLING_MODES:
            raise ConfigError(f"invalid billing mode: {billing!r} (one of {', '.join(BILLING_MODES)})")
        max_retries_s = pick("dynamodb_max_retries")
        timings = DEFAULT_TIMINGS.override(
            ttl=_seconds("lock ttl", pick("lock_ttl")),
            renew_interval=_seconds("lock renew interval", pick("lock_renew_interval")),
            watch_interval=_seconds("lock watch interval", pick("lock_watch_interval")),
            retry_interval=_seconds("lock retry interval", pick("lock_retry_interval")),
        )
        return cls(
            table=table,
            region=region,
            endpoint=endpoint,
            read_capacity=_int("read capacity", pick("read_capacity"),
                               DEFAULT_CAPACITY, minimum=1),
            write_capacity=_int("write capacity", pick("write_capacity"),
                                DEFAULT_CAPACITY, minimum=1),
            billing_mode=billing,
            max_retries=None if max_retries_s is None else _int("max retries", max_retries_s, 0, minimum=0),
            ha_enabled=_bool("ha_enabled", pick("ha_enabled")),
            max_parallel=_int("max parallel", pick("max_parallel"), DEFAULT_PERMITS, minimum=1),
            access_key=pick("access_key"),
            secret_key=pick("secret_key"),
            session_token=pick("session_token"),
            lock_timings=timings,
            write_deadline=_seconds("write deadline", pick("write_deadline")) or 30.0,
            connect_timeout=_seconds("connect timeout", pick("connect_timeout")) or 10.0,
            read_timeout=_seconds("read timeout", pick("read_timeout")) or 30.0,
            table_active_timeout=_seconds("table active timeout", pick("table_active_timeout")) or 120.0,
            create_table=_bool("create_table", pick("create_table"), default=True),
            coalesce=_bool("coalesce", pick("coalesce"), default=True),
        )


#: Keys whose value is a number or a flag, so that an ``int``/``float``/``bool`` is accepted as well
#: as its string (the others -- names, URLs, credentials -- must be strings).
_NON_TEXT_KEYS = frozenset(
    {
        "read_capacity", "write_capacity", "dynamodb_max_retries", "ha_enabled", "max_parallel",
        "lock_ttl", "lock_renew_interval", "lock_retry_interval", "lock_watch_interval",
        "write_deadline", "connect_timeout", "read_timeout", "table_active_timeout", "create_table",
        "coalesce",
    }
)
_FLAGS = frozenset({"ha_enabled", "create_table", "coalesce"})


def _as_text(key: str, value: object) -> str:
    """``value`` as the string Vault's config would hold; a typed value only where it fits the key."""
    if isinstance(value, str):
        return value
    if key in _NON_TEXT_KEYS:
        if isinstance(value, bool):
            if key in _FLAGS:
                return "true" if value else "false"
        elif isinstance(value, int | float):
            return repr(value) if isinstance(value, float) else str(value)
    raise ConfigError(f"config value for {key!r} must be a string, not {type(value).__name__}")


def _int(what: str, raw: str | None, default: int, *, minimum: int) -> int:
    if raw is None:
        return default
    try:
        v = int(raw.strip())
    except ValueError:
        raise ConfigError(f'invalid {what}: "{raw}"') from None
    if v < minimum:
        raise ConfigError(f'invalid {what}: "{raw}" (at least {minimum})')
    return v


def _seconds(what: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        v = float(raw.strip().removesuffix("s"))
    except ValueError:
        raise ConfigError(f'invalid {what}: "{raw}"') from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f'invalid {what}: "{raw}" (a positive number of seconds)')
    return v


def _bool(what: str, raw: str | None, *, default: bool = False) -> bool:
    # Go's strconv.ParseBool, which Vault uses, accepts exactly these.
    if raw is None:
        return default
    s = raw.strip()
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ConfigError(f'invalid {what}: "{raw}" (true or false)')
