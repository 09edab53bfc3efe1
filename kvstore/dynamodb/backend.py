"""DynamoDBBackend: the hierarchical store on DynamoDB, in Vault's table format.

Request plan of each operation (round trips are what cost time against real DynamoDB):

- ``put``: one BatchWriteItem with the record and a pointer per folder above it, every pointer
  carrying the write's token. Past 25 items the pointers go first and the record last, so a crash
  leaves at worst an empty folder. A write that was not clean (resubmitted items, an SDK retry, or
  slow) rewrites its pointers once the record has landed.
- ``get``: one consistent GetItem.
- ``list``: one consistent Query on the folder's Path (every page, only the ``Key`` attribute).
- ``delete``: the record's delete, then a probe (Query) of its folder: two round trips, and that is
  all while the folder keeps a child. The probe waits for the delete so that of two deletes
  emptying one folder the later one sees it empty. An emptied folder is pruned by the pointer
  protocol: token read, second probe, conditional delete of the pointer, per emptied level.
- ``transaction`` / ``commit``: the folder pointers of every put (one BatchWriteItem), then one
  TransactWriteItems with the records and their conditions only, then empty-folder cleanup for the
  deletes. Pointers stay out of the transaction so that plain puts into the same folder (which
  rewrite its pointers) never cancel it.
- ``commit`` of one conditional write (no checks, no fence), the shape of every CAS: no transaction.
  A put sends its pointers (BatchWriteItem) first, then the record as a conditional PutItem; a delete
  is one conditional DeleteItem, then cleanup. Half the write units of a transaction, and writers
  in one folder no longer cancel each other's transactions on the pointers they share (figures in
  benchmarks/README.md, from ``python -m benchmarks.experiments.cas``).

Integrity. Concurrent puts, deletes and commits never leave a key that ``get`` reads but ``list``
cannot reach, nor a listed empty folder: the argument is in :mod:`kvstore.dynamodb.pointers`. Every
mutating operation runs to completion even if its caller is cancelled, and ``aclose`` waits for
it (:mod:`kvstore.dynamodb.inflight`). An operation that fails part-way spawns its own cleanup
(give a landed record its pointers, or prune what it added). Ambiguous replies (the write landed,
its reply was lost, the SDK retried and found the item changed) are recognised by the version the
write itself chose, and reported as the success they are.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import os
import platform
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiobotocore
import botocore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from kvstore.backend import (
    ABSENT,
    DEFAULT_PAGE_SIZE,
    Backend,
    Check,
    ConditionalBackend,
    Fence,
    HABackend,
    Lock,
    VersionedEntry,
    Write,
    check_page_args,
)
from kvstore.commits import coalesce, validate_commit
from kvstore.dynamodb.coalesce import GroupReader
from kvstore.dynamodb.config import ConfigValue, DynamoDBConfig
from kvstore.dynamodb.inflight import InFlight
from kvstore.dynamodb.lock import DynamoDBLockStore, fence_condition
from kvstore.dynamodb.pointers import FolderPointers
from kvstore.dynamodb.records import (
    ATTR_KEY,
    ATTR_PATH,
    Item,
    entry_from_item,
    item_key,
    names_query,
    new_version,
    record_item,
    version_condition,
    version_of,
)
from kvstore.dynamodb.table import Table
from kvstore.dynamodb.writer import BATCH_LIMIT, BatchWriter, WriteRequest
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    BackendClosed,
    ConditionFailed,
    ConfigError,
    FenceRejected,
    TransactionCanceled,
    VersionConflict,
)
from kvstore.keys import MAX_KEY_BYTES, folder_of, is_hidden, prefixes, split, validate_key, validate_prefix
from kvstore.lease import LeaseLock
from kvstore.limits import check_entry
from kvstore.local import local_credentials
from kvstore.permits import PermitPool
from kvstore.settle import settle

__all__ = ["DynamoDBBackend"]

#: How many times the cleanup after a failed put tries before it logs a warning and gives up
#: (``kvstore fsck --repair`` finishes the job then).
_REPAIR_ATTEMPTS = 5

log = logging.getLogger(__name__)


class DynamoDBBackend(Backend, HABackend, ConditionalBackend):
    """The DynamoDB backend. Make one with :meth:`create`; close it with ``aclose`` or ``async with``."""

    def __init__(self, config: DynamoDBConfig, table: Table, stack: contextlib.AsyncExitStack) -> None:
        """Use :meth:`create`; this wires already-opened parts together."""
        self._config = config
        self._table = table
        self._stack = stack
        self._writer = BatchWriter(table, deadline=config.write_deadline, coalesce=config.coalesce)
        self._reader = GroupReader(table, deadline=config.write_deadline) if config.coalesce else None
        self._inflight = InFlight()
        self._pointers = FolderPointers(table, self._writer, self._inflight)
        self._locks = DynamoDBLockStore(table, check_open=self._check_open)
        self._closed = False

    @classmethod
    async def create(
        cls,
        conf: Mapping[str, ConfigValue] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        session: Any = None,
        client: Any = None,
    ) -> DynamoDBBackend:
        """Open a client, create the table if it is missing, and wait until it is ACTIVE.

        ``conf`` takes Vault's DynamoDB keys (``table``, ``endpoint``, ``region``, ...); environment
        variables override them (``environ`` replaces ``os.environ``, for tests). A loopback
        endpoint (DynamoDB Local) with no credentials configured gets dummy ones, the same rule
        as the CLI's (:mod:`kvstore.local`).

        Bring your own connection, for a service that already has one (its credentials, profile,
        region): ``session`` is an aiobotocore ``AioSession`` or an ``aioboto3.Session``, from which
        the backend opens (and later closes) its client; ``client`` is an open aiobotocore DynamoDB
        client, used as it is and never closed by the backend. With either, ``conf`` still names
        the table and the backend's own settings; with ``client``, its endpoint, region,
        credentials and timeouts are the client's.

        :raises ConfigError: an invalid configuration value, both ``session`` and ``client``, or no
            credentials.
        :raises EngineUnavailable: the endpoint cannot be reached.
        """
        config = DynamoDBConfig.from_mapping(conf, environ)
        if session is not None and client is not None:
            raise ConfigError("give a session or a client, not both")
        if config.access_key and not config.secret_key:
            raise ConfigError("access_key is set but secret_key is not")
        env = os.environ if environ is None else environ
        local = local_credentials(config.endpoint, {"access_key": config.access_key or ""}, env)
        if local and session is None and client is None:
            config = dataclasses.replace(config, access_key=local["access_key"], secret_key=local["secret_key"])
        stack = contextlib.AsyncExitStack()
        try:
            if client is None:
                client = await stack.enter_async_context(_open_client(config, session))
            log.info(
                "DynamoDB backend: table %s, region %s, endpoint %s, credentials from %s",
                config.table, config.region, config.endpoint or "AWS default",
                await _credential_source(config, session, client),
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

    @property
    def pointers(self) -> FolderPointers:
        """The folder-pointer protocol (``fsck`` repairs through it; counters for tests)."""
        return self._pointers

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosed("the backend is closed")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._inflight.drain()  # writes whose callers were cancelled, pointer re-checks
        finally:
            await self._stack.aclose()

    # -- Backend ----------------------------------------------------------------------------

    async def put(self, entry: Entry) -> None:
        check_entry(entry)
        self._check_open()
        await self._inflight.run(self._put(entry))

    async def _put(self, entry: Entry) -> None:
        """The record and its pointers (one token for all), then a reassertion if it was not clean."""
        key, version = entry.key, new_version()
        record: WriteRequest = {"PutRequest": {"Item": record_item(entry, version)}}
        pointers = self._pointers.requests_for([key], version)
        started = time.monotonic()
        try:
            # Pointers before the record, in one batch or (past 25 items) in two: if only part of
            # it lands before a crash, the first resubmitted items are pointers, so a crash leaves
            # at worst an empty folder, never a hidden key.
            if len(pointers) < BATCH_LIMIT:
                clean = await self._writer.write([*pointers, record])
            else:
                await self._writer.write(pointers, [record])
                clean = False  # the record landed a round trip after its pointers
        except Exception:
            self._spawn_repairs({key: version}, [])
            raise
        await self._pointers.after_write([key], started=started, clean=clean)

    async def _repair_put(self, key: str, version: str) -> None:
        """After a put failed part-way: give a landed record its pointers, or prune what it added.

        The engine that failed the put may still be failing: try a few times, backing off (the
        backoff is cut short when the backend closes).
        """
        delay = self._writer.base_delay
        for attempt in range(_REPAIR_ATTEMPTS):
            await self._inflight.sleep(delay)
            try:
                current = await self._versioned(key)
                if current is not None and current.version == version:
                    await self._pointers.reassert([key])
                elif current is None:
                    await self._pointers.prune(_folder(key))
                return
            except Exception:
                if attempt == _REPAIR_ATTEMPTS - 1:
                    raise
                delay = min(delay * 4, 2.0)

    async def get(self, key: str) -> Entry | None:
        validate_key(key)
        self._check_open()
        item = await self._read(key)
        return None if item is None else entry_from_item(item)

    async def list(self, prefix: str) -> builtins.list[str]:
        validate_prefix(prefix)
        self._check_open()
        names = await self._query_names(folder_of(prefix))
        return sorted(n for n in names if not is_hidden(n))

    async def _query_names(self, path: str) -> builtins.list[str]:
        """The Key of every item in partition ``path`` (all pages)."""
        params = names_query(path)
        names: builtins.list[str] = []
        while True:
            out = await self._table.call("query", key=path, **params)
            names.extend(item[ATTR_KEY]["S"] for item in out.get("Items", []))
            last = out.get("LastEvaluatedKey")
            if not last:
                return names
            params["ExclusiveStartKey"] = last

    async def list_page(
        self, prefix: str, *, after: str = "", limit: int = DEFAULT_PAGE_SIZE
    ) -> builtins.list[str]:
        """At most ``limit`` names of ``list(prefix)`` after ``after``: Queries seeking past ``after``.

        Each Query asks for the names still missing (``Limit``) from where the last one stopped
        (``ExclusiveStartKey``); lock records are dropped, so a page may take more than one Query.
        """
        validate_prefix(prefix)
        after, limit = check_page_args(after, limit)
        self._check_open()
        path = folder_of(prefix)
        names: builtins.list[str] = []
        start: str | None = _seek_key(after)
        while start is not None and len(names) < limit:
            keys, start = await self._query_page(path, start, limit - len(names))
            names.extend(k for k in keys if k > after and not is_hidden(k))
        return names[:limit]

    def iter_list(self, prefix: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[str]:
        """The names of ``list(prefix)``, one Query of at most ``page_size`` items at a time.

        DynamoDB returns a partition's sort keys in UTF-8 byte order, which for valid Unicode (the
        only kind a key can hold) is Python's code-point order: the same order ``list`` sorts in.
        """
        validate_prefix(prefix)
        check_page_args("", page_size)
        self._check_open()
        return self._iter_pages(folder_of(prefix), page_size)

    async def _iter_pages(self, path: str, page_size: int) -> AsyncIterator[str]:
        start: str | None = ""
        while start is not None:
            self._check_open()
            keys, start = await self._query_page(path, start, page_size)
            for k in keys:
                if not is_hidden(k):
                    yield k

    async def _query_page(self, path: str, start: str, limit: int) -> tuple[builtins.list[str], str | None]:
        """One consistent Query: up to ``limit`` Keys of partition ``path`` after ``start`` (``""``:
        from the first), and the Key to continue after (``None``: the partition ended)."""
        params = names_query(path, limit=limit)
        if start:
            params["ExclusiveStartKey"] = {ATTR_PATH: {"S": path}, ATTR_KEY: {"S": start}}
        out = await self._table.call("query", key=path, **params)
        keys = [item[ATTR_KEY]["S"] for item in out.get("Items", [])]
        last = out.get("LastEvaluatedKey")
        return keys, (last[ATTR_KEY]["S"] if last else None)

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._check_open()
        await self._inflight.run(self._delete(key))

    async def _delete(self, key: str) -> None:
        """The record, then (only once it is gone) a probe of its folder, pruning if it emptied.

        The probe waits for the record's delete: of two deletes emptying one folder, the later
        probe then sees both keys gone, so the folder never stays listed empty.
        """
        try:
            await self._writer.write([{"DeleteRequest": {"Key": item_key(key)}}])
        except Exception:
            self._spawn_repairs({}, [key])
            raise
        await self._pointers.prune(_folder(key))

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        writes = coalesce(txns)
        self._check_open()
        await self._inflight.run(self._commit(writes, (), None))

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
        return LeaseLock.from_overrides(
            self._locks, key, value, self._config.lock_timings,
            ttl=ttl, renew_interval=renew_interval, watch_interval=watch_interval, retry_interval=retry_interval,
        )

    # -- ConditionalBackend -----------------------------------------------------------------

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        validate_key(key)
        self._check_open()
        return await self._versioned(key)

    async def _versioned(self, key: str) -> VersionedEntry | None:
        item = await self._read(key)
        return None if item is None else VersionedEntry(entry_from_item(item), version_of(item))

    async def _read(self, key: str) -> Item | None:
        """The record of ``key``, read consistently (through the shared reads when coalescing)."""
        if self._reader is not None:
            return await self._reader.get(*split(key))
        out = await self._table.call("get_item", key=key, Key=item_key(key), ConsistentRead=True)
        item: Item | None = out.get("Item")
        return item

    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        validate_commit(writes, checks, fenced=fence is not None)
        self._check_open()
        return await self._inflight.run(self._commit(writes, checks, fence))

    async def _commit(self, writes: Sequence[Write], checks: Sequence[Check], fence: Fence | None) -> dict[str, str]:
        """Pointers first (one BatchWriteItem), then the records and conditions as one transaction.

        Folder pointers stay out of the transaction: every plain put in a folder rewrites that
        folder's pointer items, and DynamoDB cancels a transaction (TransactionConflict) whose items
        another write touches meanwhile, so pointers inside it would make busy folders refuse
        transactions. Out of it, the transaction's 100 items are all the caller's. A crash between
        the two leaves at worst an empty folder; a refused commit prunes what it added. The
        pointers are reasserted afterwards when the two round trips took long (the pointer
        protocol's rule for writes whose items land apart, :mod:`kvstore.dynamodb.pointers`).

        An ambiguous reply (the transaction landed, its reply was lost, the SDK retried) is
        recognised: the SDK resends the same ClientRequestToken, and a retry whose condition
        fails on an item carrying the version this commit wrote reports success.
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
        put_keys = builtins.list(versions)
        started = time.monotonic()
        clean = await self._write_pointers(put_keys)
        try:
            await self._table.call("transact_write_items", TransactItems=items)
        except TransactionCanceled as exc:
            if not _landed_anyway(exc, owners, versions):
                try:
                    await self._explain_cancellation(exc, owners)
                finally:
                    await self._prune_unwritten(put_keys)
                raise
            clean = False
        except Exception:
            self._spawn_repairs(versions, [w.entry.key for w in writes if w.operation is Operation.DELETE])
            raise
        await self._pointers.after_write(put_keys, started=started, clean=clean)
        deleted = [w.entry.key for w in writes if w.operation is Operation.DELETE]
        if deleted:
            await settle(*(self._pointers.prune(f) for f in dict.fromkeys(_folder(k) for k in deleted)))
        return versions

    def _spawn_repairs(self, versions: dict[str, str], deleted: builtins.list[str]) -> None:
        """After a write failed part-way or without a clear answer: repair the pointers of every key
        it touched (``versions``: put keys and the version each wrote; ``deleted``: deleted keys)."""
        for key, version in versions.items():
            if prefixes(key):
                self._inflight.spawn(self._repair_put(key, version), f"cleanup after the failed write of {key!r}")
        for folder in dict.fromkeys(_folder(k) for k in deleted):
            if folder:
                self._inflight.spawn(self._pointers.prune(folder), f"cleanup of {folder!r} after a failed write")

    async def _write_pointers(self, keys: builtins.list[str]) -> bool:
        """Write the folder pointers of every key in ``keys`` (each folder once); whether clean."""
        requests = self._pointers.requests_for(keys, new_version())
        return await self._writer.write(requests) if requests else True

    async def _prune_unwritten(self, keys: builtins.list[str]) -> None:
        """After a refused commit: prune the pointers written for put keys whose folder is empty."""
        await settle(*(self._pointers.prune(f) for f in dict.fromkeys(_folder(k) for k in keys) if f))

    async def _commit_one(self, w: Write) -> dict[str, str]:
        """One conditional write without a transaction (see the module docstring).

        Pointers go first, so a crash leaves at worst an empty folder. A refused create leaves only
        pointers the existing key needs anyway; a refused update of a key deleted meanwhile prunes
        the pointers it wrote, as the delete would have. A put whose condition fails on an item
        carrying the version it wrote landed (the SDK retried after a lost reply): success.
        """
        key, cond = w.entry.key, version_condition(w.if_version)
        assert cond is not None
        version = new_version()
        started = time.monotonic()
        clean = True
        try:
            if w.operation is Operation.PUT:
                clean = await self._write_pointers([key])
                await self._table.call("put_item", key=key, Item=record_item(w.entry, version), **cond)
            else:
                await self._table.call("delete_item", key=key, Key=item_key(key), **cond)
        except ConditionFailed as exc:
            conflict = await self._version_conflict(key, w.if_version, exc.item)
            if w.operation is Operation.PUT and conflict.current is not None and conflict.current.version == version:
                await self._pointers.after_write([key], started=started, clean=False)
                return {key: version}  # our own write, found by the SDK's retry
            if w.operation is Operation.DELETE and conflict.current is None and bool(exc.retry_attempts):
                # The key is gone and an earlier sending of this very delete may have landed: the
                # state it asked for holds, so report success (a delete leaves no token to check).
                await self._pointers.prune(_folder(key))
                return {}
            if w.operation is Operation.PUT and w.if_version is not ABSENT and conflict.current is None:
                await self._pointers.prune(_folder(key))
            raise conflict from exc
        except Exception:
            if w.operation is Operation.PUT:
                self._spawn_repairs({key: version}, [])
            else:
                self._spawn_repairs({}, [key])
            raise
        if w.operation is Operation.DELETE:
            await self._pointers.prune(_folder(key))
            return {}
        await self._pointers.after_write([key], started=started, clean=clean)
        return {key: version}

    async def _version_conflict(self, key: str, expected: object, item: Item | None) -> VersionConflict:
        """The VersionConflict for ``key``, with the ALL_OLD ``item`` (or a consistent read) as current."""
        if item is not None and ATTR_PATH in item:
            current: VersionedEntry | None = VersionedEntry(entry_from_item(item), version_of(item))
        else:
            # DynamoDB Local (and ReturnValuesOnConditionCheckFailure=NONE) may omit the old item.
            current = await self._versioned(key)
        return VersionConflict(
            key, expected, current,
            message=f"version conflict on {key!r}: expected {_show(expected)}, found "
            f"{_show(current.version) if current else 'no key'}",
        )

    async def _explain_cancellation(self, exc: TransactionCanceled, owners: builtins.list[tuple[str, Any]]) -> None:
        """Turn a cancelled transaction into VersionConflict / FenceRejected when a condition failed."""
        for i, reason in enumerate(exc.cancellation_reasons[: len(owners)]):
            if reason.code != "ConditionalCheckFailed":
                continue
            key, expected = owners[i]
            if isinstance(expected, Fence):
                raise FenceRejected(
                    expected.lock, expected.token, None,
                    message=f"fencing token {expected.token} of lock {expected.lock!r} is no longer current",
                ) from exc
            raise await self._version_conflict(key, expected, reason.item) from exc


def _user_agent() -> str:
    from kvstore import __version__  # here: kvstore/__init__ may still be importing this module

    return (
        f"kvstore/{__version__} aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__} "
        f"Python/{platform.python_version()}"
    )


_USER_AGENT = _user_agent()


def _open_client(config: DynamoDBConfig, session: Any) -> contextlib.AbstractAsyncContextManager[Any]:
    """An async context manager that opens (and closes) a DynamoDB client as ``config`` says.

    ``session``: ``None`` (a fresh aiobotocore session and the standard credential chain), an
    aiobotocore ``AioSession`` (``create_client``) or an ``aioboto3.Session`` (``client``).
    """
    retries: dict[str, Any] = {"mode": "standard"}
    if config.max_retries is not None:
        retries["total_max_attempts"] = config.max_retries + 1
    params: dict[str, Any] = {
        "region_name": config.region,
        "endpoint_url": config.endpoint,
        "aws_access_key_id": config.access_key,
        "aws_secret_access_key": config.secret_key,
        "aws_session_token": config.session_token,
        "config": AioConfig(
            # aiohttp's pool defaults to 10 connections and queues the rest silently: match it
            # to the permit pool so max_parallel requests really are in flight at once.
            max_pool_connections=config.max_parallel,
            # kvstore builds every request itself (pure, tested builders), so botocore's client-side
            # parameter validation only costs CPU (about 8% of a put+get here); a malformed request
            # still fails, as the engine's ValidationException (RequestRejected).
            parameter_validation=False,
            # botocore rebuilds its User-Agent twice per request (about 15% of a GetItem's CPU);
            # a fixed one, built once, costs nothing and names kvstore in the engine's logs.
            user_agent=_USER_AGENT,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries=retries,
        ),
    }
    if session is None:
        session = get_session()
    if hasattr(session, "create_client"):
        opened: contextlib.AbstractAsyncContextManager[Any] = session.create_client("dynamodb", **params)
    elif hasattr(session, "client"):
        opened = session.client("dynamodb", **params)
    else:
        raise ConfigError(
            f"session must be an aiobotocore AioSession or an aioboto3 Session, not {type(session).__name__}"
        )
    return opened


async def _credential_source(config: DynamoDBConfig, session: Any, client: Any) -> str:
    """Where the client's credentials come from, for the log line (never the secret itself)."""
    if config.access_key:
        return "the access_key/secret_key config"
    if client is None or session is not None:
        with contextlib.suppress(Exception):
            creds = await (session if hasattr(session, "get_credentials") else get_session()).get_credentials()
            return str(getattr(creds, "method", None) or "nowhere (no credentials found)")
    return "the given session or client"


def _seek_key(after: str) -> str:
    """The longest prefix of ``after`` that DynamoDB takes as a sort key (valid UTF-8, at most
    1024 bytes): names after it include every name after ``after`` (the rest is filtered out)."""
    out: builtins.list[str] = []
    size = 0
    for ch in after:
        try:
            n = len(ch.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: no stored name holds one
            break
        if size + n > MAX_KEY_BYTES:
            break
        out.append(ch)
        size += n
    return "".join(out)


def _folder(key: str) -> str:
    """The folder holding ``key`` (``"a/b"`` for ``"a/b/c"``), or ``""`` for a top-level key."""
    return key.rpartition("/")[0]


def _landed_anyway(exc: TransactionCanceled, owners: builtins.list[tuple[str, Any]], versions: dict[str, str]) -> bool:
    """Whether a cancelled transaction is the SDK's retry of one that landed (its reply was lost).

    A condition of the retry failed on an item that carries the version this very transaction
    wrote: transactions are atomic, so all of it landed.
    """
    for (key, _), reason in zip(owners, exc.cancellation_reasons, strict=False):
        item = reason.item
        if reason.code == "ConditionalCheckFailed" and item and version_of(item) == versions.get(key):
            return True
    return False


def _show(v: object) -> str:
    return "absent" if v is ABSENT else repr(v)

