"""Table: every request to one DynamoDB table goes through here, under a permit and error translation.

Keeping the choke point in one class means concurrency (``max_parallel``), error mapping and request
counting are decided once, and the rest of the package builds request payloads and reads replies.
It also owns the table's lifecycle: describe, create when missing, wait until ACTIVE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from kvstore import metrics
from kvstore.dynamodb.config import DynamoDBConfig
from kvstore.dynamodb.errormap import translated
from kvstore.dynamodb.records import ATTR_KEY, ATTR_PATH
from kvstore.errors import BackendError, TableNotActive, TableNotFound
from kvstore.permits import PermitPool

__all__ = ["Table"]

log = logging.getLogger(__name__)


class Table:
    """One DynamoDB table reached through one aiobotocore client.

    ``client`` is an aiobotocore DynamoDB client (typed ``Any`` because aiobotocore generates its
    methods at run time).
    """

    def __init__(self, client: Any, name: str, permits: PermitPool) -> None:
        self.client = client
        self.name = name
        self.permits = permits
        self.requests: Counter[str] = Counter()
        """How many requests of each operation this table sent (for benchmarks and tests)."""

    async def call(self, operation: str, *, key: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one request (``operation`` is the snake_case client method, e.g. ``"get_item"``).

        ``TableName`` is filled in unless the operation names tables itself (batch/transact).
        ``key`` only makes error messages precise.

        :raises KVStoreError: the SDK's error, translated (see :mod:`kvstore.dynamodb.errormap`).
        """
        if operation not in ("batch_write_item", "batch_get_item", "transact_write_items", "transact_get_items"):
            params.setdefault("TableName", self.name)
        method = getattr(self.client, operation)
        async with self.permits.permit():
            self.requests[operation] += 1
            with metrics.timed_request(operation), translated(key):
                result: dict[str, Any] = await method(**params)
        return result

    async def describe(self) -> dict[str, Any] | None:
        """The table's description, or ``None`` when it does not exist."""
        try:
            out = await self.call("describe_table")
        except TableNotFound:
            return None
        table: dict[str, Any] = out["Table"]
        return table

    async def ensure(self, config: DynamoDBConfig) -> None:
        """Create the table when missing (Vault's schema and capacities) and wait until ACTIVE.

        :raises TableNotFound: it is missing and ``config.create_table`` is off.
        :raises TableNotActive: it did not become ACTIVE within ``config.table_active_timeout``.
        """
        desc = await self.describe()
        if desc is None and not config.create_table:
            raise TableNotFound(
                f"table {self.name!r} does not exist (and create_table is off)", code="ResourceNotFoundException"
            )
        if desc is None:
            params: dict[str, Any] = {
                "AttributeDefinitions": [
                    {"AttributeName": ATTR_PATH, "AttributeType": "S"},
                    {"AttributeName": ATTR_KEY, "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": ATTR_PATH, "KeyType": "HASH"},
                    {"AttributeName": ATTR_KEY, "KeyType": "RANGE"},
                ],
                "BillingMode": config.billing_mode,
            }
            if config.billing_mode == "PROVISIONED":
                params["ProvisionedThroughput"] = {
                    "ReadCapacityUnits": config.read_capacity,
                    "WriteCapacityUnits": config.write_capacity,
                }
            log.debug("creating table %s (%s)", self.name, config.billing_mode)
            try:
                await self.call("create_table", **params)
            except BackendError as exc:
                # Another process may have created it between our describe and create.
                if exc.code != "ResourceInUseException":
                    raise
        await self.wait_active(config.table_active_timeout)

    async def wait_active(self, seconds: float) -> None:
        """Poll until the table is ACTIVE (a new table on real DynamoDB takes seconds)."""
        deadline = time.monotonic() + seconds
        delay = 0.05
        while True:
            desc = await self.describe()
            status = desc.get("TableStatus") if desc else None
            if status == "ACTIVE":
                return
            if time.monotonic() >= deadline:
                if desc is None:
                    raise TableNotFound(f"table {self.name!r} does not exist", code="ResourceNotFoundException")
                raise TableNotActive(f"table {self.name!r} is {status}, not ACTIVE, after {seconds:.0f}s")
            log.debug("table %s is %s; waiting %.2fs", self.name, status, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
