"""The tables of a run: one per target, created before and deleted after, by the harness itself.

Creating them here (rather than letting kvstore auto-create its own) gives both targets identical
tables, keeps table creation out of every measurement, and makes cleanup the harness's job even
when a target crashes. On-demand capacity (PAY_PER_REQUEST) so throughput settings cannot differ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiobotocore.session import get_session

__all__ = ["run_tables", "table_name"]

#: DynamoDB Local creates tables synchronously; real DynamoDB takes seconds. Poll this long.
_ACTIVE_TIMEOUT = 120.0


def table_name(run_id: str, target: str) -> str:
    """``kvbench-<run id>-<target>``: recognisable, and unique per run."""
    return f"kvbench-{run_id}-{target}"


async def _wait_active(client: Any, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _ACTIVE_TIMEOUT
    while True:
        desc = await client.describe_table(TableName=name)
        if desc["Table"]["TableStatus"] == "ACTIVE":
            return
        if loop.time() > deadline:
            raise TimeoutError(f"table {name} not ACTIVE after {_ACTIVE_TIMEOUT:.0f} s")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def run_tables(endpoint: str, names: Sequence[str], *, region: str = "us-east-1") -> AsyncIterator[None]:
    """Create ``names`` (HASH Path, RANGE Key, on demand) for the block, delete them afterwards."""
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ) as client:
        created: list[str] = []
        try:
            for name in names:
                await client.create_table(
                    TableName=name,
                    AttributeDefinitions=[
                        {"AttributeName": "Path", "AttributeType": "S"},
                        {"AttributeName": "Key", "AttributeType": "S"},
                    ],
                    KeySchema=[
                        {"AttributeName": "Path", "KeyType": "HASH"},
                        {"AttributeName": "Key", "KeyType": "RANGE"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
                created.append(name)
            for name in created:
                await _wait_active(client, name)
            yield
        finally:
            for name in created:
                with contextlib.suppress(Exception):
                    await client.delete_table(TableName=name)
