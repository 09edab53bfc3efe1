"""The raw baseline: kvstore's DynamoDB requests sent straight from one aiobotocore client.

No kvstore code runs here; the request parameters come from :mod:`benchmarks.model`. It does the
least a correct implementation of the data model must do (one BatchWriteItem per put, unprocessed
items resubmitted, all Query pages read, folder cleanup on delete) and nothing else: no key
validation, no permit pool, no error mapping. That makes the kvstore/raw ratio an upper bound on
what kvstore's own layers cost.

It counts what it sends (:meth:`RawTarget.self_counts`); the harness compares that with what the
wire tap saw, which checks the tap that also counts kvstore's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from benchmarks import model
from benchmarks.targets import TargetSettings

__all__ = ["RawTarget", "open_raw"]

#: Backoff for unprocessed BatchWriteItem items: DynamoDB asks to retry them, and hammering a
#: throttled table makes it worse. Capped so one slow batch cannot stall a run.
_BACKOFF_START = 0.005
_BACKOFF_CAP = 0.25


class RawTarget:
    """One aiobotocore DynamoDB client issuing the data model's requests directly."""

    name = "raw"

    def __init__(self, client: Any, stack: contextlib.AsyncExitStack, settings: TargetSettings) -> None:
        self._client = client
        self._stack = stack
        self._table = settings.table
        self._settings = settings
        self._requests = 0
        self._items = 0

    def describe(self) -> dict[str, object]:
        """Client settings worth recording."""
        import aiobotocore

        return {
            "implementation": "aiobotocore client, requests from benchmarks/model.py",
            "aiobotocore": aiobotocore.__version__,
            "max_pool_connections": self._settings.max_parallel,
        }

    def self_counts(self) -> tuple[int, int]:
        """(requests, items) sent so far, counted here rather than on the wire."""
        return (self._requests, self._items)

    async def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        for batch in model.batches(requests):
            pending: dict[str, list[dict[str, Any]]] = {self._table: batch}
            delay = _BACKOFF_START
            while pending:
                self._requests += 1
                self._items += sum(len(v) for v in pending.values())
                out = await self._client.batch_write_item(RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}
                if pending:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_CAP)

    async def put(self, key: str, value: bytes) -> None:
        """Record and folder pointers in one BatchWriteItem."""
        await self._batch_write(model.put_requests(key, value))

    async def get(self, key: str) -> bytes | None:
        """One consistent GetItem."""
        self._requests += 1
        self._items += 1
        out = await self._client.get_item(**model.get_params(self._table, key))
        item = out.get("Item")
        if item is None:
            return None
        value: bytes = item["Value"]["B"]
        return value

    async def list(self, prefix: str) -> list[str]:
        """Consistent Query on the folder's Path, every page; lock records skipped."""
        names: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            self._requests += 1
            out = await self._client.query(**model.list_query(self._table, prefix, start))
            for item in out.get("Items", ()):
                name = item["Key"]["S"]
                if not name.startswith(model.LOCK_PREFIX):
                    names.append(name)
            start = out.get("LastEvaluatedKey")
            if not start:
                return names

    async def _has_other_children(self, path: str, going: str) -> bool:
        """True if folder ``path`` holds a child other than ``going`` (which is being deleted)."""
        self._requests += 1
        out = await self._client.query(**model.children_query(self._table, path))
        return any(item["Key"]["S"] != going for item in out.get("Items", ()))

    async def delete(self, key: str) -> None:
        """Delete the record and, deepest first, pointers of folders left empty; one batch."""
        path, name = model.split(key)
        requests = [model.delete_request(path, name)]
        going = name
        for prefix in reversed(model.prefixes(key)):
            if await self._has_other_children(model.folder_path(prefix), going):
                break
            ptr_path, ptr_name = model.pointer(prefix)
            requests.append(model.delete_request(ptr_path, ptr_name))
            going = ptr_name
        await self._batch_write(requests)

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._stack.aclose()


async def open_raw(settings: TargetSettings) -> RawTarget:
    """Open an aiobotocore client with a pool as large as kvstore's ``max_parallel``."""
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        get_session().create_client(
            "dynamodb",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=AioConfig(max_pool_connections=settings.max_parallel),
        )
    )
    return RawTarget(client, stack, settings)
