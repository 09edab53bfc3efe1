"""The lease lock: leader election that stays safe when machines' clocks disagree.

One protocol, written once over a small :class:`LockStore` (a conditional-write record store) that
each backend provides. The record of a lock holds the holder's identity and value, a *record
version* that changes on every renewal, a *fencing counter* that grows with every grant, and the
holder's TTL.

Why it is safe without comparing wall clocks (the flaw of Vault's ``Expires`` check):

- A contender takes over only after it has seen the **same record version unchanged for a whole
  TTL on its own monotonic clock**. The version it saw was written by a renewal the holder *sent*
  before the contender read it.
- The holder steps down (sets its "lost" event) when its last successful renewal was **sent**
  more than ``TTL - margin`` ago on its own monotonic clock. So it gives up at
  ``sent + TTL - margin``, strictly before ``first_seen >= sent`` plus a TTL: with equal clock
  rates there is no window with two leaders, and ``margin`` absorbs rate drift.
- Every grant increments the fencing counter; a resource that checks it (see
  :class:`kvstore.backend.Fence`) refuses writes from a replaced leader even if it was paused.
- ``unlock`` releases the record (keeping the counter), so a contender may take it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from kvstore.backend import Lock
from kvstore.errors import ConditionFailed, ConfigError, KVStoreError, LockNotHeld
from kvstore.keys import validate_key

__all__ = [
    "DEFAULT_TIMINGS",
    "LeaseLock",
    "LockRecord",
    "LockStore",
    "LockTimings",
    "safety_margin",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LockTimings:
    """A lock's timings in seconds.

    Defaults are Vault's: a 15 s TTL (Consul's), renewal every 5 s (three chances per TTL),
    a retry every 1 s while waiting, and a watch every 5 s.
    """

    ttl: float = 15.0
    renew_interval: float = 5.0
    watch_interval: float = 5.0
    retry_interval: float = 1.0

    def validated(self) -> LockTimings:
        """Return self if every timing is a positive number; warn when renewal cannot keep up."""
        for name in ("ttl", "renew_interval", "watch_interval", "retry_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v != v:
                raise ConfigError(f"invalid lock {name.replace('_', ' ')}: {v!r} (a positive number of seconds)")
        if self.renew_interval >= self.ttl:
            warnings.warn(
                f"lock renew interval {self.renew_interval}s is not below the TTL {self.ttl}s: "
                "the holder will lose the lock between renewals (a stalled holder)",
                RuntimeWarning,
                stacklevel=3,
            )
        return self

    def override(
        self,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> LockTimings:
        """These timings with the given (non-None) ones replaced, validated."""
        return LockTimings(
            ttl=self.ttl if ttl is None else ttl,
            renew_interval=self.renew_interval if renew_interval is None else renew_interval,
            watch_interval=self.watch_interval if watch_interval is None else watch_interval,
            retry_interval=self.retry_interval if retry_interval is None else retry_interval,
        ).validated()


DEFAULT_TIMINGS = LockTimings()


def safety_margin(ttl: float) -> float:
    """How much earlier than a TTL the holder steps down: a fifth of it, at most 2 s.

    It covers clock-rate drift between machines (ppm) and the time the holder needs to notice.
    """
    return min(ttl * 0.2, 2.0)


@dataclass(frozen=True, slots=True)
class LockRecord:
    """The stored state of one lock. ``identity`` is ``None`` once released."""

    identity: str | None
    value: str
    version: str
    fence: int
    ttl: float


class LockStore(ABC):
    """Conditional writes on lock records; each backend implements these four."""

    @abstractmethod
    async def read(self, key: str) -> LockRecord | None:
        """The lock record for lock ``key`` (a consistent read), or ``None``."""

    @abstractmethod
    async def acquire(
        self, key: str, *, identity: str, value: str, ttl: float, expected_version: str | None
    ) -> LockRecord:
        """Grant the lock: new version, fencing counter + 1; only if the record still has
        ``expected_version`` (``None``: only if there is no record).

        :raises ConditionFailed: the record changed meanwhile.
        """

    @abstractmethod
    async def renew(self, key: str, *, identity: str) -> LockRecord | None:
        """Give the record a new version if ``identity`` still holds it; ``None`` if it does not."""

    @abstractmethod
    async def release(self, key: str, *, identity: str) -> None:
        """Release the record if ``identity`` holds it, keeping the fencing counter."""


def _new_identity() -> str:
    return uuid.uuid4().hex


class LeaseLock(Lock):
    """A :class:`~kvstore.backend.Lock` over any :class:`LockStore` (see the module docstring)."""

    def __init__(
        self,
        store: LockStore,
        key: str,
        value: str,
        timings: LockTimings = DEFAULT_TIMINGS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate_key(key)
        if not isinstance(value, str):
            raise ConfigError(f"lock value must be str, not {type(value).__name__}")
        self._store = store
        self._key = key
        self._value = value
        self._timings = timings
        self._clock = clock
        self._identity = _new_identity()
        self._token: int | None = None
        self._lost: asyncio.Event | None = None
        self._last_sent = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def key(self) -> str:
        """The lock's name."""
        return self._key

    @property
    def identity(self) -> str:
        """This lock object's unique identity (one per ``lock_with`` call)."""
        return self._identity

    @property
    def timings(self) -> LockTimings:
        """The timings this lock runs with."""
        return self._timings

    @property
    def fencing_token(self) -> int:
        """The fencing token of the latest grant to this lock object."""
        if self._token is None:
            raise LockNotHeld(f"lock {self._key!r} was never granted to this node")
        return self._token

    async def value(self) -> tuple[bool, str]:
        rec = await self._store.read(self._key)
        if rec is None or rec.identity is None:
            return False, ""
        return True, rec.value

    async def lock(self, stop: asyncio.Event | None = None) -> asyncio.Event | None:
        if self._lost is not None and not self._lost.is_set():
            return self._lost  # already held by this object
        t = self._timings
        observed: tuple[str, float] | None = None  # (version, when first seen on our clock)
        while True:
            if stop is not None and stop.is_set():
                return None
            try:
                granted = await self._try_acquire(observed)
            except KVStoreError as exc:
                # A failed read or write while waiting is not fatal: the record is the truth and
                # we read it again on the next round.
                log.debug("lock %s: acquire attempt failed: %s", self._key, exc)
                granted, observed = None, None
            if isinstance(granted, LockRecord):
                return self._start(granted)
            if granted is not None:
                observed = granted
            wait = t.retry_interval
            if observed is not None:
                until_takeover = observed[1] + self._takeover_wait - self._clock()
                wait = min(wait, max(until_takeover, 0.0))
            if await _wait_for(stop, wait):
                return None

    _takeover_wait: float = 0.0

    async def _try_acquire(
        self, observed: tuple[str, float] | None
    ) -> LockRecord | tuple[str, float] | None:
        """One round: a grant, or the (version, first-seen) pair to keep watching."""
        rec = await self._store.read(self._key)
        now = self._clock()
        if rec is None or rec.identity is None or rec.identity == self._identity:
            expected = None if rec is None else rec.version
        else:
            # The holder's TTL as stored (or ours if larger) is how long its version must stay still.
            self._takeover_wait = max(rec.ttl, self._timings.ttl)
            if observed is None or observed[0] != rec.version:
                return (rec.version, now)
            if now - observed[1] < self._takeover_wait:
                return observed
            log.info("lock %s: record version unchanged for %.1fs, taking over", self._key, now - observed[1])
            expected = rec.version
        sent = self._clock()
        try:
            granted = await self._store.acquire(
                self._key,
                identity=self._identity,
                value=self._value,
                ttl=self._timings.ttl,
                expected_version=expected,
            )
        except ConditionFailed:
            return None  # someone else moved first; look again
        self._last_sent = sent
        return granted

    def _start(self, rec: LockRecord) -> asyncio.Event:
        self._token = rec.fence
        lost = asyncio.Event()
        self._lost = lost
        log.debug("lock %s: granted, fencing token %d", self._key, rec.fence)
        self._tasks = [
            asyncio.create_task(self._renew_loop(lost), name=f"lock-renew:{self._key}"),
            asyncio.create_task(self._watch_loop(lost), name=f"lock-watch:{self._key}"),
            asyncio.create_task(self._deadline_loop(lost), name=f"lock-deadline:{self._key}"),
        ]
        return lost

    def _mark_lost(self, lost: asyncio.Event, why: str) -> None:
        if not lost.is_set():
            log.warning("lock %s: leadership lost (%s), fencing token %s", self._key, why, self._token)
            lost.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _renew_loop(self, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await asyncio.sleep(self._timings.renew_interval)
            sent = self._clock()
            try:
                rec = await self._store.renew(self._key, identity=self._identity)
            except KVStoreError as exc:
                # Ambiguous or failed: keep trying; the deadline loop steps down if it lasts.
                log.debug("lock %s: renewal failed: %s", self._key, exc)
                continue
            if rec is None:
                self._mark_lost(lost, "another holder or no record at renewal")
                return
            self._last_sent = max(self._last_sent, sent)

    async def _watch_loop(self, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await asyncio.sleep(self._timings.watch_interval)
            try:
                rec = await self._store.read(self._key)
            except KVStoreError as exc:
                log.debug("lock %s: watch read failed: %s", self._key, exc)
                continue
            if rec is None or rec.identity != self._identity:
                self._mark_lost(lost, "watcher saw another identity or no record")
                return

    async def _deadline_loop(self, lost: asyncio.Event) -> None:
        limit = self._timings.ttl - safety_margin(self._timings.ttl)
        while not lost.is_set():
            remaining = self._last_sent + limit - self._clock()
            if remaining <= 0:
                self._mark_lost(lost, f"no successful renewal sent within {limit:.2f}s")
                return
            await asyncio.sleep(remaining)

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def unlock(self) -> None:
        lost = self._lost
        await self._stop_tasks()
        if lost is None:
            return
        if lost is not None:
            lost.set()
        self._lost = None
        await self._store.release(self._key, identity=self._identity)


async def _wait_for(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True if stop was set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
