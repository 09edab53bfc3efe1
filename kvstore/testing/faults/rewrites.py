"""DynamoDB JSON rewrites: pure functions from request and response documents to new documents.

Nothing here touches a socket, a lock or a clock, and no argument is changed in place: each
function returns a new document (sharing unchanged parts with its input). The proxy uses them to
shorten a batch (:func:`split_batch`) and to report the rest as unprocessed
(:func:`merge_unprocessed`, :func:`everything_unprocessed`), to forge the errors DynamoDB sends
(:func:`throttle_error`, :func:`conflict_error`) and to remove the old item from a condition
failure (:func:`asks_all_old`, :func:`strip_items`).

BatchWriteItem and BatchGetItem differ only in where a table's requests sit: a BatchWriteItem
table maps to its list of write requests, a BatchGetItem table to ``{"Keys": [...], ...}`` whose
other fields (projection, consistency) travel with every part of the split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "DYNAMODB_ERROR_PREFIX",
    "THROTTLE_MESSAGES",
    "THROTTLE_TYPES",
    "BatchSplit",
    "asks_all_old",
    "conflict_error",
    "dumps",
    "error_type",
    "everything_unprocessed",
    "kept_count",
    "loads_object",
    "merge_unprocessed",
    "split_batch",
    "strip_items",
    "throttle_error",
]

DYNAMODB_ERROR_PREFIX: Final = "com.amazonaws.dynamodb.v20120810#"
"""The namespace of DynamoDB's own error types (``__type``)."""

THROTTLE_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ProvisionedThroughputExceededException": DYNAMODB_ERROR_PREFIX + "ProvisionedThroughputExceededException",
        # Real DynamoDB sends the generic AWS throttle under the coral namespace.
        "ThrottlingException": "com.amazon.coral.availability#ThrottlingException",
        "RequestLimitExceeded": DYNAMODB_ERROR_PREFIX + "RequestLimitExceeded",
    }
)
"""The ``__type`` of each throttling error code."""

THROTTLE_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ProvisionedThroughputExceededException": (
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API."
        ),
        "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
        "RequestLimitExceeded": (
            "Throughput exceeds the current throughput limit for your account. "
            "Please contact AWS Support at https://aws.amazon.com/support request a limit "
            "increase"
        ),
    }
)
"""DynamoDB's message for each throttling error code."""

_BATCH_WRITE: Final = "BatchWriteItem"
_BATCH_GET: Final = "BatchGetItem"
_UNPROCESSED: Final[Mapping[str, str]] = MappingProxyType(
    {_BATCH_WRITE: "UnprocessedItems", _BATCH_GET: "UnprocessedKeys"}
)


# --------------------------------------------------------------------------------------------
# JSON bodies
# --------------------------------------------------------------------------------------------


def loads_object(body: bytes) -> dict[str, Any] | None:
    """``body`` parsed as a JSON object, or ``None`` if it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def dumps(doc: Mapping[str, Any]) -> bytes:
    """``doc`` as compact JSON bytes."""
    return json.dumps(doc, separators=(",", ":")).encode()


def error_type(doc: Mapping[str, Any]) -> str:
    """The short error name of a DynamoDB error document (``__type`` after its ``#``), or ``""``."""
    type_ = doc.get("__type")
    return type_.rsplit("#", 1)[-1] if isinstance(type_, str) else ""


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchSplit:
    """A batch request cut in two.

    ``forwarded`` is the request to send on (``None``: nothing goes through), ``withheld`` the
    ``RequestItems`` held back, in the shape of ``UnprocessedItems`` / ``UnprocessedKeys``, and
    ``tables`` every table the original request named, in its order.
    """

    forwarded: dict[str, Any] | None
    withheld: dict[str, Any]
    tables: list[str]


def kept_count(total: int, *, keep: int | None, fraction: float | None) -> int:
    """How many of ``total`` requests a partial batch forwards: ``keep`` or ``floor(total * fraction)``.

    A positive fraction keeps at least one request, so a client's retry loop always makes
    progress; neither given keeps none.
    """
    if keep is not None:
        return min(keep, total)
    fraction = fraction if fraction is not None else 0.0
    if fraction <= 0.0 or total == 0:
        return 0
    return min(total, max(1, math.floor(total * fraction)))


def _requests(operation: str, spec: Any) -> list[Any] | None:
    """The requests of one table's entry of a batch (``None`` if malformed)."""
    if operation == _BATCH_WRITE:
        return spec if isinstance(spec, list) else None
    keys = spec.get("Keys") if isinstance(spec, dict) else None
    return keys if isinstance(keys, list) else None


def _with_requests(operation: str, spec: Any, requests: list[Any]) -> Any:
    """One table's entry of a batch with ``requests`` in place of its own (other fields kept)."""
    if operation == _BATCH_WRITE:
        return requests
    return {**spec, "Keys": requests}


def split_batch(
    operation: str, doc: Mapping[str, Any], *, keep: int | None, fraction: float | None
) -> BatchSplit | None:
    """Cut a BatchWriteItem / BatchGetItem request after the first :func:`kept_count` requests.

    Requests are counted across tables in the order of ``RequestItems``. ``None`` when there
    is nothing to cut: another operation, a malformed request, or every request is kept.
    """
    items = doc.get("RequestItems")
    if operation not in _UNPROCESSED or not isinstance(items, dict):
        return None
    flat = [
        (table, request)
        for table, spec in items.items()
        if (requests := _requests(operation, spec)) is not None
        for request in requests
    ]
    kept = kept_count(len(flat), keep=keep, fraction=fraction)
    if kept >= len(flat):
        return None
    sides: tuple[dict[str, list[Any]], dict[str, list[Any]]] = ({}, {})
    for index, (table, request) in enumerate(flat):
        sides[index >= kept].setdefault(table, []).append(request)
    forwarded_items, withheld = ({t: _with_requests(operation, items[t], r) for t, r in side.items()} for side in sides)
    forwarded = {**doc, "RequestItems": forwarded_items} if forwarded_items else None
    return BatchSplit(forwarded, withheld, list(items))


def merge_unprocessed(operation: str, doc: Mapping[str, Any], withheld: Mapping[str, Any]) -> dict[str, Any]:
    """A batch answer with ``withheld`` added to its unprocessed requests, after the engine's own."""
    field = _UNPROCESSED[operation]
    current = doc.get(field)
    merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    for table, spec in withheld.items():
        existing = _requests(operation, merged.get(table))
        added = _requests(operation, spec) or []
        if existing is None:
            merged[table] = _with_requests(operation, spec, list(added))
        else:
            merged[table] = _with_requests(operation, merged[table], existing + added)
    return {**doc, field: merged}


def everything_unprocessed(operation: str, split: BatchSplit) -> dict[str, Any]:
    """The answer to a batch of which nothing was forwarded: every request unprocessed."""
    if operation == _BATCH_WRITE:
        return {"UnprocessedItems": split.withheld}
    return {"Responses": {t: [] for t in split.tables}, "UnprocessedKeys": split.withheld}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def throttle_error(code: str, message: str | None = None) -> dict[str, Any]:
    """The error document of throttling error ``code`` (one of :data:`THROTTLE_TYPES`)."""
    return {"__type": THROTTLE_TYPES[code], "message": THROTTLE_MESSAGES[code] if message is None else message}


def conflict_error(request: Mapping[str, Any], indexes: frozenset[int] | None) -> dict[str, Any]:
    """The ``TransactionCanceledException`` for ``request``: ``TransactionConflict`` at ``indexes``.

    One ``CancellationReasons`` entry per ``TransactItems`` entry (at least one);
    ``indexes=None`` marks all of them, the others get ``"None"``.
    """
    items = request.get("TransactItems")
    count = len(items) if isinstance(items, list) and items else 1
    reasons: list[dict[str, str]] = []
    for index in range(count):
        if indexes is None or index in indexes:
            reasons.append({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
        else:
            reasons.append({"Code": "None"})
    codes = ", ".join(r["Code"] for r in reasons)
    return {
        "__type": DYNAMODB_ERROR_PREFIX + "TransactionCanceledException",
        "CancellationReasons": reasons,
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
    }


def asks_all_old(operation: str, request: Mapping[str, Any]) -> bool:
    """Whether ``request`` asks for the old item on a condition failure (``ALL_OLD``)."""
    if operation != "TransactWriteItems":
        return request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
    items = request.get("TransactItems")
    if not isinstance(items, list):
        return False
    return any(
        isinstance(action, dict) and action.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
        for item in items
        if isinstance(item, dict)
        for action in item.values()
    )


def strip_items(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A condition-failure error without its old item(s); ``None`` when there was none to remove."""
    error = error_type(doc)
    if error == "ConditionalCheckFailedException" and "Item" in doc:
        return {k: v for k, v in doc.items() if k != "Item"}
    reasons = doc.get("CancellationReasons")
    if error != "TransactionCanceledException" or not isinstance(reasons, list):
        return None
    if not any(isinstance(r, dict) and "Item" in r for r in reasons):
        return None
    stripped: Sequence[Any] = [
        {k: v for k, v in r.items() if k != "Item"} if isinstance(r, dict) else r for r in reasons
    ]
    return {**doc, "CancellationReasons": stripped}
