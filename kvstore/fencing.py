"""Fenced writes: writes the store refuses once the writer's lock grant has been superseded.

A leader that was paused (a GC pause, SIGSTOP, a VM migration) wakes up believing it still leads;
its "lost" event is set a moment later, too late for a write already on its way. A fenced write
carries the fencing token of the grant it was made under, and the backend checks that token in the
same atomic commit as the write (:meth:`kvstore.backend.ConditionalBackend.commit` with ``fence=``).
On DynamoDB that is one TransactWriteItems with a ConditionCheck on the lock record
(``Fence = :token AND attribute_exists(Identity)``). A write under a grant that was replaced or
released raises :class:`~kvstore.errors.FenceRejected` and changes nothing::

    async with Election(store, "jobs/leader", "node-1").campaign() as term:
        await fenced_put(store, Entry("jobs/state", b"..."), fence=term.fence)
        await fenced_delete(store, "jobs/old", fence=term.fence)

The fence only helps if every writer of the data fences its writes with the same lock.
"""

from __future__ import annotations

from kvstore.backend import Absent, ConditionalBackend, Fence, Write
from kvstore.entry import Entry, Operation
from kvstore.errors import InvalidValue

__all__ = ["fenced_delete", "fenced_put"]


def _check_fence(fence: object) -> Fence:
    if not isinstance(fence, Fence):
        raise InvalidValue(f"fence must be a Fence, not {type(fence).__name__}")
    if isinstance(fence.token, bool) or not isinstance(fence.token, int):
        raise InvalidValue(f"fencing token must be an int, not {type(fence.token).__name__}")
    return fence


async def fenced_put(
    backend: ConditionalBackend,
    entry: Entry,
    *,
    fence: Fence,
    if_version: str | Absent | None = None,
) -> str:
    """Store ``entry`` only while ``fence`` is its lock's current grant; return the entry's new version.

    ``if_version`` adds an optimistic-concurrency condition on the key itself (a version token, or
    :data:`~kvstore.backend.ABSENT` for create-only), checked in the same commit.

    :raises FenceRejected: the lock was granted again since (or released); nothing was written.
    :raises VersionConflict: ``if_version`` did not match; nothing was written.
    """
    versions = await backend.commit([Write(Operation.PUT, entry, if_version)], fence=_check_fence(fence))
    return versions[entry.key]


async def fenced_delete(
    backend: ConditionalBackend,
    key: str,
    *,
    fence: Fence,
    if_version: str | Absent | None = None,
) -> None:
    """Delete ``key`` only while ``fence`` is its lock's current grant (a missing key is fine).

    :raises FenceRejected: the lock was granted again since (or released); nothing was deleted.
    :raises VersionConflict: ``if_version`` did not match; nothing was deleted.
    """
    await backend.commit([Write(Operation.DELETE, Entry(key), if_version)], fence=_check_fence(fence))
