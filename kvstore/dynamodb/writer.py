"""BatchWriter: the one component that sends BatchWriteItem.

It cuts write requests into batches of 25 (DynamoDB's limit), sends each under a permit of the
table's pool, and resubmits ``UnprocessedItems`` with capped exponential backoff and full jitter
until they land or the deadline passes, then raises :class:`~kvstore.errors.WriteIncomplete`.
Nothing is dropped silently (Vault once lost writes by ignoring UnprocessedItems, upstream issue
5836). Throttling and dropped connections are retried the same way: BatchWriteItem's puts and
deletes are idempotent, so resending a request whose reply was lost is safe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from kvstore import metrics
from kvstore.dynamodb.coalesce import GroupWriter
from kvstore.dynamodb.table import Table
from kvstore.errors import EngineUnavailable, Throttled, TransactionConflict, WriteIncomplete
from kvstore.settle import settle

__all__ = ["BATCH_LIMIT", "BatchWriter", "WriteRequest"]

log = logging.getLogger(__name__)

#: DynamoDB accepts at most 25 write requests in one BatchWriteItem.
BATCH_LIMIT = 25

WriteRequest = dict[str, Any]
"""``{"PutRequest": {"Item": ...}}`` or ``{"DeleteRequest": {"Key": ...}}``."""



class BatchWriter:
    """Writes request groups in order; each group lands completely before the next one starts.

    ``base_delay`` and ``max_delay`` shape the backoff between resubmissions: the n-th retry
    sleeps a uniform random time in ``[0, min(max_delay, base_delay * 2**n)]`` ("full jitter",
    which spreads retrying writers apart instead of having them collide again).
    """

    def __init__(
        self,
        table: Table,
        *,
        deadline: float = 30.0,
        base_delay: float = 0.025,
        max_delay: float = 1.0,
        coalesce: bool = False,
    ) -> None:
        self._table = table
        self._deadline = deadline
        self.base_delay = base_delay
        """The first backoff before a resubmission (seconds)."""
        self._max = max_delay
        self._retries = 0
        self.group: GroupWriter | None = (
            GroupWriter(table, deadline=deadline, base_delay=base_delay, max_delay=max_delay) if coalesce else None
        )
        """Shares BatchWriteItem calls among concurrent writes (None when coalescing is off)."""

    @property
    def retries(self) -> int:
        """How many times a batch (or its unprocessed rest) was resubmitted."""
        return self._retries + (self.group.retries if self.group else 0)

    async def write(self, *groups: Sequence[WriteRequest]) -> bool:
        """Write every group, in order; the batches of one group go out concurrently.

        Returns whether the write was *clean*: every request landed on its first sending, with
        no resubmission by us and no retry by the SDK. A write that was not clean may have landed
        its items far apart in time, which the folder-pointer protocol needs to know
        (:mod:`kvstore.dynamodb.pointers`).

        :raises WriteIncomplete: items were still unprocessed at the deadline.
        :raises Throttled, EngineUnavailable, TransactionConflict: the last error, when the deadline
            passed on it. Other errors (an engine rejection, a missing table) are raised at once.
        """
        if self.group is not None and len(groups) == 1 and len(groups[0]) <= BATCH_LIMIT:
            return await self.group.write(groups[0])
        deadline = time.monotonic() + self._deadline
        clean = True
        for group in groups:
            batches = [list(group[i : i + BATCH_LIMIT]) for i in range(0, len(group), BATCH_LIMIT)]
            if len(batches) == 1:
                clean &= await self._write_batch(batches[0], deadline)
            elif batches:
                clean &= all(await settle(*(self._write_batch(b, deadline) for b in batches)))
        return clean

    async def _write_batch(self, batch: list[WriteRequest], deadline: float) -> bool:
        pending = batch
        attempt = 0
        while True:
            try:
                out = await self._table.call("batch_write_item", RequestItems={self._table.name: pending})
                pending = out.get("UnprocessedItems", {}).get(self._table.name, [])
                metrics.record_unprocessed("BatchWriteItem", len(pending))
                if not pending:
                    return attempt == 0 and not out.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                reason: Exception | None = None
            except (Throttled, EngineUnavailable, TransactionConflict) as exc:
                reason = exc
            delay = random.uniform(0, min(self._max, self.base_delay * 2**attempt))
            if time.monotonic() + delay > deadline:
                if reason is not None:
                    raise reason
                raise WriteIncomplete(
                    f"{len(pending)} of {len(batch)} write requests still unprocessed at the deadline",
                    pending=len(pending),
                )
            attempt += 1
            self._retries += 1
            metrics.record_batch_retry("BatchWriteItem", reason)
            log.debug(
                "batch write: %d requests to resend (%s), backoff %.3fs",
                len(pending), reason or "unprocessed", delay,
            )
            await asyncio.sleep(delay)
