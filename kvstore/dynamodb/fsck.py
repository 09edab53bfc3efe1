"""fsck on DynamoDB: find records ``list`` cannot reach and listed folders that are empty; repair.

The layout (Vault's): key ``a/b/c`` is the item ``(Path "a/b", Key "c")``; folder ``a/b`` is listed
because of its pointer ``(Path "a", Key "b/")``, and ``a`` because of ``(Path " ", Key "a/")``. Lock
records live among the data (``(Path "a", Key "_leader")``) but are found by key, never through
pointers. Three findings follow from that (see :class:`kvstore.fsck.FsckReport`):

- an *invisible* key: a record (not a lock record) with a folder above it whose pointer is missing;
- an *empty folder*: a pointer whose folder holds no child, i.e. no record and no pointer (lock
  records do not count: they do not keep a folder listed, and a prune removes such a pointer);
- a *stray lock name*: an item named like a lock record (``_`` last segment) that carries none of
  the lock attributes: data an older version wrote under a name that is now reserved.

How: one consistent Scan of the subtree (all of the table for the root; a prefix is a server-side
filter ``Path = folder OR begins_with(Path, folder + "/")``, so the Scan still reads the whole
table), projecting only the key and the attributes that mark a lock record, plus a consistent
GetItem per folder above the prefix (their pointers live outside the subtree). The analysis is
pure (:class:`Census`). A Scan is no snapshot: a write in flight during it can look like a
finding, so each finding is re-read (one Query per affected folder, one GetItem per missing
pointer) and dropped if the table no longer shows it.

Repair uses the backend's pointer protocol (:attr:`DynamoDBBackend.pointers
<kvstore.dynamodb.DynamoDBBackend.pointers>`), so it is safe against concurrent puts and deletes:
``reassert`` rewrites the pointers above every invisible key, then ``prune`` removes each empty
folder's pointer, deepest first, and those of the ancestors it leaves empty. The subtree is then
checked again and the report says what remains.

Lenient by design, for tables Vault wrote: items without ``Version``, pointers without tokens,
values as base64 strings, and lock records with a binary or string ``Identity`` and no ``Fence``.
An item with a ``_`` name and any of ``Identity``, ``Expires``, ``Fence``, ``RecordVersion`` or
``LeaseTTL`` is a lock record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kvstore.dynamodb.backend import DynamoDBBackend
from kvstore.dynamodb.records import ATTR_FENCE, ATTR_KEY, ATTR_PATH, Item, is_pointer, names_query, pointer_key
from kvstore.dynamodb.table import Table
from kvstore.fsck import FsckReport, Progress
from kvstore.keys import ROOT_PATH, is_hidden, prefixes, validate_prefix

__all__ = ["LOCK_ATTRIBUTES", "Census", "fsck"]

#: Any of these on a ``_``-named item makes it a lock record: kvstore's lock store writes all of
#: them but ``Identity``/``Value`` go on release; Vault's lock records carry ``Identity`` (binary)
#: and ``Expires`` only.
LOCK_ATTRIBUTES = ("Identity", "Expires", ATTR_FENCE, "RecordVersion", "LeaseTTL")

#: Invisible keys per ``reassert`` call. One call is one write under one deadline
#: (``write_deadline``); a table broken at scale must not have to land every pointer within it.
_REASSERT_KEYS = 500

_NAMES = {"#p": ATTR_PATH, "#k": ATTR_KEY, **{f"#l{i}": a for i, a in enumerate(LOCK_ATTRIBUTES)}}


def _join(folder: str, name: str) -> str:
    """The full name of child ``name`` of ``folder`` (``""`` is the root)."""
    return f"{folder}/{name}" if folder else name


def _depth(folder: str) -> int:
    return folder.count("/")


@dataclass
class Census:
    """What a scan of the subtree under ``folder`` found, item by item. Pure: no I/O.

    Folders are named without trailing ``/`` (``"a/b"``; ``""`` is the root).
    """

    folder: str = ""
    """The subtree's root folder."""
    items: int = 0
    """Items added."""
    pointers: set[str] = field(default_factory=set)
    """Folders whose pointer was seen."""
    occupied: set[str] = field(default_factory=set)
    """Folders holding a child: a record or a pointer (lock records and strays are no children)."""
    records: dict[str, list[str]] = field(default_factory=dict)
    """Record names (not lock records, not strays) per folder."""
    stray: list[str] = field(default_factory=list)
    """Full names of ``_``-named items without lock attributes."""

    def add(self, item: Item) -> None:
        """Account for one item (only ``Path``, ``Key`` and the lock attributes are read)."""
        self.items += 1
        path = item[ATTR_PATH]["S"]
        name = item[ATTR_KEY]["S"]
        folder = "" if path == ROOT_PATH else path
        if is_pointer(name):
            self.pointers.add(_join(folder, name[:-1]))
            self.occupied.add(folder)
        elif is_hidden(name):
            if not any(a in item for a in LOCK_ATTRIBUTES):
                self.stray.append(_join(folder, name))
        else:
            self.records.setdefault(folder, []).append(name)
            self.occupied.add(folder)

    def invisible(self, outer: Iterable[str] = ()) -> dict[str, tuple[list[str], list[str]]]:
        """Per folder holding unreachable records: (the folders above whose pointers are missing,
        the record names). ``outer`` names the pointers found outside the subtree (the start folder's
        and its ancestors')."""
        present = self.pointers.union(outer)
        found: dict[str, tuple[list[str], list[str]]] = {}
        for folder, names in self.records.items():
            chain = [*prefixes(folder), folder] if folder else []
            missing = [f for f in chain if f not in present]
            if missing:
                found[folder] = (missing, sorted(names))
        return found

    def empty_folders(self, outer: Iterable[str] = ()) -> list[str]:
        """Folders with a pointer and no child. The start folder counts when its pointer (which
        lives outside the subtree, so comes in ``outer``) exists."""
        candidates = set(self.pointers)
        if self.folder and self.folder in set(outer):
            candidates.add(self.folder)
        return sorted(f for f in candidates if f not in self.occupied)


async def _scan(
    table: Table, folder: str, census: Census, progress: Progress | None, read: list[int], page_size: int | None
) -> None:
    """Feed every item of the subtree under ``folder`` to ``census`` (consistent, all pages)."""
    params: dict[str, Any] = {
        "ConsistentRead": True,
        "ProjectionExpression": ", ".join(_NAMES),
        "ExpressionAttributeNames": dict(_NAMES),
    }
    if folder:
        params["FilterExpression"] = "#p = :f OR begins_with(#p, :under)"
        params["ExpressionAttributeValues"] = {":f": {"S": folder}, ":under": {"S": folder + "/"}}
    if page_size is not None:
        params["Limit"] = page_size
    while True:
        out = await table.call("scan", key=folder or None, **params)
        items = out.get("Items", [])
        for item in items:
            census.add(item)
        read[0] += int(out.get("ScannedCount", len(items)))
        if progress is not None:
            progress(read[0])
        last = out.get("LastEvaluatedKey")
        if not last:
            return
        params["ExclusiveStartKey"] = last


async def _pointer_exists(table: Table, folder: str) -> bool:
    out = await table.call(
        "get_item", key=folder, Key=pointer_key(folder), ConsistentRead=True,
        ProjectionExpression="#p", ExpressionAttributeNames={"#p": ATTR_PATH},
    )
    return "Item" in out


async def _record_names(table: Table, folder: str) -> set[str]:
    """The names of the records (not pointers, not ``_`` names) in ``folder`` now."""
    path = folder or ROOT_PATH
    params = names_query(path)
    names: set[str] = set()
    while True:
        out = await table.call("query", key=path, **params)
        names.update(n for i in out.get("Items", []) if not is_pointer(n := i[ATTR_KEY]["S"]) and not is_hidden(n))
        last = out.get("LastEvaluatedKey")
        if not last:
            return names
        params["ExclusiveStartKey"] = last


async def _still_invisible(table: Table, folder: str, missing: list[str], names: list[str]) -> list[str]:
    """The keys of ``names`` in ``folder`` that still exist while a pointer of ``missing`` is still
    missing. The records are read first: a put writes pointers no later than its record, a delete
    removes its record before any pointer, so this order rarely mistakes a write in flight."""
    current = await _record_names(table, folder)
    keep = [n for n in names if n in current]
    if not keep:
        return []
    exists = await asyncio.gather(*(_pointer_exists(table, f) for f in missing))
    return [] if all(exists) else [_join(folder, n) for n in keep]


async def _still_empty(backend: DynamoDBBackend, folder: str) -> bool:
    """Whether ``folder`` still holds no child and still has its pointer."""
    if await backend.pointers.holds_child(folder):
        return False
    return await _pointer_exists(backend.table, folder)


async def _examine(
    backend: DynamoDBBackend, folder: str, progress: Progress | None, read: list[int], page_size: int | None
) -> FsckReport:
    """One check of the subtree: scan, analyse, re-read each finding."""
    table = backend.table
    census = Census(folder)
    chain = [*prefixes(folder), folder] if folder else []
    _, exists = await asyncio.gather(
        _scan(table, folder, census, progress, read, page_size),
        asyncio.gather(*(_pointer_exists(table, f) for f in chain)),
    )
    outer = [f for f, ok in zip(chain, exists, strict=True) if ok]
    candidates = census.invisible(outer)
    invisible = await asyncio.gather(
        *(_still_invisible(table, f, missing, names) for f, (missing, names) in candidates.items())
    )
    empties = census.empty_folders(outer)
    still = await asyncio.gather(*(_still_empty(backend, f) for f in empties))
    return FsckReport(
        invisible=tuple(sorted(k for keys in invisible for k in keys)),
        empty_folders=tuple(f + "/" for f, ok in zip(empties, still, strict=True) if ok),
        stray_lock_names=tuple(sorted(census.stray)),
        scanned=census.items,
    )


async def fsck(
    backend: DynamoDBBackend,
    prefix: str = "",
    *,
    repair: bool = False,
    progress: Progress | None = None,
    page_size: int | None = None,
) -> FsckReport:
    """Check the subtree under ``prefix`` (``""``: the whole table); with ``repair``, fix it.

    See :func:`kvstore.fsck.fsck` for the contract. ``progress`` gets the number of table items the
    Scans read so far (every scan of this call, so a repair's second check keeps counting).
    ``page_size`` caps the items each Scan page reads (default: DynamoDB's 1 MB pages); smaller
    pages spread the read load of a provisioned table over more requests.

    :raises InvalidKey: ``prefix`` is malformed.
    :raises BackendError: a request failed.
    """
    validate_prefix(prefix)
    folder = prefix[:-1] if prefix.endswith("/") else prefix
    read = [0]
    found = await _examine(backend, folder, progress, read, page_size)
    if not repair or not (found.invisible or found.empty_folders):
        return found
    pointers = backend.pointers
    keys = found.invisible
    for i in range(0, len(keys), _REASSERT_KEYS):
        await pointers.reassert(keys[i : i + _REASSERT_KEYS])
    # Every folder above an invisible key just got a child (the next pointer down, or the record):
    # pruning it would only probe. The rest go deepest first, as a delete prunes.
    gained = {f for k in found.invisible for f in prefixes(k)}
    for empty in sorted((f[:-1] for f in found.empty_folders), key=_depth, reverse=True):
        if empty not in gained:
            await pointers.prune(empty)
    remains = await _examine(backend, folder, progress, read, page_size)
    return replace(remains, repaired=True, before=found)
