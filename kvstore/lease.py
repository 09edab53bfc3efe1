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
- Renewals are conditioned on the holder's identity, not on a version, so an ambiguous renewal (a
  timeout whose write did land) costs nothing: the retry succeeds all the same. Only a renewal
  seen to land moves the holder's deadline, so not knowing errs on the safe side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kvstore.backend import Lock
from kvstore.errors import BackendError, ConditionFailed, ConfigError, KVStoreError, LockNotHeld
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
        # The holder steps down once its last renewal was sent more than TTL - margin ago, so a
        # renewal has to go out before that, not merely before the TTL (which is the contract's
        # wording; this also covers it).
        step_down = self.ttl - safety_margin(self.ttl)
        if self.renew_interval >= step_down:
            warnings.warn(
                f"lock renew interval {self.renew_interval}s is not below the TTL {self.ttl}s minus its "
                f"safety margin ({step_down:g}s): the holder will lose the lock between renewals "
                "(a stalled holder)",
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

        :raises ConditionFailed: the record changed meanwhile; ``current`` is the record found
            (a :class:`LockRecord`) when the store can tell, so a caller sees its own landed write.
        """

    @abstractmethod
    async def renew(self, key: str, *, identity: str) -> LockRecord | None:
        """Give the record a new version if ``identity`` still holds it; ``None`` if it does not.

        Conditioned on the identity only, so retrying after an ambiguous failure is safe.
        """

    @abstractmethod
    async def release(self, key: str, *, identity: str) -> None:
        """Release the record if ``identity`` holds it, keeping the fencing counter."""


def _new_identity() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class _Sighting:
    """A holder's record version as a contender first saw it, on the contender's own clock.

    ``wait`` is how long the version must stay unchanged before a takeover: the holder's TTL as
    stored in its record, or the contender's own if larger.
    """

    version: str
    first_seen: float
    wait: float


@dataclass(slots=True)
class _Grant:
    """The live state of one grant; each grant has its own, so a stale task never touches a newer one."""

    token: int
    lost: asyncio.Event
    last_sent: float
    """When the last renewal known to have landed was *sent* (the grant's acquire, at first)."""
    limit: float
    """TTL minus the safety margin: how long after ``last_sent`` the holder steps down."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def deadline(self) -> float:
        return self.last_sent + self.limit


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
        self._grant: _Grant | None = None
        # lock() calls on one object wait for each other, so two of them never make two grants
        # with two sets of background tasks.
        self._mutex = asyncio.Lock()
        # Set once an acquire was sent: its write may have landed even if we never saw the reply
        # (a cancelled lock(), a timeout), so unlock() must release. Release is conditional on
        # our identity, so releasing a record we do not hold is harmless.
        self._may_hold = False

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

    @property
    def held(self) -> bool:
        """Whether this object holds a grant it has not lost, judged on the local clock right now.

        The "lost" event is set by a background task, which only runs when the event loop gets to
        it: after a process pause (SIGSTOP, a long GC, a blocked loop) the event can still be
        clear for a moment although the lease ran out. This property needs no scheduling.
        """
        grant = self._grant
        return grant is not None and not grant.lost.is_set() and self._clock() < grant.deadline()

    async def value(self) -> tuple[bool, str]:
        """``(held, value)`` as the store records it now: any node's grant, this one's included.

        ``held`` is True while a grant is recorded and not released. A holder that died without
        releasing still counts until a contender takes over (a TTL of silence later): whether a
        silent holder is dead is exactly what one read cannot tell.
        """
        rec = await self._store.read(self._key)
        if rec is None or rec.identity is None:
            return False, ""
        return True, rec.value

    async def lock(self, stop: asyncio.Event | None = None) -> asyncio.Event | None:
        """Block until held; return the "lost" event, or ``None`` if ``stop`` was set first.

        Calling it again while this object holds the lock returns the same event (a lock object
        holds at most one grant); concurrent calls wait for each other. After a loss it campaigns
        afresh, and the new grant has a new, larger fencing token.

        Failed reads and writes while waiting are retried (the record is the truth); misuse, such
        as a closed backend, raises.

        :raises UsageError: the backend cannot be used (e.g. it was closed).
        """
        async with self._mutex:
            grant = self._grant
            if grant is not None:
                if self.held:
                    return grant.lost
                self._mark_lost(grant, "the lease ran out")  # if its deadline task has not run yet
                await self._stop_tasks(grant)  # the tasks of a lost grant may still be winding down
                self._grant = None
            return await self._campaign(stop)

    async def _campaign(self, stop: asyncio.Event | None) -> asyncio.Event | None:
        t = self._timings
        seen: _Sighting | None = None
        while True:
            if stop is not None and stop.is_set():
                return None
            wait = t.retry_interval
            try:
                result = await self._try_acquire(seen)
            except BackendError as exc:
                # A failed read or write while waiting is not fatal: read the record again next
                # round. What we saw before stays valid (a failure does not change the record).
                log.debug("lock %s: acquire attempt failed: %s", self._key, exc)
            else:
                if isinstance(result, _Grant):
                    return self._start(result)
                seen = result
                if seen is not None:
                    wait = min(wait, max(seen.first_seen + seen.wait - self._clock(), 0.0))
            if await _wait_for(stop, wait):
                return None

    async def _try_acquire(self, seen: _Sighting | None) -> _Grant | _Sighting | None:
        """One round: a grant, or the sighting to keep watching (``None``: look again)."""
        rec = await self._store.read(self._key)
        now = self._clock()
        if rec is not None and rec.identity is not None and rec.identity != self._identity:
            if seen is None or seen.version != rec.version:
                return _Sighting(rec.version, now, max(rec.ttl, self._timings.ttl))
            if now - seen.first_seen < seen.wait:
                return seen
            log.info("lock %s: record version unchanged for %.1fs, taking over", self._key, now - seen.first_seen)
        # A missing or released record is free at once; so is one still in our own name (a grant
        # this object lost on its deadline while nobody took over).
        expected = None if rec is None else rec.version
        for _ in range(2):
            sent = self._clock()
            self._may_hold = True
            try:
                granted = await self._store.acquire(
                    self._key,
                    identity=self._identity,
                    value=self._value,
                    ttl=self._timings.ttl,
                    expected_version=expected,
                )
            except ConditionFailed as exc:
                current = exc.current
                if isinstance(current, LockRecord) and current.identity == self._identity:
                    # The record moved, but in our own name: an earlier attempt of this request
                    # landed (the SDK retried after a lost reply) or a late renewal of an earlier
                    # grant did. Nobody else holds it, so take a fresh grant on what is there.
                    expected = current.version
                    continue
                return None  # someone else moved first; look again
            limit = self._timings.ttl - safety_margin(self._timings.ttl)
            return _Grant(token=granted.fence, lost=asyncio.Event(), last_sent=sent, limit=limit)
        return None

    def _start(self, grant: _Grant) -> asyncio.Event:
        self._grant = grant
        self._token = grant.token
        log.debug("lock %s: granted, fencing token %d", self._key, grant.token)
        grant.tasks = [
            asyncio.create_task(self._guarded(grant, self._renew_loop), name=f"lock-renew:{self._key}"),
            asyncio.create_task(self._guarded(grant, self._watch_loop), name=f"lock-watch:{self._key}"),
            asyncio.create_task(self._guarded(grant, self._deadline_loop), name=f"lock-deadline:{self._key}"),
        ]
        return grant.lost

    def _mark_lost(self, grant: _Grant, why: str) -> None:
        if not grant.lost.is_set():
            log.warning("lock %s: leadership lost (%s), fencing token %d", self._key, why, grant.token)
            grant.lost.set()
        current = asyncio.current_task()
        for task in grant.tasks:
            if task is not current:
                task.cancel()

    async def _guarded(self, grant: _Grant, loop: Callable[[_Grant], Awaitable[None]]) -> None:
        """Run a background loop; if it fails unexpectedly the holder can no longer vouch for its
        lease, so it steps down rather than let the failure pass silently."""
        try:
            await loop(grant)
        except Exception as exc:
            self._fail(grant, exc)

    def _fail(self, grant: _Grant, exc: Exception) -> None:
        if isinstance(exc, KVStoreError):  # e.g. BackendClosed: expected, no traceback needed
            log.warning("lock %s: background task stopped: %r", self._key, exc)
        else:
            log.error("lock %s: background task failed: %r", self._key, exc, exc_info=exc)
        self._mark_lost(grant, f"background task failed: {exc!r}")

    async def _renew_loop(self, grant: _Grant) -> None:
        t = self._timings
        attempts: set[asyncio.Task[bool]] = set()
        delay = t.renew_interval
        try:
            while not grant.lost.is_set():
                await asyncio.sleep(delay)
                budget = grant.deadline() - self._clock()
                if budget <= 0:
                    return  # the deadline loop steps down
                attempt = asyncio.create_task(self._renew_once(grant), name=f"lock-renewal:{self._key}")
                attempts.add(attempt)
                attempt.add_done_callback(attempts.discard)
                # A request stuck on a dead connection must not hold up the next one, and a slow
                # one must not be thrown away (it may still land and count): after half the time
                # left, send another alongside it.
                done, _ = await asyncio.wait({attempt}, timeout=budget / 2)
                ok = attempt in done and attempt.result()
                delay = t.renew_interval if ok else min(t.retry_interval, t.renew_interval)
        finally:
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    async def _renew_once(self, grant: _Grant) -> bool:
        """Send one renewal; True if it landed. It moves the deadline itself, even when it lands late."""
        sent = self._clock()
        try:
            rec = await self._store.renew(self._key, identity=self._identity)
        except BackendError as exc:
            # Ambiguous: the write may or may not have landed. Either way the record is still in
            # our name (renewals are conditioned on our identity, not on a version), so the next
            # attempt succeeds if we still hold it. Only a renewal seen to land moves the deadline.
            log.debug("lock %s: renewal failed, retrying: %r", self._key, exc)
            return False
        except Exception as exc:
            self._fail(grant, exc)
            return False
        if rec is None:
            self._mark_lost(grant, "the record is gone or held by another identity at renewal")
            return False
        grant.last_sent = max(grant.last_sent, sent)
        return True

    async def _watch_loop(self, grant: _Grant) -> None:
        while not grant.lost.is_set():
            await asyncio.sleep(self._timings.watch_interval)
            try:
                rec = await self._store.read(self._key)
            except BackendError as exc:
                log.debug("lock %s: watch read failed: %r", self._key, exc)
                continue  # the deadline covers a store we cannot reach
            if rec is None or rec.identity != self._identity or rec.fence != grant.token:
                self._mark_lost(grant, "the watcher saw another identity or no record")
                return

    async def _deadline_loop(self, grant: _Grant) -> None:
        while not grant.lost.is_set():
            remaining = grant.deadline() - self._clock()
            if remaining <= 0:
                self._mark_lost(grant, f"no renewal known to have landed within {grant.limit:.2f}s")
                return
            await asyncio.sleep(remaining)

    @staticmethod
    async def _stop_tasks(grant: _Grant) -> None:
        tasks, grant.tasks = grant.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def unlock(self) -> None:
        """Step down and release at once: a contender may take the record without waiting.

        Sets the "lost" event first, then stops the background tasks (no renewal is sent after
        this returns), then releases the record if it is in this object's name. The release is
        conditional on our identity, so it never touches a later holder's record, never
        re-creates a record, and keeps the fencing counter. Idempotent.

        :raises BackendError: the release failed; the record then frees itself a TTL later.
        """
        grant, self._grant = self._grant, None
        if grant is not None:
            grant.lost.set()
            await self._stop_tasks(grant)
        if not self._may_hold:
            return
        await self._store.release(self._key, identity=self._identity)
        self._may_hold = False

async def _wait_for(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True if stop was set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
