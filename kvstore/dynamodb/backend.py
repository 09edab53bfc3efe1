"""DynamoDBBackend: the hierarchical store on DynamoDB, in Vault's table format.

Request plan of each operation (round trips are what cost time against real DynamoDB):

- ``put``: one BatchWriteItem with the record and a pointer per folder above it. Past 25 items the
  pointers go first and the record last, so a crash leaves at worst an empty folder.
- ``get``: one consistent GetItem.
- ``list``: one consistent Query on the folder's Path (every page, only the ``Key`` attribute).
- ``delete``: the record's delete and a ``Limit=2`` Query of its own folder go out together (one
  round trip); usually a sibling remains and that is all. When the folder empties, its parent is
  probed (it usually keeps other children), then, only if it empties too, every level above at
  once, and the empty pointers are deleted deepest first: at most four sequential round trips
  whatever the depth, where Vault needs one Query per level.
- ``transaction`` / ``commit``: the folder pointers of every put (one BatchWriteItem), then one
  TransactWriteItems with the records and their conditions only, then empty-folder cleanup for the
  deletes. Pointers stay out of the transaction so that plain puts into the same folder (which
  rewrite its pointers) never cancel it.
- ``commit`` of one conditional write (no checks, no fence), the shape of every CAS: no transaction.
  A put sends its pointers (BatchWriteItem) first, then the record as a conditional PutItem; a delete
  is one conditional DeleteItem, then cleanup. Half the write units of a transaction, and writers
  in one folder no longer cancel each other's transactions on the pointers they share (figures in
  ``kvstore.recipes.versioned``, from ``benchmarks/recipes_cas.py``).

Known limit (as in Vault): a delete that empties a folder races a concurrent put into the same
folder; the put's pointer can be removed after the put wrote it. Keep writers of one folder from
deleting its last key concurrently, or re-put to repair.
"""

from __future__ import annotations

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
    ATTR_FENCE,
    ATTR_KEY,
    ATTR_PATH,
    Item,
    entry_from_item,
    item_key,
    new_version,
    pointer_item,
    pointer_items,
    record_item,
    version_condition,
    version_of,
)
from kvstore.dynamodb.table import Table
from kvstore.dynamodb.writer import BATCH_LIMIT, BatchWriter, WriteRequest, settle
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    BackendClosed,
    ConditionFailed,
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

#: Items read when probing whether a folder is empty: the child going away, the pointer below it,
#: and room for a lock record, so the usual folder needs one small Query per level.
_CHILD_PROBE = 4

log = logging.getLogger(__name__)


class DynamoDBBackend(Backend, HABackend, ConditionalBackend):
    """The DynamoDB backend. Make one with :meth:`create`; close it with ``aclose`` or ``async with``."""

    def __init__(self, config: DynamoDBConfig, table: Table, stack: contextlib.AsyncExitStack) -> None:
        """Use :meth:`create`; this wires already-opened parts together."""
        self._config = config
        self._table = table
        self._stack = stack
        self._writer = BatchWriter(table, deadline=config.write_deadline)
        self._locks = DynamoDBLockStore(table, check_open=self._check_open)
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

    async def _query_names(self, path: str) -> builtins.list[str]:
        """The Key of every item in partition ``path`` (all pages)."""
        params: dict[str, Any] = {
            "KeyConditionExpression": "#p = :p",
            "ExpressionAttributeNames": {"#p": ATTR_PATH, "#k": ATTR_KEY},
            "ExpressionAttributeValues": {":p": {"S": path}},
            "ProjectionExpression": "#k",
            "ConsistentRead": True,
        }
        names: builtins.list[str] = []
        while True:
            out = await self._table.call("query", key=path, **params)
            names.extend(item[ATTR_KEY]["S"] for item in out.get("Items", []))
            last = out.get("LastEvaluatedKey")
            if not last:
                return names
            params["ExclusiveStartKey"] = last

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._check_open()
        request: WriteRequest = {"DeleteRequest": {"Key": item_key(key)}}
        # The record's delete and the probe of its folder go out together (one round trip); settle
        # waits for both, so a delete that raises has no write left in flight.
        _, emptied = await settle(self._writer.write([request]), self._folder_empties(key))
        if emptied:
            await self._prune_above(key)

    async def _folder_empties(self, key: str) -> bool:
        """Whether the folder holding ``key`` has no child once ``key`` itself is gone."""
        folders = prefixes(key)
        if not folders:
            return False  # a top-level key: the root has no pointer to remove
        path, name = split(key)
        return await self._only_child(path, name)

    async def _only_child(self, path: str, child: str) -> bool:
        """Whether partition ``path`` holds no data item besides ``child`` (which is going away).

        Lock records are not data: they live in their folder's partition (Vault's layout) but are
        found by key, not through pointers, so they must not keep an otherwise empty folder listed
        (the in-memory backend agrees). They are recognised by their fencing attribute. The Query
        reads one page of ``_CHILD_PROBE`` items; when that page is all lock records and ``child``
        and more follow, the folder is kept: at worst an empty folder stays listed, never a key
        is stranded.
        """
        out = await self._table.call(
            "query",
            key=path,
            KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": ATTR_PATH, "#k": ATTR_KEY, "#f": ATTR_FENCE},
            ExpressionAttributeValues={":p": {"S": path}},
            ProjectionExpression="#k, #f",
            ConsistentRead=True,
            Limit=_CHILD_PROBE,
        )
        items = out.get("Items", [])
        others = [i for i in items if i[ATTR_KEY]["S"] != child and ATTR_FENCE not in i]
        return not others and not (len(items) >= _CHILD_PROBE and out.get("LastEvaluatedKey"))

    async def _prune_above(self, key: str) -> None:
        """Delete the pointers of folders above ``key`` that are now empty, deepest first.

        The folder holding ``key`` is known to be empty. A folder further up is empty when its only
        child is the pointer of the (empty) folder below it. The nearest parent is probed first:
        it usually still has other children, and then one small Query ends the work. Only when it
        empties too are all the levels above it probed at once (one more round trip, where Vault
        needs one per level).
        """
        folders = prefixes(key)  # shallowest first: ["a", "a/b"]
        upper = folders[:-1]
        below = [base(f) + "/" for f in folders[1:]]  # the pointer each upper folder holds to the next
        doomed = [folders[-1]]
        if upper and await self._only_child(upper[-1], below[-1]):
            doomed.append(upper[-1])
            rest = await settle(*(self._only_child(f, b) for f, b in zip(upper[:-1], below[:-1], strict=True)))
            for folder, is_empty in zip(reversed(upper[:-1]), reversed(rest), strict=True):
                if not is_empty:
                    break
                doomed.append(folder)
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
        validate_commit(writes, checks, fenced=fence is not None)
        self._check_open()
        return await self._commit(writes, checks, fence)

    async def _commit(self, writes: Sequence[Write], checks: Sequence[Check], fence: Fence | None) -> dict[str, str]:
        """Pointers first (one BatchWriteItem), then the records and conditions as one transaction.

        Folder pointers stay out of the transaction: every plain put in a folder rewrites that
        folder's pointer items, and DynamoDB cancels a transaction (TransactionConflict) whose items
        another write touches meanwhile, so pointers inside it would make busy folders refuse
        transactions. Out of it, the transaction's 100 items are all the caller's. A crash between
        the two leaves at worst an empty folder; a refused commit prunes what it added.
        """
        if len(writes) == 1 and not checks and fence is None and writes[0].if_version is not None:
            return await self._commit_one(writes[0])
        items: builtins.list[dict[str, Any]] = []
        owners: builtins.list[tuple[str, Any]] = []  # what each transact item stands for, to explain a failure
        versions: dict[str, str] = {}
        for w in writes:
            cond = version_condition(w.if_version)
            if w.operation is Operation.PUT:
                versions[w.entry.key] = v = new_version()
                op: dict[str, Any] = {"Put": {"TableName": self._table.name, "Item": record_item(w.entry, v)}}
                body = op["Put"]
            else:
                op = {"Delete": {"TableName": self._table.name, "Key": item_key(w.entry.key)}}
                body = op["Delete"]
            if cond:
                body.update(cond)
            items.append(op)
            owners.append((w.entry.key, w.if_version))
        for c in checks:
            cond = version_condition(c.if_version)
            assert cond is not None
            items.append({"ConditionCheck": {"TableName": self._table.name, "Key": item_key(c.key), **cond}})
            owners.append((c.key, c.if_version))
        if fence is not None:
            items.append({"ConditionCheck": {"TableName": self._table.name, **fence_condition(fence)}})
            owners.append(("", fence))
        if not items:
            return versions
        await self._write_pointers(list(versions))
        try:
            await self._table.call("transact_write_items", TransactItems=items)
        except TransactionConflict as exc:
            try:
                await self._explain_cancellation(exc, owners)
            finally:
                await self._prune_unwritten(list(versions))
            raise
        deleted = [w.entry.key for w in writes if w.operation is Operation.DELETE]
        if deleted:
            await settle(*(self._prune_after_delete(k) for k in deleted))
        return versions

    async def _write_pointers(self, keys: builtins.list[str]) -> None:
        """Write the folder pointers of every key in ``keys`` (each folder once)."""
        folders = dict.fromkeys(f for k in keys for f in prefixes(k))
        if folders:
            await self._writer.write([{"PutRequest": {"Item": pointer_item(f)}} for f in folders])

    async def _prune_unwritten(self, keys: builtins.list[str]) -> None:
        """After a refused commit: prune the pointers written for put keys whose folder is empty.

        One probe per key answers both questions: with nothing excluded, a folder that holds no
        data item does not hold the key either, so its pointers were ours alone to take back.
        """

        async def prune_if_empty(key: str) -> None:
            if await self._only_child(split(key)[0], ""):
                await self._prune_above(key)

        await settle(*(prune_if_empty(k) for k in keys if prefixes(k)))

    async def _commit_one(self, w: Write) -> dict[str, str]:
        """One conditional write without a transaction (see the module docstring).

        Pointers go first, so a crash leaves at worst an empty folder. A refused create leaves only
        pointers the existing key needs anyway; a refused update of a key deleted meanwhile prunes
        the pointers it wrote, as the delete would have.
        """
        key, cond = w.entry.key, version_condition(w.if_version)
        assert cond is not None
        version = new_version()
        try:
            if w.operation is Operation.PUT:
                await self._write_pointers([key])
                await self._table.call("put_item", key=key, Item=record_item(w.entry, version), **cond)
            else:
                await self._table.call("delete_item", key=key, Key=item_key(key), **cond)
        except ConditionFailed as exc:
            cause = exc.__cause__
            old = cause.response.get("Item") if cause is not None and hasattr(cause, "response") else None
            conflict = await self._version_conflict(key, w.if_version, old)
            if w.operation is Operation.PUT and w.if_version is not ABSENT and conflict.current is None:
                await self._prune_after_delete(key)
            raise conflict from exc
        if w.operation is Operation.DELETE:
            await self._prune_after_delete(key)
            return {}
        return {key: version}

    async def _version_conflict(self, key: str, expected: object, item: Item | None) -> VersionConflict:
        """The VersionConflict for ``key``, with the ALL_OLD ``item`` (or a consistent read) as current."""
        if item is not None and ATTR_PATH in item:
            current: VersionedEntry | None = VersionedEntry(entry_from_item(item), version_of(item))
        else:
            # DynamoDB Local (and ReturnValuesOnConditionCheckFailure=NONE) may omit the old item.
            current = await self.get_versioned(key)
        return VersionConflict(
            key, expected, current,
            message=f"version conflict on {key!r}: expected {_show(expected)}, found "
            f"{_show(current.version) if current else 'no key'}",
        )

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
            raise await self._version_conflict(key, expected, reason.get("Item")) from exc


def _key_of(item: Item) -> Item:
    return {ATTR_PATH: item[ATTR_PATH], ATTR_KEY: item[ATTR_KEY]}


def _show(v: object) -> str:
    return "absent" if v is ABSENT else repr(v)

