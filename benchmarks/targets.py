"""What is measured: kvstore's DynamoDBBackend, and the raw baseline sending the same requests.

A *target* has kvstore's four storage methods on plain bytes. **kvstore** is the public
``DynamoDBBackend`` used as an application would. **raw** is one aiobotocore client sending the
requests of kvstore's data model (rebuilt here, not imported from kvstore, so no kvstore code runs)
and doing the least a correct implementation must: one BatchWriteItem per put, unprocessed items
resubmitted, every Query page read, folder cleanup on delete; no key validation, no permit pool, no
error mapping. The kvstore/raw ratio is therefore an upper bound on what kvstore's layers cost.

Data model (compatible with tables Vault wrote): key ``a/b/c`` is ``{Path: "a/b", Key: "c", Value}``
(a top-level key has ``Path=" "``); a put also writes one folder pointer per prefix
(``{Path: " ", Key: "a/"}``, ``{Path: "a", Key: "b/"}``) in the same BatchWriteItem; ``list("a/")``
is a consistent Query on ``Path="a"``; a delete removes the record and, deepest first, each pointer
whose folder has no other child (a consistent Query, Limit 2, per level), again in one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import aiobotocore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

import kvstore
from kvstore import Entry
from kvstore.dynamodb import DynamoDBBackend

__all__ = ["RawTarget", "KvstoreTarget", "Target", "open_target", "put_requests", "run_tables", "split"]

ROOT_PATH = " "  # stands in for the empty Path of top-level keys
BATCH_LIMIT = 25  # write requests per BatchWriteItem
LOCK_PREFIX = "_"  # lock records; list never shows them
_REGION, _CREDENTIALS = "us-east-1", {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class Target(Protocol):
    """The storage operations a workload issues (values are plain bytes on both targets)."""

    async def put(self, key: str, value: bytes) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def list(self, prefix: str) -> list[str]: ...
    async def delete(self, key: str) -> None: ...
    async def aclose(self) -> None: ...
    def describe(self) -> dict[str, object]: ...


# -- the data model, as request parameters -------------------------------------------------------


def split(key: str) -> tuple[str, str]:
    """``"a/b/c"`` -> ``("a/b", "c")``; ``"c"`` -> ``(" ", "c")``."""
    path, _, name = key.rpartition("/")
    return (path or ROOT_PATH, name)


def prefixes(key: str) -> list[str]:
    """The folders above ``key``, shallowest first: ``"a/b/c"`` -> ``["a/", "a/b/"]``."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def pointer(prefix: str) -> tuple[str, str]:
    """The (Path, Key) of the item that makes folder ``prefix`` visible in its parent."""
    path, name = split(prefix.rstrip("/"))
    return (path, name + "/")


def _item_key(path: str, name: str) -> dict[str, Any]:
    return {"Path": {"S": path}, "Key": {"S": name}}


def put_requests(key: str, value: bytes) -> list[dict[str, Any]]:
    """The write requests of one put: pointers shallowest first, the record last."""
    requests: list[dict[str, Any]] = [{"PutRequest": {"Item": _item_key(*pointer(p))}} for p in prefixes(key)]
    requests.append({"PutRequest": {"Item": {**_item_key(*split(key)), "Value": {"B": value}}}})
    return requests


def _query(table: str, path: str) -> dict[str, Any]:
    # "Path" and "Key" are DynamoDB reserved words, hence the placeholders.
    return {
        "TableName": table,
        "ConsistentRead": True,
        "KeyConditionExpression": "#p = :p",
        "ProjectionExpression": "#k",
        "ExpressionAttributeNames": {"#p": "Path", "#k": "Key"},
        "ExpressionAttributeValues": {":p": {"S": path}},
    }


# -- the targets ---------------------------------------------------------------------------------


class RawTarget:
    """One aiobotocore DynamoDB client issuing the data model's requests directly."""

    def __init__(self, client: Any, stack: contextlib.AsyncExitStack, table: str, pool: int) -> None:
        self._client, self._stack, self._table, self._pool = client, stack, table, pool

    def describe(self) -> dict[str, object]:
        return {"implementation": "aiobotocore client", "aiobotocore": aiobotocore.__version__, "pool": self._pool}

    async def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        for i in range(0, len(requests), BATCH_LIMIT):
            pending: dict[str, Any] = {self._table: requests[i : i + BATCH_LIMIT]}
            delay = 0.005
            while pending:
                out = await self._client.batch_write_item(RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}
                if pending:  # DynamoDB asks to retry them; back off, capped
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.25)

    async def put(self, key: str, value: bytes) -> None:
        """Record and folder pointers in one BatchWriteItem."""
        await self._batch_write(put_requests(key, value))

    async def get(self, key: str) -> bytes | None:
        """One consistent GetItem."""
        out = await self._client.get_item(TableName=self._table, Key=_item_key(*split(key)), ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else bytes(item["Value"]["B"])

    async def list(self, prefix: str) -> list[str]:
        """Consistent Query on the folder's Path, every page; lock records skipped."""
        params = _query(self._table, prefix.rstrip("/") or ROOT_PATH)
        names: list[str] = []
        while True:
            out = await self._client.query(**params)
            names += [i["Key"]["S"] for i in out.get("Items", ()) if not i["Key"]["S"].startswith(LOCK_PREFIX)]
            if not out.get("LastEvaluatedKey"):
                return names
            params["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    async def delete(self, key: str) -> None:
        """Delete the record and, deepest first, pointers of folders left empty; one batch."""
        requests = [{"DeleteRequest": {"Key": _item_key(*split(key))}}]
        going = split(key)[1]
        for prefix in reversed(prefixes(key)):
            out = await self._client.query(**_query(self._table, prefix.rstrip("/")), Limit=2)
            if any(item["Key"]["S"] != going for item in out.get("Items", ())):
                break  # the folder keeps another child
            going = pointer(prefix)[1]
            requests.append({"DeleteRequest": {"Key": _item_key(*pointer(prefix))}})
        await self._batch_write(requests)

    async def aclose(self) -> None:
        await self._stack.aclose()


class KvstoreTarget:
    """``DynamoDBBackend`` behind the :class:`Target` protocol."""

    def __init__(self, backend: DynamoDBBackend, max_parallel: int, coalesce: bool = True) -> None:
        self._backend, self._max_parallel, self._coalesce = backend, max_parallel, coalesce

    def describe(self) -> dict[str, object]:
        return {"implementation": "kvstore.dynamodb.DynamoDBBackend", "kvstore": kvstore.__version__,
                "max_parallel": self._max_parallel, "coalesce": self._coalesce}

    async def put(self, key: str, value: bytes) -> None:
        await self._backend.put(Entry(key, value))

    async def get(self, key: str) -> bytes | None:
        entry = await self._backend.get(key)
        return None if entry is None else entry.value

    async def list(self, prefix: str) -> list[str]:
        return await self._backend.list(prefix)

    async def delete(self, key: str) -> None:
        await self._backend.delete(key)

    async def aclose(self) -> None:
        await self._backend.aclose()


async def open_target(name: str, endpoint: str, table: str, max_parallel: int = 128) -> Target:
    """Open target ``name`` (``kvstore``, ``kvstore-plain`` or ``raw``) on an existing ``table``.

    ``kvstore`` is the backend with its defaults (group commit and coalesced reads on);
    ``kvstore-plain`` the same backend with ``coalesce=false``: one request per operation, as raw.
    """
    if name in ("kvstore", "kvstore-plain"):
        coalesce = name == "kvstore"
        conf = {"endpoint": endpoint, "table": table, "region": _REGION, "access_key": "local",
                "secret_key": "local", "max_parallel": str(max_parallel), "coalesce": str(coalesce).lower()}
        # environ={}: AWS_* variables must not point one target at another table or endpoint.
        return KvstoreTarget(await DynamoDBBackend.create(conf, environ={}), max_parallel, coalesce)
    if name != "raw":
        raise ValueError(f"unknown target {name!r}")
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        get_session().create_client("dynamodb", endpoint_url=endpoint, region_name=_REGION, **_CREDENTIALS,
                                    config=AioConfig(max_pool_connections=max_parallel))
    )
    return RawTarget(client, stack, table, max_parallel)


@contextlib.asynccontextmanager
async def run_tables(endpoint: str, names: Sequence[str]) -> AsyncIterator[None]:
    """Create ``names`` (HASH Path, RANGE Key, PAY_PER_REQUEST) for the block, delete them after.

    The harness makes the tables itself so both targets get identical ones, table creation stays
    out of every measurement, and cleanup happens even when a target fails.
    """
    async with get_session().create_client("dynamodb", endpoint_url=endpoint, region_name=_REGION,
                                            **_CREDENTIALS) as client:
        created: list[str] = []
        try:
            for name in names:
                await client.create_table(
                    TableName=name,
                    AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("Path", "Key")],
                    KeySchema=[{"AttributeName": "Path", "KeyType": "HASH"},
                               {"AttributeName": "Key", "KeyType": "RANGE"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                created.append(name)
            for name in created:  # DynamoDB Local is ACTIVE at once; real DynamoDB takes seconds
                await client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
            yield
        finally:
            for name in created:
                with contextlib.suppress(Exception):
                    await client.delete_table(TableName=name)
