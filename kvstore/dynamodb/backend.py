"""DynamoDBBackend: the hierarchical store on DynamoDB, in Vault's table format.

Request plan of each operation (round trips are what cost time against real DynamoDB):

- ``put``: one BatchWriteItem with the record and a pointer per folder above it. Past 25 items the
  pointers go first and the record last, so a crash leaves at worst an empty folder.
- ``get``: one consistent GetItem.
- ``list``: one consistent Query on the folder's Path (every page, only the ``Key`` attribute).
- ``delete``: the record's delete and a ``Limit=2`` Query of its own folder go out together (one
  round trip); usually a sibling remains and that is all. When the folder empties, the levels above
  are queried concurrently (one more round trip) and the empty pointers deleted deepest first (one
  more): at most three sequential round trips where Vault needs one Query per level.
- ``transaction`` / ``commit``: one TransactWriteItems (records, their conditions, and the folder
  pointers of every put), then empty-folder cleanup for the deletes.

Known limit (as in Vault): a delete that empties a folder races a concurrent put into the same
folder; the put's pointer can be removed after the put wrote it. Keep writers of one folder from
deleting its last key concurrently, or re-put to repair.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from kvstore.backend import ABSENT, Backend, Check, ConditionalBackend, Fence, HABackend, Lock, VersionedEntry, Write
from kvstore.commits import coalesce, validate_commit
from kvstore.dynamodb.config import DynamoDBConfig
from kvstore.dynamodb.lock import DynamoDBLockStore, fence_condition
from kvstore.dynamodb.records import (
    ATTR_KEY,
    ATTR_PATH,
    ATTR_VERSION,
    Item,
    entry_from_item,
    item_key,
    new_version,
    pointer_item,
    pointer_items,
    record_item,
    version_of,
)
from kvstore.dynamodb.table import Table
from kvstore.dynamodb.writer import BATCH_LIMIT, BatchWriter, WriteRequest
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    BackendClosed,
    ConfigError,
    FenceRejected,
    TransactionConflict,
    VersionConflict,
)
from kvstore.keys import base, folder_of, is_hidden, prefixes, split, validate_key, validate_prefix
from kvstore.lease import LeaseLock
from kvstore.limits import check_entry
from kvstore.permits import PermitPool

__all__ = ["DynamoDBBackend"]

log = logging.getLogger(__name__)


class DynamoDBBackend(Backend, HABackend, ConditionalBackend):
    """The DynamoDB backend. Make one with :meth:`create`; close it with ``aclose`` or ``async with``."""

    def __init__(self, config: DynamoDBConfig, table: Table, stack: contextlib.AsyncExitStack) -> None:
        """Use :meth:`create`; this wires already-opened parts together."""
        self._config = config
        self._table = table
        self._stack = stack
        self._writer = BatchWriter(table, deadline=config.write_deadline)
        self._locks = DynamoDBLockStore(table)
        self._closed = False

    @classmethod
    async def create(
        cls, conf: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> DynamoDBBackend:
        """Open a client, create the table if it is missing, and wait until it is ACTIVE.

        ``conf`` takes Vault's DynamoDB keys (``table``, ``endpoint``, ``region``, ...); environment
        variables override them (``environ`` replaces ``os.environ``, for tests).

        :raises ConfigError: an invalid configuration value or no credentials.
        :raises EngineUnavailable: the endpoint cannot be reached.
        """
        config = DynamoDBConfig.from_mapping(conf, environ)
        stack = contextlib.AsyncExitStack()
        try:
            session = get_session()
            if config.access_key and not config.secret_key:
                raise ConfigError("access_key is set but secret_key is not")
            retries: dict[str, Any] = {"mode": "standard"}
            if config.max_retries is not None:
                retries["total_max_attempts"] = config.max_retries + 1
            client_config = AioConfig(
                # aiohttp's pool defaults to 10 connections and queues the rest silently: match it
                # to the permit pool so max_parallel requests really are in flight at once.
                max_pool_connections=config.max_parallel,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                retries=retries,
            )
            client = await stack.enter_async_context(
                session.create_client(
                    "dynamodb",
                    region_name=config.region,
                    endpoint_url=config.endpoint,
                    aws_access_key_id=config.access_key,
                    aws_secret_access_key=config.secret_key,
                    aws_session_token=config.session_token,
                    config=client_config,
                )
            )
            if config.access_key:
                method = "the access_key/secret_key config"
            else:
                # Ask the standard chain which source it chose (env, profile, container, IMDS...).
                creds = await session.get_credentials()
                method = getattr(creds, "method", None) or "nowhere (no credentials found)"
            log.info(
                "DynamoDB backend: table %s, region %s, endpoint %s, credentials from %s",
                config.table, config.region, config.endpoint or "AWS default", method,
            )
            table = Table(client, config.table, PermitPool(config.max_parallel))
            await table.ensure(config)
        except BaseException:
            await stack.aclose()
            raise
        return cls(config, table, stack)

    @property
    def config(self) -> DynamoDBConfig:
        """The validated configuration."""
        return self._config

    @property
    def table(self) -> Table:
        """The table wrapper: the client, the permit pool and per-operation request counts."""
        return self._table

    @property
    def writer(self) -> BatchWriter:
        """The batch writer (its ``retries`` counter shows unprocessed-item resubmissions)."""
        return self._writer

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosed("the backend is closed")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stack.aclose()

    # -- Backend ----------------------------------------------------------------------------

    async def put(self, entry: Entry) -> None:
        check_entry(entry)
        self._check_open()
        record: WriteRequest = {"PutRequest": {"Item": record_item(entry, new_version())}}
        pointers: builtins.list[WriteRequest] = [{"PutRequest": {"Item": p}} for p in pointer_items(entry.key)]
        if len(pointers) < BATCH_LIMIT:
            await self._writer.write([*pointers, record])
        else:
            await self._writer.write(pointers, [record])

    async def get(self, key: str) -> Entry | None:
        validate_key(key)
        self._check_open()
        out = await self._table.call("get_item", key=key, Key=item_key(key), ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else entry_from_item(item)

    async def list(self, prefix: str) -> builtins.list[str]:
        validate_prefix(prefix)
        self._check_open()
        names = await self._query_names(folder_of(prefix))
        return sorted(n for n in names if not is_hidden(n))

    async def _query_names(self, path: str, *, limit: int | None = None) -> builtins.list[str]:
        """The Key of every item in partition ``path`` (all pages unless ``limit``)."""
        params: dict[str, Any] = {
            "KeyConditionExpression": "#p = :p",
            "ExpressionAttributeNames": {"#p": ATTR_PATH, "#k": ATTR_KEY},
            "ExpressionAttributeValues": {":p": {"S": path}},
            "ProjectionExpression": "#k",
            "ConsistentRead": True,
        }
        if limit is not None:
            params["Limit"] = limit
        names: builtins.list[str] = []
        while True:
            out = await self._table.call("query", key=path, **params)
            names.extend(item[ATTR_KEY]["S"] for item in out.get("Items", []))
            last = out.get("LastEvaluatedKey")
            if not last or limit is not None:
                return names
            params["ExclusiveStartKey"] = last

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._check_open()
        request: WriteRequest = {"DeleteRequest": {"Key": item_key(key)}}
        _, emptied = await asyncio.gather(self._writer.write([request]), self._folder_empties(key))
        if emptied:
            await self._prune_above(key)

    async def _folder_empties(self, key: str) -> bool:
        """Whether the folder holding ``key`` has no child once ``key`` itself is gone."""
        folders = prefixes(key)
        if not folders:
            return False  # a top-level key: the root has no pointer to remove
        path, name = split(key)
        names = await self._query_names(path, limit=2)
        return all(n == name for n in names)

    async def _prune_above(self, key: str) -> None:
        """Delete the pointers of folders above ``key`` that are now empty, deepest first.

        The folder holding ``key`` is known to be empty. A folder further up is empty when its only
        child is the pointer of the (empty) folder below it. All levels are queried at once.
        """
        folders = prefixes(key)  # shallowest first: ["a", "a/b"]
        upper = folders[:-1]
        children = await asyncio.gather(*(self._query_names(f, limit=2) for f in upper))
        doomed = [folders[-1]]
        for folder, names in zip(reversed(upper), reversed(children), strict=True):
            below = base(doomed[-1]) + "/"
            if all(n == below for n in names):
                doomed.append(folder)
            else:
                break
        requests: builtins.list[WriteRequest] = [{"DeleteRequest": {"Key": _key_of(pointer_item(f))}} for f in doomed]
        # Deepest first: a crash between batches leaves an empty folder, never a hidden key.
        await self._writer.write(*(requests[i : i + BATCH_LIMIT] for i in range(0, len(requests), BATCH_LIMIT)))

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        writes = coalesce(txns)
        self._check_open()
        await self._commit(writes, (), None)

    # -- HABackend --------------------------------------------------------------------------

    @property
    def ha_enabled(self) -> bool:
        return self._config.ha_enabled

    def lock_with(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> Lock:
        timings = self._config.lock_timings.override(ttl, renew_interval, watch_interval, retry_interval)
        return LeaseLock(self._locks, key, value, timings)

    # -- ConditionalBackend -----------------------------------------------------------------

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        validate_key(key)
        self._check_open()
        out = await self._table.call("get_item", key=key, Key=item_key(key), ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else VersionedEntry(entry_from_item(item), version_of(item))

    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        validate_commit(writes, checks)
        self._check_open()
        return await self._commit(writes, checks, fence)

    async def _commit(self, writes: Sequence[Write], checks: Sequence[Check], fence: Fence | None) -> dict[str, str]:
        items: builtins.list[dict[str, Any]] = []
        owners: builtins.list[tuple[str, Any]] = []  # what each transact item stands for, to explain a failure
        versions: dict[str, str] = {}
        pointer_folders: dict[str, None] = {}
        for w in writes:
            cond = _version_condition(w.if_version)
            if w.operation is Operation.PUT:
                versions[w.entry.key] = v = new_version()
                op: dict[str, Any] = {"Put": {"TableName": self._table.name, "Item": record_item(w.entry, v)}}
                body = op["Put"]
                pointer_folders.update(dict.fromkeys(prefixes(w.entry.key)))
            else:
                op = {"Delete": {"TableName": self._table.name, "Key": item_key(w.entry.key)}}
                body = op["Delete"]
            if cond:
                body.update(cond)
            items.append(op)
            owners.append((w.entry.key, w.if_version))
        for c in checks:
            cond = _version_condition(c.if_version)
            assert cond is not None
            items.append({"ConditionCheck": {"TableName": self._table.name, "Key": item_key(c.key), **cond}})
            owners.append((c.key, c.if_version))
        if fence is not None:
            items.append({"ConditionCheck": {"TableName": self._table.name, **fence_condition(fence)}})
            owners.append(("", fence))
        for folder in pointer_folders:
            items.append({"Put": {"TableName": self._table.name, "Item": pointer_item(folder)}})
        if not items:
            return versions
        try:
            await self._table.call("transact_write_items", TransactItems=items)
        except TransactionConflict as exc:
            await self._explain_cancellation(exc, owners)
            raise
        deleted = [w.entry.key for w in writes if w.operation is Operation.DELETE]
        if deleted:
            await asyncio.gather(*(self._prune_after_delete(k) for k in deleted))
        return versions

    async def _prune_after_delete(self, key: str) -> None:
        if await self._folder_empties(key):
            await self._prune_above(key)

    async def _explain_cancellation(self, exc: TransactionConflict, owners: builtins.list[tuple[str, Any]]) -> None:
        """Turn a cancelled transaction into VersionConflict / FenceRejected when a condition failed."""
        cause = exc.__cause__
        reasons: builtins.list[dict[str, Any]] = []
        if cause is not None and hasattr(cause, "response"):
            reasons = list(cause.response.get("CancellationReasons", []))
        for i, reason in enumerate(reasons[: len(owners)]):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            key, expected = owners[i]
            if isinstance(expected, Fence):
                raise FenceRejected(
                    expected.lock, expected.token, None,
                    message=f"fencing token {expected.token} of lock {expected.lock!r} is no longer current",
                ) from exc
            item: Item | None = reason.get("Item")
            if item is not None and ATTR_PATH in item:
                current: VersionedEntry | None = VersionedEntry(entry_from_item(item), version_of(item))
            else:
                # DynamoDB Local (and ReturnValuesOnConditionCheckFailure=NONE) omit the old item.
                current = await self.get_versioned(key)
            raise VersionConflict(
                key, expected, current,
                message=f"version conflict on {key!r}: expected {_show(expected)}, found "
                f"{_show(current.version) if current else 'no key'}",
            ) from exc


def _version_condition(expected: object) -> dict[str, Any] | None:
    """The ConditionExpression parts that require a record to hold ``expected`` (None: no condition)."""
    if expected is None:
        return None
    if expected is ABSENT:
        return {
            "ConditionExpression": "attribute_not_exists(#p)",
            "ExpressionAttributeNames": {"#p": ATTR_PATH},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": ATTR_VERSION},
        "ExpressionAttributeValues": {":v": {"S": str(expected)}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _key_of(item: Item) -> Item:
    return {ATTR_PATH: item[ATTR_PATH], ATTR_KEY: item[ATTR_KEY]}


def _show(v: object) -> str:
    return "absent" if v is ABSENT else repr(v)

