"""Pure conversions between kvstore entries and DynamoDB items (Vault's table format).

Key ``a/b/c`` is the item ``{Path: "a/b", Key: "c", Value: B}``; a top-level key has Path ``" "``.
A folder pointer for ``a/b/`` is ``{Path: "a", Key: "b/"}``: it exists so that ``list("a/")`` can be
one Query on ``Path="a"``. Records also carry ``Version``, an opaque token that changes on every
write, which versioned (compare-and-swap) writes rely on. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any, overload

from kvstore.backend import ABSENT, Absent
from kvstore.entry import Entry
from kvstore.keys import ROOT_PATH, prefixes, split

__all__ = [
    "ATTR_FENCE",
    "ATTR_KEY",
    "ATTR_PATH",
    "ATTR_VALUE",
    "ATTR_VERSION",
    "Item",
    "entry_from_item",
    "is_pointer",
    "item_key",
    "names_query",
    "new_version",
    "pointer_key",
    "pointer_item",
    "pointer_items",
    "record_item",
    "version_condition",
    "version_of",
]

Item = dict[str, Any]
"""A DynamoDB item in the low-level wire format (``{"Path": {"S": "a"}}``)."""

ATTR_PATH = "Path"
ATTR_KEY = "Key"
ATTR_VALUE = "Value"
ATTR_VERSION = "Version"
#: Only lock records carry a fencing counter; it tells them apart from data (see dynamodb/lock.py).
ATTR_FENCE = "Fence"


def new_version() -> str:
    """A fresh opaque version token (random, so writers need no coordination)."""
    return uuid.uuid4().hex


def item_key(key: str) -> Item:
    """The primary key of the record for ``key``."""
    path, name = split(key)
    return {ATTR_PATH: {"S": path}, ATTR_KEY: {"S": name}}


def record_item(entry: Entry, version: str) -> Item:
    """The full item storing ``entry`` with version ``version``."""
    item = item_key(entry.key)
    item[ATTR_VALUE] = {"B": bytes(entry.value)}
    item[ATTR_VERSION] = {"S": version}
    return item


def pointer_key(folder: str) -> Item:
    """The primary key of the pointer that makes ``folder`` (``"a/b"``, no trailing ``/``) visible."""
    path, name = split(folder)
    return {ATTR_PATH: {"S": path}, ATTR_KEY: {"S": name + "/"}}


def pointer_item(folder: str, token: str) -> Item:
    """The pointer to ``folder``, carrying ``token`` (in ``Version``), fresh for every write.

    The token is what makes pruning safe against concurrent puts: a deleter removes a pointer
    only if it still carries the token read before the deleter found the folder empty (see
    :mod:`kvstore.dynamodb.pointers`).
    """
    item = pointer_key(folder)
    item[ATTR_VERSION] = {"S": token}
    return item


def pointer_items(key: str, token: str) -> list[Item]:
    """Every folder pointer a put of ``key`` writes, shallowest first."""
    return [pointer_item(p, token) for p in prefixes(key)]


def is_pointer(name: str) -> bool:
    """Whether an item's ``Key`` names a folder pointer (``"b/"``) rather than a record."""
    return name.endswith("/")


def _decode_value(attr: dict[str, Any]) -> bytes:
    if "B" in attr:
        return bytes(attr["B"])
    if "S" in attr:
        # Older writers stored the value as a base64 string; read it back as the bytes it encodes.
        try:
            return base64.b64decode(attr["S"], validate=True)
        except (binascii.Error, ValueError):
            return str(attr["S"]).encode()
    return b""


def entry_from_item(item: Item) -> Entry:
    """The entry an item stores; ``Entry.key`` is the full key (``Path/Key``)."""
    path = item[ATTR_PATH]["S"]
    name = item[ATTR_KEY]["S"]
    key = name if path == ROOT_PATH else f"{path}/{name}"
    value = _decode_value(item.get(ATTR_VALUE, {}))
    return Entry(key, value)


def version_of(item: Item) -> str:
    """The version token of a record item (``""`` for items written by Vault, which have none)."""
    return str(item.get(ATTR_VERSION, {}).get("S", ""))


@overload
def version_condition(expected: None) -> None: ...
@overload
def version_condition(expected: str | Absent) -> dict[str, Any]: ...
@overload
def version_condition(expected: str | Absent | None) -> dict[str, Any] | None: ...
def version_condition(expected: str | Absent | None) -> dict[str, Any] | None:
    """The condition parts of a request requiring a record to hold version ``expected``.

    ``None`` means no condition; :data:`~kvstore.backend.ABSENT` means the record must not exist.
    A failed condition returns the old item (ALL_OLD), so the conflict can report it without a read.
    """
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


def names_query(path: str, *, limit: int | None = None) -> dict[str, Any]:
    """The parameters of a consistent Query for the ``Key`` of every item in partition ``path``.

    What ``list``, its pages, the folder probes and ``fsck`` all send (add ``ExclusiveStartKey``
    to page on). ``limit`` caps the items one page reads.
    """
    params: dict[str, Any] = {
        "KeyConditionExpression": "#p = :p",
        "ExpressionAttributeNames": {"#p": ATTR_PATH, "#k": ATTR_KEY},
        "ExpressionAttributeValues": {":p": {"S": path}},
        "ProjectionExpression": "#k",
        "ConsistentRead": True,
    }
    if limit is not None:
        params["Limit"] = limit
    return params
