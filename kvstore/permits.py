"""PermitPool: bounded concurrency for requests to the engine, with counters for tests and benchmarks.

Vault's ``physical.PermitPool`` caps how many requests a backend has in flight (``max_parallel``), so
a burst of puts queues in the client instead of overwhelming the engine or the connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["DEFAULT_PERMITS", "PermitPool", "PermitStatistics"]

#: Vault's default ``max_parallel``.
DEFAULT_PERMITS = 128


@dataclass(frozen=True, slots=True)
class PermitStatistics:
    """A snapshot of a pool: its size, permits in use now, the most ever in use, and total grants."""

    size: int
    in_use: int
    peak_in_use: int
    acquired_total: int


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

    @property
    def size(self) -> int:
        """How many permits the pool hands out at most."""
        return self._size

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one permit for the duration of the block (waits while all are taken)."""
        async with self._sem:
            self._in_use += 1
            self._total += 1
            self._peak = max(self._peak, self._in_use)
            try:
                yield
            finally:
                self._in_use -= 1

    def statistics(self) -> PermitStatistics:
        """A snapshot of the pool's counters."""
        return PermitStatistics(self._size, self._in_use, self._peak, self._total)
