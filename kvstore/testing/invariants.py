"""Invariant checks for tests: is the folder hierarchy what ``list`` promises?

The hierarchy invariant every backend keeps once its writes have finished:

1. every key is reachable by walking ``list`` from the root, and
2. no listed folder is empty.

Race tests (concurrent puts and deletes, cancellations, injected faults) call
:func:`check_hierarchy` once the dust has settled::

    from kvstore.testing.invariants import check_hierarchy

    async def test_puts_race_deletes(dynamo):
        ...  # the race
        assert await check_hierarchy(dynamo) == []

The result is a list of human-readable violations (empty when all is well), so a failing
assertion shows every problem at once instead of the first.
"""

from __future__ import annotations

from kvstore.backend import Backend
from kvstore.dynamodb.backend import DynamoDBBackend
from kvstore.fsck import fsck, walk_list

__all__ = ["check_hierarchy"]


async def check_hierarchy(backend: Backend, prefix: str = "") -> list[str]:
    """The violations of the hierarchy invariant under folder ``prefix`` (``[]`` when there is none).

    Any backend: walk ``list`` from ``prefix`` and report every listed folder that lists nothing.
    A key no folder lists is invisible to that walk by definition, so on DynamoDB (where it can
    happen: a record whose folder pointer is missing) a report-only :func:`kvstore.fsck.fsck`
    scans the table for records the walk cannot reach and for empty folders it cannot reach
    either (below a missing pointer). Stray lock names, which fsck also reports, are legacy data,
    not a hierarchy violation, so they are left out. Nothing is written.

    Call it when no write is in flight: a put or delete half-way through is a violation for a
    moment, by design of the write path.

    :raises InvalidKey: ``prefix`` is malformed.
    """
    walk = await walk_list(backend, prefix)
    violations = [f"folder {f!r} is listed but lists nothing (an empty folder)" for f in walk.empty_folders]
    if isinstance(backend, DynamoDBBackend):
        report = await fsck(backend, prefix)
        violations += [
            f"key {k!r} exists but list cannot reach it (a folder pointer above it is missing)"
            for k in report.invisible
        ]
        seen = set(walk.empty_folders)
        violations += [
            f"folder {f!r} has a pointer but nothing in it (an empty folder the list walk did not reach)"
            for f in report.empty_folders
            if f not in seen
        ]
    return violations
