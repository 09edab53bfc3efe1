"""The DynamoDB data model of kvstore (and Vault), rebuilt independently for the raw baseline.

This is deliberately *not* imported from kvstore: the raw target must send the same requests
without running any kvstore code, so that the ratio kvstore/raw measures kvstore's own overhead.
Everything here is pure: it turns keys into the request parameters a DynamoDB client takes.

Layout (compatible with tables Vault wrote):

- key ``a/b/c`` is the item ``{Path: "a/b", Key: "c", Value: B}``; a top-level key has
  ``Path=" "`` (DynamoDB once refused empty strings);
- every put also writes one folder pointer per prefix, ``{Path: " ", Key: "a/"}`` and
  ``{Path: "a", Key: "b/"}``, in the same BatchWriteItem as the record;
- ``list("a/")`` is a consistent Query on ``Path="a"`` projecting only ``Key``, all pages;
- delete removes the record and, deepest first, every pointer whose folder has no other child
  (found with a consistent Query, ``Limit 2``, per level), again in one BatchWriteItem.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BATCH_LIMIT",
    "LOCK_PREFIX",
    "ROOT_PATH",
    "batches",
    "children_query",
    "delete_request",
    "folder_path",
    "get_params",
    "list_query",
    "pointer",
    "prefixes",
    "put_requests",
    "split",
]

#: Stands in for the empty Path of top-level keys (see module docstring).
ROOT_PATH = " "
#: BatchWriteItem takes at most 25 write requests.
BATCH_LIMIT = 25
#: Lock records start with this; list never shows them.
LOCK_PREFIX = "_"

Item = dict[str, dict[str, Any]]


def split(key: str) -> tuple[str, str]:
    """``"a/b/c"`` -> ``("a/b", "c")``; ``"c"`` -> ``(" ", "c")``."""
    path, _, name = key.rpartition("/")
    return (path or ROOT_PATH, name)


def folder_path(prefix: str) -> str:
    """The Path value of the items directly inside folder ``prefix`` (``"a/"`` -> ``"a"``)."""
    return prefix.rstrip("/") or ROOT_PATH


def prefixes(key: str) -> list[str]:
    """The folders above ``key``, shallowest first: ``"a/b/c"`` -> ``["a/", "a/b/"]``."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def pointer(prefix: str) -> tuple[str, str]:
    """The (Path, Key) of the pointer item that makes folder ``prefix`` visible in its parent."""
    path, name = split(prefix.rstrip("/"))
    return (path, name + "/")


def _key(path: str, name: str) -> Item:
    return {"Path": {"S": path}, "Key": {"S": name}}


def put_requests(key: str, value: bytes) -> list[dict[str, Any]]:
    """The write requests of one put: pointers shallowest first, the record last."""
    requests: list[dict[str, Any]] = [{"PutRequest": {"Item": _key(*pointer(p))}} for p in prefixes(key)]
    path, name = split(key)
    requests.append({"PutRequest": {"Item": {**_key(path, name), "Value": {"B": value}}}})
    return requests


def delete_request(path: str, name: str) -> dict[str, Any]:
    """One DeleteRequest for the item (path, name)."""
    return {"DeleteRequest": {"Key": _key(path, name)}}


def batches(requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split write requests into BatchWriteItem-sized groups."""
    return [requests[i : i + BATCH_LIMIT] for i in range(0, len(requests), BATCH_LIMIT)]


def get_params(table: str, key: str) -> dict[str, Any]:
    """GetItem parameters for ``key`` (consistent read: a get must see the latest put)."""
    path, name = split(key)
    return {"TableName": table, "Key": _key(path, name), "ConsistentRead": True}


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


def list_query(table: str, prefix: str, start: Item | None = None) -> dict[str, Any]:
    """One page of ``list(prefix)``; pass the previous page's LastEvaluatedKey as ``start``."""
    params = _query(table, folder_path(prefix))
    if start:
        params["ExclusiveStartKey"] = start
    return params


def children_query(table: str, path: str) -> dict[str, Any]:
    """Does folder ``path`` hold anything besides the one child being deleted? Two items tell."""
    params = _query(table, path)
    params["Limit"] = 2
    return params
