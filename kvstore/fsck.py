"""fsck: check (and repair) the folder structure of a store, the way ``list`` sees it.

The store keeps an invariant that only ``list`` relies on, so nothing else notices when it breaks:

1. every key is reachable by walking ``list`` from the root (each folder above it is listed), and
2. no listed folder is empty (each listed folder holds a key or a sub-folder).

On DynamoDB a folder is listed because of a *pointer* item, written by puts and pruned by deletes
(see :mod:`kvstore.dynamodb.pointers`). A process killed between those writes, a bug in an older
version, or another writer of the table (Vault) can break the invariant: a key that ``get`` reads
but ``list`` never shows, or a folder that lists nothing. :func:`fsck` finds both, and with
``repair=True`` rewrites the missing pointers and prunes the empty folders, with the same
protocol puts and deletes use, so it is safe on a live table.

Usage::

    from kvstore.fsck import fsck

    report = await fsck(store, "apps/")
    if not report.clean:
        report = await fsck(store, "apps/", repair=True)

Backends differ in what can go wrong, so :func:`fsck` dispatches on the backend:

- :class:`~kvstore.dynamodb.DynamoDBBackend`: a Scan of the subtree, every kind of finding, repair
  (:mod:`kvstore.dynamodb.fsck`);
- :class:`~kvstore.inmem.InmemBackend`: derives folders from its keys, so it cannot be
  inconsistent; the walk only counts what ``list`` reaches;
- any other backend: a walk of ``list`` (:func:`walk_list`), which can see empty folders only
  (an unreachable key is, by definition, invisible to ``list``); nothing is repaired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from kvstore.backend import Backend
from kvstore.dynamodb.backend import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.keys import validate_prefix

__all__ = ["FsckReport", "ListWalk", "Progress", "fsck", "walk_list"]

Progress = Callable[[int], None]
"""A progress callback: called with how many items were read so far (a number that only grows)."""

#: ``list`` calls a walk keeps in flight: enough to hide round-trip latency on a wide tree without
#: letting one fsck take every permit of a backend that serves other work too.
_WALK_CONCURRENCY = 8


@dataclass(frozen=True)
class FsckReport:
    """What :func:`fsck` found under a prefix (after a repair: what remains).

    Keys and folders are full names (``"a/b/c"``, ``"a/b/"``), each tuple sorted.
    """

    invisible: tuple[str, ...] = ()
    """Keys whose record exists but that ``list`` cannot reach: a folder pointer above is missing."""
    empty_folders: tuple[str, ...] = ()
    """Folders (trailing ``/``) that have a pointer, so are listed, but hold no key or sub-folder."""
    stray_lock_names: tuple[str, ...] = ()
    """Data items named like lock records (last segment starting with ``_``) without lock
    attributes: written through the data API by older versions. ``list`` never shows them, current
    versions refuse such keys, and a lock of that name would take the item over, so they are
    reported; fsck never changes them (they hold someone's data)."""
    scanned: int = 0
    """Items examined (DynamoDB: items of the subtree read by the last scan; others: names listed)."""
    repaired: bool = False
    """Whether this call wrote repairs (``repair=True`` and there was something it could fix)."""
    before: FsckReport | None = None
    """When :attr:`repaired`: the findings before the repair (the other fields say what remains)."""

    @property
    def clean(self) -> bool:
        """Whether nothing is wrong (after a repair: whether nothing is left)."""
        return not (self.invisible or self.empty_folders or self.stray_lock_names)

    @property
    def problems(self) -> int:
        """How many findings the report holds."""
        return len(self.invisible) + len(self.empty_folders) + len(self.stray_lock_names)


@dataclass(frozen=True)
class ListWalk:
    """What :func:`walk_list` saw: every name ``list`` reached, and the listed folders that list nothing."""

    keys: tuple[str, ...]
    """Every key reached (full names), sorted."""
    folders: tuple[str, ...]
    """Every listed folder reached (full names, trailing ``/``), sorted; the start folder is one
    only if its parent lists it."""
    empty_folders: tuple[str, ...]
    """Listed folders whose own ``list`` is empty (full names, trailing ``/``), sorted."""
    listed: int
    """How many names the walk's ``list`` calls returned in all."""


async def walk_list(backend: Backend, prefix: str = "", *, progress: Progress | None = None) -> ListWalk:
    """Walk ``list`` from folder ``prefix`` down, one level at a time, as a client browsing would.

    A folder counts as listed when its parent lists it; the start folder is checked against its
    parent's listing too (a folder nobody lists is not an empty *listed* folder). ``progress`` is
    called after each level with the number of names listed so far.

    :raises InvalidKey: ``prefix`` is malformed.
    """
    validate_prefix(prefix)
    start = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    gate = asyncio.Semaphore(_WALK_CONCURRENCY)

    async def listing(folder: str) -> list[str]:
        async with gate:
            return await backend.list(folder)

    keys: list[str] = []
    folders: list[str] = []
    empty: list[str] = []
    listed = 0
    if start:
        parent, _, name = start[:-1].rpartition("/")
        if name + "/" in await backend.list(parent + "/" if parent else ""):
            folders.append(start)
    level = [start]
    while level:
        results = await asyncio.gather(*(listing(f) for f in level))
        below: list[str] = []
        for folder, names in zip(level, results, strict=True):
            listed += len(names)
            if not names and folder in folders:
                empty.append(folder)
            for n in names:
                if n.endswith("/"):
                    below.append(folder + n)
                else:
                    keys.append(folder + n)
        folders.extend(below)
        if progress is not None:
            progress(listed)
        level = below
    return ListWalk(tuple(sorted(keys)), tuple(sorted(folders)), tuple(sorted(empty)), listed)


async def fsck(
    backend: Backend,
    prefix: str = "",
    *,
    repair: bool = False,
    progress: Progress | None = None,
) -> FsckReport:
    """Check the folder structure under ``prefix`` (``""``: everything); repair it if asked.

    With ``repair=True`` (DynamoDB only; other backends have nothing fsck can fix) the missing
    pointers of invisible keys are rewritten and empty folders pruned, then the subtree is checked
    again and the report says what remains (:attr:`FsckReport.before` holds what was found).
    Stray lock names are never changed. On a live table a finding can be a write in flight; on
    DynamoDB fsck re-reads each finding before reporting it, and its repairs are safe against
    concurrent writes.

    ``progress`` is called as the work advances with the number of items read so far (DynamoDB:
    table items the Scan read, which for a prefix includes items outside it; others: names listed).

    :raises InvalidKey: ``prefix`` is malformed.
    :raises BackendError: a request failed (nothing is half-repaired beyond what the pointer
        protocol tolerates: at worst an empty folder, which the next run prunes).
    """
    validate_prefix(prefix)
    if isinstance(backend, DynamoDBBackend):
        # Imported here: kvstore.dynamodb.fsck builds FsckReport, defined in this module.
        from kvstore.dynamodb.fsck import fsck as dynamodb_fsck

        return await dynamodb_fsck(backend, prefix, repair=repair, progress=progress)
    walk = await walk_list(backend, prefix, progress=progress)
    if isinstance(backend, InmemBackend):
        # Its folders are derived from its keys: every key is listed and a folder exists only
        # while something is below it. The walk is a count (and exercises list), not a search.
        return FsckReport(scanned=walk.listed)
    return FsckReport(empty_folders=walk.empty_folders, scanned=walk.listed)
