"""DynamoDBLockStore: the lease lock's records (:mod:`kvstore.lease`) as conditional DynamoDB writes.

The record of lock ``a/leader`` is the item ``{Path: "a", Key: "_leader"}`` (the ``_`` keeps it out of
``list``) with:

- ``Identity`` / ``Value``: the holder (both removed on release);
- ``RecordVersion``: a fresh token on every grant, renewal and release — what contenders watch;
- ``Fence``: the fencing counter, ``ADD``-ed by one on every grant and never reset (release keeps it);
- ``LeaseTTL``: the holder's TTL in seconds, so a contender waits the holder's TTL, not its own;
- ``Expires``: wall-clock epoch seconds of the lease end, informational only (clocks are never
  compared across machines).

Every write is an UpdateItem with a condition; no write ever re-creates a record it does not own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kvstore.backend import Fence
from kvstore.dynamodb.records import Item, item_key, new_version
from kvstore.dynamodb.table import Table
from kvstore.errors import BackendClosed, ConditionFailed, LockRecordChanged
from kvstore.keys import lock_key
from kvstore.lease import LockRecord, LockStore

__all__ = ["DynamoDBLockStore", "fence_condition"]

_NAMES = {
    "#id": "Identity",
    "#val": "Value",
    "#ver": "RecordVersion",
    "#fence": "Fence",
    "#ttl": "LeaseTTL",
    "#exp": "Expires",
}


def _names(*placeholders: str) -> dict[str, str]:
    return {p: _NAMES[p] for p in placeholders}


def _record(item: Item) -> LockRecord:
    return LockRecord(
        identity=item["Identity"]["S"] if "Identity" in item else None,
        value=item.get("Value", {}).get("S", ""),
        version=item.get("RecordVersion", {}).get("S", ""),
        fence=int(item.get("Fence", {}).get("N", "0")),
        ttl=float(item.get("LeaseTTL", {}).get("N", "0")),
    )


def _record_on_failure(exc: ConditionFailed) -> LockRecord | None:
    """The record a failed condition found (``ReturnValuesOnConditionCheckFailure=ALL_OLD``).

    ``None`` when the item is missing or the engine did not send it back.
    """
    return _record(exc.item) if exc.item else None


def fence_condition(fence: Fence) -> dict[str, Any]:
    """A ConditionCheck body (Key and condition) that holds while ``fence`` is the current grant."""
    return {
        "Key": item_key(lock_key(fence.lock)),
        "ConditionExpression": "#fence = :token AND attribute_exists(#id)",
        "ExpressionAttributeNames": _names("#fence", "#id"),
        "ExpressionAttributeValues": {":token": {"N": str(fence.token)}},
    }


class DynamoDBLockStore(LockStore):
    """Lock records in the backend's table."""

    def __init__(self, table: Table, *, check_open: Callable[[], None] = lambda: None) -> None:
        """``check_open`` raises BackendClosed once the backend is closed: a lock must not go on
        using (and quietly reopening) a closed client."""
        self._table = table
        self._check_open = check_open

    @property
    def closed(self) -> bool:
        try:
            self._check_open()
        except BackendClosed:
            return True
        return False

    async def read(self, key: str) -> LockRecord | None:
        self._check_open()
        k = lock_key(key)
        out = await self._table.call("get_item", key=k, Key=item_key(k), ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else _record(item)

    async def acquire(
        self, key: str, *, identity: str, value: str, ttl: float, expected_version: str | None
    ) -> LockRecord:
        self._check_open()
        k = lock_key(key)
        values: dict[str, Any] = {
            ":id": {"S": identity},
            ":val": {"S": value},
            ":ver": {"S": new_version()},
            ":one": {"N": "1"},
            ":ttl": {"N": repr(float(ttl))},
            ":exp": {"N": repr(round(time.time() + ttl, 3))},
        }
        if expected_version is None:
            condition = "attribute_not_exists(#ver)"
        else:
            condition = "#ver = :expected"
            values[":expected"] = {"S": expected_version}
        try:
            out = await self._table.call(
                "update_item",
                key=k,
                Key=item_key(k),
                UpdateExpression="SET #id = :id, #val = :val, #ver = :ver, #ttl = :ttl, #exp = :exp ADD #fence :one",
                ConditionExpression=condition,
                ExpressionAttributeNames=_names("#id", "#val", "#ver", "#ttl", "#exp", "#fence"),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                # On failure the reply carries the record found, so a caller whose earlier attempt
                # landed (the SDK retried after a lost reply) sees its own identity there.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailed as exc:
            raise LockRecordChanged(
                k, expected_version, _record_on_failure(exc), message=f"lock {key!r} changed meanwhile",
                item=exc.item, retry_attempts=exc.retry_attempts,
            ) from exc
        return _record(out["Attributes"])

    async def renew(self, key: str, *, identity: str) -> LockRecord | None:
        self._check_open()
        k = lock_key(key)
        try:
            out = await self._table.call(
                "update_item",
                key=k,
                Key=item_key(k),
                UpdateExpression="SET #ver = :ver, #exp = :now + #ttl",
                ConditionExpression="#id = :id",
                ExpressionAttributeNames=_names("#id", "#ver", "#exp", "#ttl"),
                ExpressionAttributeValues={
                    ":id": {"S": identity},
                    ":ver": {"S": new_version()},
                    ":now": {"N": repr(round(time.time(), 3))},
                },
                ReturnValues="ALL_NEW",
                # On failure the reply says who holds it now, so a renewal whose earlier attempt
                # landed (a timeout) is told apart from a real loss.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailed as exc:
            current = _record_on_failure(exc)
            if current is not None and current.identity == identity:
                raise  # still ours, so not a loss: let the caller retry
            return None
        return _record(out["Attributes"])

    async def release(self, key: str, *, identity: str) -> None:
        self._check_open()
        k = lock_key(key)
        try:
            await self._table.call(
                "update_item",
                key=k,
                Key=item_key(k),
                UpdateExpression="REMOVE #id, #val SET #ver = :ver",
                ConditionExpression="#id = :id",
                ExpressionAttributeNames=_names("#id", "#val", "#ver"),
                ExpressionAttributeValues={":id": {"S": identity}, ":ver": {"S": new_version()}},
            )
        except ConditionFailed:
            return  # someone else holds it now: never touch a new holder's record
