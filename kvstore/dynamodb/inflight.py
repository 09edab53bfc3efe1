"""InFlight: writes that finish even when their caller is cancelled, and that ``aclose`` waits for.

A put, delete or commit is several requests (a record, folder pointers, a probe, a cleanup). If the
caller is cancelled between two of them, stopping there would leave the hierarchy broken: a
pointer without a child (an empty folder that ``list`` shows) or a record without its pointers (a
key that ``get`` reads but ``list`` never reaches). So each mutating operation runs as a task of
its own, shielded from the caller's cancellation: the caller stops waiting, the operation finishes.
Follow-up work nobody waits for (the delayed re-check of pruned folders, the cleanup after a failed
write) is spawned here too. ``drain`` (called by ``aclose``) first asks sleeping follow-ups to hurry,
then waits for every task, so closing a backend never abandons a write half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from kvstore.errors import TableNotFound

__all__ = ["InFlight"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class InFlight:
    """The set of a backend's operations and follow-ups that must run to completion."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hurry = asyncio.Event()

    def __len__(self) -> int:
        """How many tasks are still running (for tests and statistics)."""
        return len(self._tasks)

    def _track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Retrieve the outcome so a task whose caller was cancelled does not warn "exception was
        # never retrieved"; the caller that still waits gets the same exception through shield.
        if not task.cancelled() and task.exception() is not None:
            log.debug("in-flight write ended with %r", task.exception())

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion even if the caller is cancelled; return its result.

        A cancelled caller gets ``CancelledError`` at once while the operation goes on in the
        background (tracked, so ``drain`` waits for it).
        """
        return await asyncio.shield(self._track(coro))

    def spawn(self, coro: Coroutine[Any, Any, object], what: str) -> None:
        """Start follow-up work nobody waits for; a failure is logged at WARNING with ``what``."""

        async def logged() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except TableNotFound:
                log.debug("%s: the table is gone, nothing left to repair", what)
            except Exception as exc:
                log.warning("%s failed: %r (run `kvstore fsck --repair` if this persists)", what, exc)

        self._track(logged())

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once ``drain`` has asked everything to hurry."""
        if seconds <= 0 or self._hurry.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)

    async def drain(self) -> None:
        """Ask sleeping follow-ups to hurry and wait until every task has finished."""
        self._hurry.set()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
