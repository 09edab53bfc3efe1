"""Count what goes on the wire, for any aiobotocore client in this process, kvstore's included.

kvstore creates its DynamoDB client inside ``DynamoDBBackend``, out of the harness's reach, so a
botocore event hook cannot be registered on it from outside. Every aiobotocore client, however,
sends each HTTP attempt through ``AioEndpoint._send``; wrapping that one method counts requests
(retries included, each attempt is a request), items and bytes identically for both targets, without
a proxy in the data path. Each target runs in its own worker process, so the counts of a process are
that target's alone.

``_send`` is aiobotocore's, not kvstore's: if a future aiobotocore renames it, :func:`install`
returns False and the results say the wire counts are unavailable, instead of guessing.

"Items" are item-level entries in a request body: each put or delete in a BatchWriteItem, each key
in a BatchGetItem or transaction, and one for GetItem/PutItem/DeleteItem/UpdateItem. A Query is a
request with no item (its answer is not counted).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WireCounts", "install", "installed", "snapshot"]

_SINGLE_ITEM = frozenset({"GetItem", "PutItem", "DeleteItem", "UpdateItem"})


@dataclass(slots=True)
class WireCounts:
    """Totals since the tap was installed; subtract two snapshots for an interval."""

    requests: int = 0
    items: int = 0
    bytes_sent: int = 0
    http_errors: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)

    def copy(self) -> WireCounts:
        """An independent snapshot."""
        return WireCounts(self.requests, self.items, self.bytes_sent, self.http_errors, Counter(self.by_operation))

    def __add__(self, other: WireCounts) -> WireCounts:
        return WireCounts(
            self.requests + other.requests,
            self.items + other.items,
            self.bytes_sent + other.bytes_sent,
            self.http_errors + other.http_errors,
            self.by_operation + other.by_operation,
        )

    def __sub__(self, other: WireCounts) -> WireCounts:
        ops = Counter(self.by_operation)
        ops.subtract(other.by_operation)
        return WireCounts(
            self.requests - other.requests,
            self.items - other.items,
            self.bytes_sent - other.bytes_sent,
            self.http_errors - other.http_errors,
            +ops,
        )


_counts = WireCounts()
_installed = False


def _items(operation: str, body: bytes) -> int:
    if operation in _SINGLE_ITEM:
        return 1
    if operation not in ("BatchWriteItem", "BatchGetItem", "TransactWriteItems", "TransactGetItems"):
        return 0
    doc = json.loads(body)
    if operation == "BatchWriteItem":
        return sum(len(reqs) for reqs in doc.get("RequestItems", {}).values())
    if operation == "BatchGetItem":
        return sum(len(spec.get("Keys", ())) for spec in doc.get("RequestItems", {}).values())
    return len(doc.get("TransactItems", ()))


def _record(request: Any) -> None:
    target = request.headers.get("X-Amz-Target", b"")
    if isinstance(target, bytes):
        target = target.decode()
    operation = target.rpartition(".")[2] or "?"
    body = request.body
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes | bytearray):
        body = b""
    _counts.requests += 1
    _counts.bytes_sent += len(body)
    _counts.by_operation[operation] += 1
    _counts.items += _items(operation, bytes(body))


def install() -> bool:
    """Wrap ``AioEndpoint._send`` once per process; False if aiobotocore has no such method."""
    global _installed
    if _installed:
        return True
    from aiobotocore.endpoint import AioEndpoint

    original = getattr(AioEndpoint, "_send", None)
    if original is None:
        return False

    async def _send(self: Any, request: Any) -> Any:
        _record(request)
        response = await original(self, request)
        if getattr(response, "status_code", 200) >= 400:
            _counts.http_errors += 1
        return response

    setattr(AioEndpoint, "_send", _send)  # noqa: B010 - assigning a method mypy would refuse
    _installed = True
    return True


def installed() -> bool:
    """Whether the tap counts this process's requests."""
    return _installed


def snapshot() -> WireCounts:
    """A copy of the totals so far."""
    return _counts.copy()
