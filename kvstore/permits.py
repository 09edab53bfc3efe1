"""PermitPool: bounded concurrency for requests to the engine, with counters for tests and benchmarks.

Vault's ``physical.PermitPool`` caps how many requests a backend has in flight (``max_parallel``), so
a burst of puts queues in the client instead of overwhelming the engine or the connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kvstore import metrics

__all__ = ["DEFAULT_PERMITS", "PermitPool", "PermitStatistics"]

#: Vault's default ``max_parallel``.
DEFAULT_PERMITS = 128


@dataclass(frozen=True, slots=True)
class PermitStatistics:
    """A snapshot of a pool: its size, permits in use now, the most ever in use, total grants, and
    how many holders are waiting for a permit now."""

    size: int
    in_use: int
    peak_in_use: int
    acquired_total: int
    waiting: int = 0


class PermitPool:
    """At most ``size`` holders at once; ``async with pool.permit():`` holds one."""

    def __init__(self, size: int = DEFAULT_PERMITS) -> None:
        if size < 1:
            size = DEFAULT_PERMITS
        self._size = size
        self._sem = asyncio.Semaphore(size)
        self._in_use = 0
        self._peak = 0
        self._total = 0
        self._waiting = 0
        metrics.track_permits(self)

    @property
    def size(self) -> int:
        """How many permits the pool hands out at most."""
        return self._size

    @property
    def in_use(self) -> int:
        """How many permits are held now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """How many holders are waiting for a permit now."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one permit for the duration of the block (waits while all are taken)."""
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        try:
            self._in_use += 1
            self._total += 1
            self._peak = max(self._peak, self._in_use)
            try:
                yield
            finally:
                self._in_use -= 1
        finally:
            self._sem.release()

    def statistics(self) -> PermitStatistics:
        """A snapshot of the pool's counters."""
        return PermitStatistics(self._size, self._in_use, self._peak, self._total, self._waiting)
