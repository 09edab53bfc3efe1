"""The lease lock: leader election that stays safe when machines' clocks disagree.

One protocol, written once over a small :class:`LockStore` (a conditional-write record store) that
each backend provides. The record of a lock holds the holder's identity and value, a *record
version* that changes on every renewal, a *fencing counter* that grows with every grant, and the
holder's TTL.

Why it is safe without comparing wall clocks (the flaw of Vault's ``Expires`` check):

- A contender takes over only after it has seen the **same record version unchanged for a whole
  TTL on its own clock**. The version it saw was written by a renewal the holder *sent* before the
  contender read it.
- The holder steps down (sets its "lost" event) when its last successful renewal was **sent**
  more than ``TTL - margin`` ago on its own *lease clock*. So it gives up at
  ``sent + TTL - margin``, strictly before ``first_seen >= sent`` plus a TTL: with equal clock
  rates there is no window with two leaders, and ``margin`` absorbs rate drift. :attr:`LeaseLock.held`
  judges this on the clock at the moment it is read, so it needs no task to have run.
- The lease clock is :func:`lease_clock`: ``CLOCK_BOOTTIME`` on Linux, which keeps counting while
  the machine is suspended (``CLOCK_MONOTONIC`` stands still then, so a resumed holder would think
  its lease still ran), else :func:`time.monotonic`.
- A pause that the lease clock did not count (a VM paused by its hypervisor, a suspend where only
  the monotonic fallback exists) is detected by comparing the lease clock with the wall clock
  between ticks (every read of ``held`` and a tick of at most 0.5 s): when the wall clock moved
  more than half the safety margin further, the unseen time is charged to the lease (its deadline
  moves earlier by as much) and the grant is *unconfirmed*: ``held`` is False until a renewal sent
  after the jump lands (the holder renews at once). A wall clock stepped forward (NTP) looks the
  same and costs at most a renewal or a step-down, never safety.
- What remains: a pause that no clock shows (a VM whose every clock was stopped and not yet
  corrected), or a pause between a positive ``held`` check and the moment a write reaches the
  resource. Against a paused process nothing local helps: **fencing is the only defence**. Every
  grant increments the fencing counter; a resource that checks it (see
  :class:`kvstore.backend.Fence` and :mod:`kvstore.fencing`) refuses a replaced leader's writes.
- Renewals go out on a fixed cadence measured from their *send* times: a slow renewal still in
  flight does not delay the next one, so the lease survives a round trip of up to
  ``TTL - margin - renew_interval``; each renewal moves the deadline (to its own send time plus
  ``TTL - margin``) when it lands, even late, and a renewal that lands after the holder stepped
  down moves nothing.
- A holder that stepped down stops renewing at once (attempts in flight are cancelled, none is
  sent after) and, when the record may still be in its name (its deadline passed, a renewal
  failed), releases it, bounded and best effort: renewals that landed without their replies then
  cost a contender nothing more than the release (failover within ``TTL + retry_interval`` of the
  holder's last landed renewal, instead of another TTL of waiting on a record they kept changing).
- ``unlock`` first cancels a campaign in flight on the same object (so no grant can appear behind
  it), stops the grant's tasks, then releases the record (keeping the counter), bounded in time, so
  a contender may take it at once.
- Renewals are conditioned on the holder's identity, not on a version, so an ambiguous renewal (a
  timeout whose write did land) costs nothing: the retry succeeds all the same. Only a renewal
  seen to land moves the holder's deadline, so not knowing errs on the safe side.
- Only transient engine errors (:func:`kvstore.errors.is_transient`) are retried. Any other error
  ends ``lock()`` by raising it, and makes a holder step down (logged): a deleted table or a
  rejected request does not turn into a wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import overload

from kvstore import metrics
from kvstore.backend import Lock
from kvstore.errors import (
    BackendClosed,
    BackendError,
    ConditionFailed,
    ConfigError,
    EngineUnavailable,
    InvalidValue,
    KVStoreError,
    LockError,
    LockNotHeld,
    LockRecordChanged,
    UsageError,
    ValueTooLarge,
    is_transient,
)
from kvstore.keys import validate_lock_name

__all__ = [
    "DEFAULT_TIMINGS",
    "MAX_LOCK_VALUE_BYTES",
    "MAX_TIMING_SECONDS",
    "MIN_INTERVAL_SECONDS",
    "MIN_TTL_SECONDS",
    "LeaseLock",
    "LockRecord",
    "LockStore",
    "LockTimings",
    "lease_clock",
    "release_timeout",
    "safety_margin",
]

log = logging.getLogger(__name__)

#: The largest accepted timing (a day). A lease is a liveness promise: a TTL of days would block
#: failover for days after a crash, and infinite or astronomically large values cannot even be
#: stored (DynamoDB numbers stop near 1e125, and ``inf`` is no number at all).
MAX_TIMING_SECONDS = 86400.0
#: The smallest accepted TTL. Below it no engine answers in time: every grant would be lost
#: before its first renewal could land.
MIN_TTL_SECONDS = 0.1
#: The smallest accepted renew, watch and retry interval: below it the loops only spin.
MIN_INTERVAL_SECONDS = 0.01
#: The largest lock value, in UTF-8 bytes: the record must stay well inside DynamoDB's 400 KB
#: item limit together with its key, identity, version and counters.
MAX_LOCK_VALUE_BYTES = 350 * 1024
#: A holder logs a warning after this many consecutive failures of one kind of request (and after
#: every further such run), so an engine that keeps failing is visible without flooding the log.
WARN_EVERY = 5
#: The tick of a grant's deadline task: a timer of the event loop does not count a suspend, so a
#: sleep until a far deadline could wake long after it on resume; ticks bound that lateness.
MAX_TICK_SECONDS = 0.5


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _pick_lease_clock() -> Callable[[], float]:
    if hasattr(time, "CLOCK_BOOTTIME"):
        try:
            _boottime()
        except OSError:  # pragma: no cover - a kernel without it
            pass
        else:
            return _boottime
    return time.monotonic


#: The clock lease deadlines are measured on: ``CLOCK_BOOTTIME`` where the platform has it (Linux:
#: monotonic, and counts time spent in system suspend), else :func:`time.monotonic`.
lease_clock: Callable[[], float] = _pick_lease_clock()


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
        """Return self if every timing is a finite number of seconds in range; warn when renewal cannot keep up.

        The TTL must lie in [:data:`MIN_TTL_SECONDS`, :data:`MAX_TIMING_SECONDS`], each interval in
        [:data:`MIN_INTERVAL_SECONDS`, :data:`MAX_TIMING_SECONDS`]. A renew interval at or beyond
        the TTL (minus its safety margin) is accepted with a RuntimeWarning, as the contract says:
        it models a stalled holder, which loses every grant at its deadline.

        :raises ConfigError: a timing is not a number, not finite, or out of range.
        """
        for name in ("ttl", "renew_interval", "watch_interval", "retry_interval"):
            v = getattr(self, name)
            label = f"lock {name.replace('_', ' ')}"
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"invalid {label}: {v!r} (a number of seconds)")
            low = MIN_TTL_SECONDS if name == "ttl" else MIN_INTERVAL_SECONDS
            if not math.isfinite(v) or not low <= v <= MAX_TIMING_SECONDS:
                raise ConfigError(
                    f"invalid {label}: {v!r} (a finite number of seconds from {low:g} to {MAX_TIMING_SECONDS:g})"
                )
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


def release_timeout(ttl: float) -> float:
    """How long a release may take before ``unlock`` gives up on it: the TTL, within [1 s, 5 s].

    A release is best effort (the record frees itself a TTL after the last renewal anyway), so a
    partitioned holder must not wait out the client's read timeout (30 s by default) to resign.
    """
    return min(max(ttl, 1.0), 5.0)


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

    @property
    def closed(self) -> bool:
        """Whether the backend behind this store was closed (no lock over it can be held).

        Stores of backends that can be closed override this; the default says open.
        """
        return False

    @abstractmethod
    async def read(self, key: str) -> LockRecord | None:
        """The lock record for lock ``key`` (a consistent read), or ``None``."""

    @abstractmethod
    async def acquire(
        self, key: str, *, identity: str, value: str, ttl: float, expected_version: str | None
    ) -> LockRecord:
        """Grant the lock: new version, fencing counter + 1; only if the record still has
        ``expected_version`` (``None``: only if there is no record).

        :raises LockRecordChanged: the record changed meanwhile; ``current`` is the record found
            (``None`` when the store cannot tell), so a caller sees its own landed write.
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
    tick_lease: float
    tick_wall: float
    """The lease clock and the wall clock at the last jump check (see :meth:`LeaseLock._check_jump`)."""
    trusted_from: float
    """Only renewals sent at or after this lease-clock time may move the deadline (moved by a jump)."""
    unconfirmed: bool = False
    """A jump was seen and no renewal sent after it has landed yet: ``held`` says False meanwhile."""
    renew_due: float = math.inf
    """An earlier renewal than the cadence's, asked for by a failed attempt or a jump."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to make the renew loop look at ``renew_due`` now."""
    renew_failures: int = 0
    watch_failures: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    release: asyncio.Task[None] | None = None
    """The best-effort release sent after stepping down, if any."""

    def deadline(self) -> float:
        return self.last_sent + self.limit


class LeaseLock(Lock):
    """A :class:`~kvstore.backend.Lock` over any :class:`LockStore` (see the module docstring).

    ``clock`` is the lease clock (default :func:`lease_clock`) and ``wall_clock`` the clock a
    pause the lease clock missed is measured against (default :func:`time.time`); both are
    injectable for tests.

    :raises InvalidKey: ``key`` cannot name a lock (:func:`kvstore.keys.validate_lock_name`).
    :raises InvalidValue: ``value`` is not a ``str`` (or not encodable as UTF-8).
    :raises ValueTooLarge: ``value`` is over :data:`MAX_LOCK_VALUE_BYTES` in UTF-8.
    :raises BackendClosed: the store's backend is closed.
    """

    def __init__(
        self,
        store: LockStore,
        key: str,
        value: str,
        timings: LockTimings = DEFAULT_TIMINGS,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        validate_lock_name(key)
        if not isinstance(value, str):
            raise ConfigError(f"lock value must be str, not {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidValue(f"lock value for {key!r} is not encodable as UTF-8") from exc
        if size > MAX_LOCK_VALUE_BYTES:
            raise ValueTooLarge(key, size, MAX_LOCK_VALUE_BYTES)
        if store.closed:
            raise BackendClosed("the backend is closed")
        self._store = store
        self._key = key
        self._value = value
        self._timings = timings
        self._clock = lease_clock if clock is None else clock
        self._wall = wall_clock
        self._identity = _new_identity()
        self._token: int | None = None
        self._grant: _Grant | None = None
        # lock() calls on one object wait for each other, so two of them never make two grants
        # with two sets of background tasks; unlock() takes it too, so no campaign starts while
        # it releases (the release is conditioned on this object's identity, shared by all grants).
        self._mutex = asyncio.Lock()
        # The campaign of the lock() call in progress; unlock() cancels it.
        self._campaign_task: asyncio.Task[asyncio.Event | None] | None = None
        # Bumped by every unlock(): a lock() call made before it gives up instead of campaigning.
        self._epoch = 0
        # Set once an acquire was sent: its write may have landed even if we never saw the reply
        # (a cancelled lock(), a timeout), so unlock() must release. Release is conditional on
        # our identity, so releasing a record we do not hold is harmless.
        self._may_hold = False

    @classmethod
    def from_overrides(
        cls,
        store: LockStore,
        key: str,
        value: str,
        defaults: LockTimings,
        *,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> LeaseLock:
        """:meth:`~kvstore.backend.HABackend.lock_with` over ``store``: a lock with the backend's
        ``defaults``, the given (non-None) timings replacing them. Both backends' ``lock_with`` is this.

        :raises BackendClosed: the store's backend is closed (checked before anything else).
        :raises ConfigError: a timing is invalid (a renew interval at or beyond the TTL only warns).
        """
        if store.closed:
            raise BackendClosed("the backend is closed")
        return cls(store, key, value, defaults.override(ttl, renew_interval, watch_interval, retry_interval))

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
    def store(self) -> LockStore:
        """The record store this lock runs over."""
        return self._store

    @property
    def fencing_token(self) -> int:
        """The fencing token of the latest grant to this lock object."""
        if self._token is None:
            raise LockNotHeld(f"lock {self._key!r} was never granted to this node")
        return self._token

    @property
    def held(self) -> bool:
        """Whether this object holds a grant it has not lost, judged on the lease clock right now.

        The "lost" event is set by a background task, which only runs when the event loop gets to
        it: after a process pause (SIGSTOP, a long GC, a blocked loop, a suspend) the event can
        still be clear for a moment although the lease ran out. This property needs no scheduling:
        it reads the clock, checks for a pause the lease clock did not count (then the grant is
        unconfirmed until a renewal lands), and says False at once once the backend is closed.
        """
        grant = self._grant
        if grant is None or grant.lost.is_set() or self._store.closed:
            return False
        self._check_jump(grant)
        return not grant.unconfirmed and self._clock() < grant.deadline()

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

    @overload
    async def lock(self, stop: None = None) -> asyncio.Event: ...

    @overload
    async def lock(self, stop: asyncio.Event) -> asyncio.Event | None: ...

    async def lock(self, stop: asyncio.Event | None = None) -> asyncio.Event | None:
        """Block until held; return the "lost" event, or ``None`` if ``stop`` was set first.

        Calling it again while this object holds the lock returns the same event (a lock object
        holds at most one grant); concurrent calls wait for each other. After a loss it campaigns
        afresh, and the new grant has a new, larger fencing token. It only returns a grant that
        is held on return: one whose reply came after its lease ran out (a round trip longer than
        the TTL) is dropped and the campaign goes on.

        Transient engine errors while waiting are retried (the record is the truth; a warning is
        logged every few failures in a row); any other error is raised.

        :meth:`unlock` called meanwhile ends the call: it returns ``None`` when a ``stop`` event
        was given, and raises :class:`~kvstore.errors.LockError` otherwise.

        :raises UsageError: the backend cannot be used (e.g. it was closed).
        :raises BackendError: a non-transient engine error (a missing table, a rejected request).
        :raises LockError: :meth:`unlock` was called while this call waited (no ``stop`` given).
        """
        epoch = self._epoch
        async with self._mutex:
            if self._epoch != epoch:
                self._interrupted(stop)
                return None
            grant = self._grant
            if grant is not None:
                if self.held:
                    return grant.lost
                self._mark_lost(grant, "the lease ran out", release=True)  # if its task has not run yet
                await self._stop_tasks(grant)  # and wait for its release, which names our identity too
                self._grant = None
            if stop is not None and stop.is_set():
                return None
            task = asyncio.create_task(self._campaign(stop), name=f"lock-campaign:{self._key}")
            self._campaign_task = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait({task})
                raise
            finally:
                self._campaign_task = None
            if task.cancelled():  # by unlock()
                self._interrupted(stop)
                return None
            return task.result()

    def _interrupted(self, stop: asyncio.Event | None) -> None:
        """Raise :class:`LockError` for a lock() call that unlock() ended, unless it had a ``stop``
        event (then the call returns ``None``, as if ``stop`` had been set)."""
        if stop is None:
            raise LockError(f"lock {self._key!r}: unlock() was called while lock() was waiting")

    async def _campaign(self, stop: asyncio.Event | None) -> asyncio.Event | None:
        t = self._timings
        seen: _Sighting | None = None
        failures = 0
        while True:
            if stop is not None and stop.is_set():
                return None
            wait = t.retry_interval
            try:
                result = await self._try_acquire(seen)
            except BackendError as exc:
                if not is_transient(exc):
                    log.warning("lock %s: giving up the campaign: %r", self._key, exc)
                    raise
                # A transient failure while waiting is not fatal: read the record again next
                # round. What we saw before stays valid (a failure does not change the record).
                failures += 1
                _log_failure(self._key, "acquire attempt", failures, exc)
            else:
                failures = 0
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
        limit = self._timings.ttl - safety_margin(self._timings.ttl)
        for _ in range(2):
            sent = self._clock()
            wall = self._wall()
            self._may_hold = True
            try:
                granted = await self._store.acquire(
                    self._key,
                    identity=self._identity,
                    value=self._value,
                    ttl=self._timings.ttl,
                    expected_version=expected,
                )
            except LockRecordChanged as exc:
                current = exc.current
                if current is not None and current.identity == self._identity:
                    # The record moved, but in our own name: an earlier attempt of this request
                    # landed (the SDK retried after a lost reply) or a late renewal of an earlier
                    # grant did. Nobody else holds it, so take a fresh grant on what is there.
                    expected = current.version
                    continue
                return None  # someone else moved first; look again
            grant = _Grant(
                token=granted.fence, lost=asyncio.Event(), last_sent=sent, limit=limit,
                tick_lease=sent, tick_wall=wall, trusted_from=sent,
            )
            self._check_jump(grant)
            if grant.unconfirmed or self._clock() >= grant.deadline():
                # The reply came after the lease it grants ran out (or across a pause): acting on
                # it could overlap a takeover. The record is in our name, so the next round
                # takes a fresh grant at once, without waiting for anyone.
                log.warning(
                    "lock %s: grant %d arrived %.2fs after it was asked for, beyond its %.2fs lease; asking again",
                    self._key, granted.fence, self._clock() - sent, limit,
                )
                return None
            return grant
        return None

    def _start(self, grant: _Grant) -> asyncio.Event:
        self._grant = grant
        self._token = grant.token
        metrics.record_lock_held(self._key)
        log.debug("lock %s: granted, fencing token %d", self._key, grant.token)
        grant.tasks = [
            asyncio.create_task(self._guarded(grant, self._renew_loop), name=f"lock-renew:{self._key}"),
            asyncio.create_task(self._guarded(grant, self._watch_loop), name=f"lock-watch:{self._key}"),
            asyncio.create_task(self._guarded(grant, self._deadline_loop), name=f"lock-deadline:{self._key}"),
        ]
        return grant.lost

    def _check_jump(self, grant: _Grant) -> None:
        """Detect a pause the lease clock did not count: the wall clock moved further than it.

        The unseen time is charged to the lease (its deadline moves earlier by as much), the grant
        becomes unconfirmed until a renewal sent from now on lands, and the renew loop is woken
        to send one at once.
        """
        now, wall = self._clock(), self._wall()
        missed = (wall - grant.tick_wall) - (now - grant.tick_lease)
        grant.tick_lease, grant.tick_wall = now, wall
        if missed <= safety_margin(self._timings.ttl) / 2 or grant.lost.is_set():
            return
        grant.last_sent -= missed
        grant.trusted_from = now
        grant.unconfirmed = True
        grant.renew_due = now
        grant.wake.set()
        log.warning(
            "lock %s: the wall clock moved %.2fs further than the lease clock (a pause it did not count); "
            "lease charged, re-checking before acting as holder",
            self._key, missed,
        )

    def _mark_lost(self, grant: _Grant, why: str, *, release: bool = False) -> None:
        """Step down: set "lost", cancel the grant's tasks (no renewal goes out after this) and,
        with ``release``, free the record in the background if it is still in our name."""
        if not grant.lost.is_set():
            metrics.record_lock_released(self._key, grant.lost)
            log.warning("lock %s: leadership lost (%s), fencing token %d", self._key, why, grant.token)
            grant.lost.set()
        current = asyncio.current_task()
        for task in grant.tasks:
            if task is not current:
                task.cancel()
        if release and grant.release is None and not self._store.closed:
            grant.release = asyncio.create_task(self._release_after_loss(grant), name=f"lock-release:{self._key}")

    async def _release_after_loss(self, grant: _Grant) -> None:
        try:
            await self._release()
        except Exception as exc:
            log.info("lock %s: release after stepping down failed (the record frees itself): %r", self._key, exc)
        else:
            log.debug("lock %s: released after stepping down (fencing token %d)", self._key, grant.token)

    async def _guarded(self, grant: _Grant, loop: Callable[[_Grant], Awaitable[None]]) -> None:
        """Run a background loop; if it fails unexpectedly the holder can no longer vouch for its
        lease, so it steps down rather than let the failure pass silently."""
        try:
            await loop(grant)
        except Exception as exc:
            self._fail(grant, exc)

    def _fail(self, grant: _Grant, exc: Exception) -> None:
        if isinstance(exc, KVStoreError):  # e.g. BackendClosed, TableNotFound: no traceback needed
            log.warning("lock %s: background task stopped: %r", self._key, exc)
        else:
            log.error("lock %s: background task failed: %r", self._key, exc, exc_info=exc)
        # The record may still be in our name; releasing is pointless only on a closed backend.
        self._mark_lost(grant, f"background task failed: {exc!r}", release=not isinstance(exc, UsageError))

    async def _renew_loop(self, grant: _Grant) -> None:
        """Send renewals every ``renew_interval`` from the previous *send*, whether or not it has
        answered yet; a failed attempt is retried after ``retry_interval`` (if sooner), and a jump
        asks for one at once. Attempts run as tasks of their own, cancelled on stepping down."""
        t = self._timings
        attempts: set[asyncio.Task[None]] = set()
        next_at = grant.last_sent + t.renew_interval
        try:
            while not grant.lost.is_set():
                now = self._clock()
                due = min(next_at, grant.renew_due)
                if due > now:
                    grant.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(grant.wake.wait(), due - now)
                    continue
                if now >= grant.deadline():
                    return  # the deadline task steps down
                grant.renew_due = math.inf
                attempt = asyncio.create_task(self._renew_once(grant), name=f"lock-renewal:{self._key}")
                attempts.add(attempt)
                attempt.add_done_callback(attempts.discard)
                next_at = now + t.renew_interval
                await asyncio.sleep(0)  # let the attempt take its send time before looking again
        finally:
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    async def _renew_once(self, grant: _Grant) -> None:
        """Send one renewal; it moves the deadline itself when it lands, even late."""
        sent = self._clock()
        try:
            rec = await self._store.renew(self._key, identity=self._identity)
        except BackendError as exc:
            if not (is_transient(exc) or isinstance(exc, ConditionFailed)):
                metrics.record_renewal(self._key, "error")
                self._fail(grant, exc)
                return
            # Ambiguous: the write may or may not have landed. Either way the record is still in
            # our name (renewals are conditioned on our identity, not on a version), so the next
            # attempt succeeds if we still hold it. Only a renewal seen to land moves the deadline.
            grant.renew_failures += 1
            metrics.record_renewal(self._key, "failed")
            _log_failure(self._key, "renewal", grant.renew_failures, exc)
            grant.renew_due = min(grant.renew_due, self._clock() + self._timings.retry_interval)
            grant.wake.set()
            return
        except Exception as exc:
            metrics.record_renewal(self._key, "error")
            self._fail(grant, exc)
            return
        if grant.lost.is_set():
            return  # landed after we stepped down: it proves nothing any more
        if rec is None or rec.fence != grant.token:
            metrics.record_renewal(self._key, "lost")
            self._mark_lost(grant, "the record is gone or held by another grant at renewal")
            return
        grant.renew_failures = 0
        metrics.record_renewal(self._key, "ok")
        if sent < grant.trusted_from:
            return  # sent before a pause the lease clock missed: its send time is not to be trusted
        grant.last_sent = max(grant.last_sent, sent)
        grant.unconfirmed = False

    async def _watch_loop(self, grant: _Grant) -> None:
        while not grant.lost.is_set():
            await asyncio.sleep(self._timings.watch_interval)
            try:
                rec = await self._store.read(self._key)
            except BackendError as exc:
                if not is_transient(exc):
                    raise
                grant.watch_failures += 1
                _log_failure(self._key, "watch read", grant.watch_failures, exc)
                continue  # the deadline covers a store we cannot reach
            grant.watch_failures = 0
            if rec is None or rec.identity != self._identity or rec.fence != grant.token:
                self._mark_lost(grant, "the watcher saw another identity or no record")
                return

    async def _deadline_loop(self, grant: _Grant) -> None:
        tick = min(grant.limit / 4, MAX_TICK_SECONDS)
        while not grant.lost.is_set():
            if self._store.closed:
                self._mark_lost(grant, "the backend was closed")
                return
            self._check_jump(grant)
            remaining = grant.deadline() - self._clock()
            if remaining <= 0:
                self._mark_lost(grant, f"no renewal known to have landed within {grant.limit:.2f}s", release=True)
                return
            await asyncio.sleep(min(remaining, tick))

    @staticmethod
    async def _stop_tasks(grant: _Grant) -> None:
        """Cancel the grant's loops and wait for them, and for its release after a loss (bounded)."""
        tasks, grant.tasks = grant.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if grant.release is not None:
            await asyncio.wait({grant.release})

    async def _release(self) -> None:
        """Release the record if in our name, within :func:`release_timeout`."""
        limit = release_timeout(self._timings.ttl)
        try:
            async with asyncio.timeout(limit):
                await self._store.release(self._key, identity=self._identity)
        except TimeoutError as exc:
            raise EngineUnavailable(
                f"lock {self._key!r}: release not confirmed within {limit:g}s; "
                "the record frees itself a TTL after the last renewal"
            ) from exc
        self._may_hold = False

    async def unlock(self) -> None:
        """Step down and release at once: a contender may take the record without waiting.

        Sets the "lost" event first; cancels a :meth:`lock` call of this object still
        campaigning (so no grant can appear after this returns); stops the background tasks (no
        renewal is sent after this returns); then releases the record if it may be in this
        object's name. The release is conditional on our identity, so it never touches a later
        holder's record, never re-creates a record, and keeps the fencing counter. It is best
        effort and bounded by :func:`release_timeout` (a partitioned holder does not wait out the
        client's read timeout). Idempotent.

        :raises BackendError: the release failed or timed out (``EngineUnavailable``); the record
            then frees itself a TTL after the last renewal.
        :raises BackendClosed: the backend was closed; the tasks are stopped all the same.
        """
        self._epoch += 1
        grant = self._grant
        if grant is not None:
            metrics.record_lock_released(self._key, grant.lost)
            grant.lost.set()
        campaign = self._campaign_task
        if campaign is not None and not campaign.done():
            campaign.cancel()
        async with self._mutex:  # the cancelled lock() call, and any made before this, end first
            grant, self._grant = self._grant, None
            if grant is not None:
                metrics.record_lock_released(self._key, grant.lost)
                grant.lost.set()
                await self._stop_tasks(grant)
            if not self._may_hold:
                return
            await self._release()


def _log_failure(key: str, what: str, failures: int, exc: BaseException) -> None:
    """Log a transient failure: at debug level, and as a warning every :data:`WARN_EVERY` in a row."""
    if failures % WARN_EVERY == 0:
        log.warning("lock %s: %s failed %d times in a row, still retrying: %r", key, what, failures, exc)
    else:
        log.debug("lock %s: %s failed, retrying: %r", key, what, exc)


async def _wait_for(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True if stop was set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
