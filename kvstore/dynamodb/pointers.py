"""FolderPointers: the protocol that keeps every key reachable by ``list`` and no listed folder empty.

Layout reminder: key ``a/q/k`` is the record ``(Path "a/q", Key "k")``; folder ``a/q`` is made
visible by the pointer ``(Path "a", Key "q/")``, and ``a`` by ``(Path " ", Key "a/")``. The
invariant this module keeps, under any interleaving of puts, deletes and commits:

1. every record's ancestors have pointers (the key is reachable by walking ``list``), and
2. every pointer's folder holds a child (no listed folder is empty),

except while a write is in flight, after a crash (``kvstore fsck --repair``), or while the engine
keeps failing the follow-up work (logged at WARNING).

The race (Vault has it too): a delete that empties folder ``a/q`` probes it, finds it empty and
deletes pointer ``q/``; a put of ``a/q/k2`` that lands between the probe and the pointer delete
loses its pointer, and ``k2`` reads but is never listed. BatchWriteItem has no conditions, so the
put cannot guard its pointer; the deleter must. The protocol:

**Put.** The record and its pointers go out in one BatchWriteItem (one round trip); every pointer
carries a fresh *token* (``Version``). If the write was not clean -- items came back unprocessed
and were resubmitted, the SDK retried, or the request took longer than ``reassert_after`` -- the
put rewrites its pointers (fresh tokens) *after* its record is known to have landed.

**Prune** (after a delete, or by ``fsck``), one level at a time, deepest first:

1. read the pointer's token ``t`` (consistent GetItem);
2. probe the folder (consistent Query): any item that is not a lock record is a child;
3. if it is empty, delete the pointer *on condition* that it still carries ``t``;
4. continue with the parent folder; afterwards, re-check every pruned folder at once and again
   ``recheck_delay`` later, and restore the pointers of any that gained a child.

Why no key is lost. Suppose a put's record ``r`` ends up without its pointer ``p``, removed by a
deleter's conditional delete (step 3). That delete succeeded, so no write of ``p`` landed between
the deleter's token read (step 1) and step 3: the put's pointer write ``w(p)`` landed before step
1. Its record did not land before the probe (step 2), or the folder was not empty. So ``w(p)`` and
``w(r)`` landed at least a probe apart. If they landed less than ``recheck_delay`` apart, ``r``
landed before the delayed re-check, which sees it and restores ``p``. If they landed further apart,
the put's own request(s) took longer than that, so the put (whose threshold ``reassert_after`` is
half of ``recheck_delay``, a margin for clock-rate differences) rewrites ``p`` after ``r`` landed,
hence after step 3. Either way ``p`` is back. Commits write pointers before their transaction and
follow the same rule (their two round trips count as one write).

Why no listed folder stays empty. Deletes probe only after their record delete has landed, so of
two deletes emptying one folder the later probe sees both gone. Conditional deletes cannot remove
a pointer a put rewrote (its token changed). A crash between steps leaves at worst an empty folder
(pruning goes deepest first), which ``fsck --repair`` removes.

What remains. The argument assumes a request is not delayed in the network past its own
read timeout and then applied (an SDK retry's stale twin); a SIGKILL between a put's record and
its reassertion, or a follow-up that keeps failing, can leave a key unlisted until
``fsck --repair``. A key may be briefly unlisted (at most ``recheck_delay``) when a transaction's
record lands after a concurrent delete pruned the pointers it wrote first.

Cost: a put is one BatchWriteItem as before (plus pointer tokens, a few bytes). A delete whose
folder keeps a child is a record delete then one probe (two round trips); one that empties its
folder adds a token read, a second probe and a conditional delete per pruned level, and a
background re-check.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Iterable
from typing import Any

from kvstore.dynamodb.inflight import InFlight
from kvstore.dynamodb.records import (
    ATTR_KEY,
    ATTR_VERSION,
    names_query,
    new_version,
    pointer_item,
    pointer_key,
    version_of,
)
from kvstore.dynamodb.table import Table
from kvstore.dynamodb.writer import BatchWriter, WriteRequest
from kvstore.errors import ConditionFailed
from kvstore.keys import ROOT_PATH, is_hidden, prefixes

__all__ = ["FolderPointers", "parent_folder"]

#: Items one probe page reads: enough that the usual folder (a few lock records at most) needs one.
_PROBE_PAGE = 4

#: Default delay of the second re-check after a prune (see the module docstring). Puts whose write
#: took longer than half of it reassert their pointers; a put on a healthy engine takes milliseconds.
DEFAULT_RECHECK_DELAY = 1.0


def parent_folder(folder: str) -> str:
    """The folder holding ``folder``'s pointer: ``"a/b"`` -> ``"a"``, ``"a"`` -> ``""`` (the root)."""
    return folder.rpartition("/")[0]


class FolderPointers:
    """Writes, prunes and restores folder pointers for one table (see the module docstring)."""

    def __init__(
        self,
        table: Table,
        writer: BatchWriter,
        inflight: InFlight,
        *,
        recheck_delay: float = DEFAULT_RECHECK_DELAY,
    ) -> None:
        self._table = table
        self._writer = writer
        self._inflight = inflight
        self._recheck_delay = recheck_delay
        self.reassertions = 0
        """How many times pointers were rewritten after a write that was not clean."""
        self.restorations = 0
        """How many times a re-check found a pruned folder with a child and restored its pointers."""

    @property
    def reassert_after(self) -> float:
        """A write that took longer than this (seconds) reasserts its pointers."""
        return self._recheck_delay / 2

    # -- writing ----------------------------------------------------------------------------

    @staticmethod
    def requests_for(keys: Iterable[str], token: str) -> builtins.list[WriteRequest]:
        """PutRequests for the pointers of every folder above ``keys`` (each folder once)."""
        folders = dict.fromkeys(f for k in keys for f in prefixes(k))
        return [{"PutRequest": {"Item": pointer_item(f, token)}} for f in folders]

    async def reassert(self, keys: Iterable[str]) -> None:
        """(Re)write, with a fresh token, the pointers of every folder above each of ``keys``."""
        requests = self.requests_for(keys, new_version())
        if requests:
            self.reassertions += 1
            await self._writer.write(requests)

    async def after_write(self, keys: Iterable[str], *, started: float, clean: bool) -> None:
        """Reassert the pointers of ``keys`` unless their write was clean and quick.

        ``started`` is the ``time.monotonic()`` at which the pointers were first sent; ``clean``
        says no item of the write was resubmitted (by us or by the SDK).
        """
        if not clean or time.monotonic() - started > self.reassert_after:
            await self.reassert(keys)

    # -- probing ----------------------------------------------------------------------------

    async def holds_child(self, folder: str) -> bool:
        """Whether ``folder`` (``"a/b"``) holds any record or pointer (lock records do not count).

        Lock records live in their folder's partition but are found by key, not through
        pointers, so they must not keep an otherwise empty folder listed.
        """
        params = names_query(folder or ROOT_PATH, limit=_PROBE_PAGE)
        while True:
            out = await self._table.call("query", key=folder, **params)
            if any(not is_hidden(i[ATTR_KEY]["S"]) for i in out.get("Items", [])):
                return True
            last = out.get("LastEvaluatedKey")
            if not last:
                return False
            params["ExclusiveStartKey"] = last

    async def _token(self, folder: str) -> str | None:
        """The token of ``folder``'s pointer (``""`` for a pointer written without one), or None."""
        out = await self._table.call("get_item", key=folder, Key=pointer_key(folder), ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else version_of(item)

    async def _delete_if(self, folder: str, token: str) -> bool:
        """Delete ``folder``'s pointer if it still carries ``token``; whether it was deleted."""
        names = {"#v": ATTR_VERSION}
        params: dict[str, Any]
        if token:
            params = {"ConditionExpression": "#v = :t", "ExpressionAttributeValues": {":t": {"S": token}}}
        else:  # a pointer Vault (or an older kvstore) wrote: no token yet
            names["#k"] = ATTR_KEY
            params = {"ConditionExpression": "attribute_exists(#k) AND attribute_not_exists(#v)"}
        try:
            await self._table.call(
                "delete_item", key=folder, Key=pointer_key(folder), ExpressionAttributeNames=names, **params
            )
        except ConditionFailed:
            return False  # a put rewrote it (the folder is in use) or another deleter removed it
        return True

    # -- pruning ----------------------------------------------------------------------------

    async def prune(self, folder: str) -> builtins.list[str]:
        """Remove the pointer of ``folder`` if it holds no child, then of each ancestor that empties.

        A first probe answers the usual case (the folder keeps a child) in one Query; only a folder
        found empty pays for the token read and the decisive second probe.

        A folder whose pointer is already gone is passed over (its parent may still point to it
        through nothing, after a failed put or a concurrent prune). Safe against concurrent puts
        (see the module docstring). Returns the folders whose
        pointers were removed, deepest first; a background re-check restores any that gains a
        child meanwhile.
        """
        if not folder or await self.holds_child(folder):
            return []  # the usual answer, for the price of one small Query
        pruned: builtins.list[str] = []
        try:
            token = await self._token(folder)
            while folder:
                parent = parent_folder(folder)
                if token is None:  # already gone (another deleter, a failed put): look above
                    if not parent:
                        break
                    folder, token = parent, await self._token(parent)
                    continue
                if await self.holds_child(folder):
                    break
                if not parent:
                    if await self._delete_if(folder, token):
                        pruned.append(folder)
                    break
                # The parent's token is read while this pointer goes: still before the parent's probe.
                deleted, parent_token = await asyncio.gather(
                    self._delete_if(folder, token), self._token(parent), return_exceptions=True
                )
                if deleted is True:
                    pruned.append(folder)
                for outcome in (deleted, parent_token):
                    if isinstance(outcome, BaseException):
                        raise outcome
                if deleted is not True or isinstance(parent_token, BaseException):
                    break
                folder, token = parent, parent_token
        finally:
            if pruned:
                self._inflight.spawn(self._recheck(pruned), f"re-check of pruned folders {pruned}")
        return pruned

    async def _recheck(self, pruned: builtins.list[str]) -> None:
        """Restore pruned folders that gained a child: at once, then again after the delay."""
        for delay in (0.0, self._recheck_delay):
            await self._inflight.sleep(delay)
            for folder in pruned:  # deepest first: restoring one restores every folder above it
                if await self.holds_child(folder):
                    self.restorations += 1
                    await self.reassert([folder + "/"])
                    break


