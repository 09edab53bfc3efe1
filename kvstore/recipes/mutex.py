"""Mutex: a distributed mutual-exclusion lock with a lease and a fencing token.

The simple lock API of small DynamoDB lock packages (acquire with retries and a timeout, release,
lock status, typed "table not active" and "timeout" errors), built on the backend's HA lock
(:meth:`~kvstore.backend.HABackend.lock_with`) so that it is also *correct*:

- **A crashed holder does not keep it forever.** The grant is a lease, renewed in the background;
  when the holder stops renewing (crash, SIGKILL, network partition) a waiter takes over after one
  TTL of silence, measured on the waiter's own clock.
- **Only the holder can release it.** Release is conditional on this holder's identity; releasing a
  mutex this object does not hold raises :class:`~kvstore.errors.LockNotHeld` and touches nothing.
- **A holder learns it lost the lease** (``mutex.lost`` is set, ``state`` is LOST), and every grant
  carries a **fencing token** that only grows: pass ``mutex.fence`` to
  :meth:`~kvstore.backend.ConditionalBackend.commit` so the store itself refuses writes from a
  holder that was replaced while paused.
- **Typed errors.** :class:`~kvstore.errors.LockTimeout` when the mutex was not acquired in time;
  :class:`~kvstore.errors.TableNotFound` / :class:`~kvstore.errors.TableNotActive` when the table is
  missing or unusable, and :class:`~kvstore.errors.RequestRejected` (or its
  :class:`~kvstore.errors.AccessDenied`) when the engine refuses the requests, before or while
  waiting. The lease lock retries engine errors while it waits, so without these checks a deleted
  table or refused credentials would look like a lock held forever. Only transient errors
  (:func:`~kvstore.errors.is_transient`: unreachable, throttled...) are waited out.

Usage::

    async with Mutex(backend, "jobs/nightly", timeout=30, ttl=15) as m:
        await backend.commit([Write(Operation.PUT, entry)], fence=m.fence)

The block is not cancelled when the lease is lost: check ``m.lost`` (or fence the writes) in long
blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from kvstore.backend import Fence, HABackend
from kvstore.errors import (
    BackendError,
    LockNotHeld,
    LockTimeout,
    UsageError,
    is_transient,
)
from kvstore.keys import validate_key
from kvstore.lockclient import LockClient, LockSpec
from kvstore.recipes.durations import check_seconds

__all__ = ["Mutex", "MutexState", "MutexStatus"]

log = logging.getLogger(__name__)

#: The errors a read of the lock record may raise that this module looks at.
_CHECKED = (UsageError, BackendError)


def _fatal(exc: BaseException) -> bool:
    """Whether ``exc`` means the lock cannot be taken at all, however long one waits.

    Usage errors and every engine error that is not transient: a missing or inactive table, a
    rejected request, refused credentials, an unknown engine code. Waiting out such an error
    would only turn it into a LockTimeout (or a wait forever) that hides the real cause.
    """
    return isinstance(exc, UsageError) or (isinstance(exc, BackendError) and not is_transient(exc))


class MutexState(enum.Enum):
    """Where a :class:`Mutex` object stands, as this process knows it."""

    UNLOCKED = "unlocked"
    """Not held by this object (never acquired, or released)."""
    LOCKED = "locked"
    """Held by this object, and the lease has not been lost."""
    LOST = "lost"
    """Acquired by this object, but the lease was lost since; ``release()`` to reset."""


@dataclass(frozen=True, slots=True)
class MutexStatus:
    """Who holds a mutex, as the store records it now.

    ``held`` is True while some holder's grant is recorded (a holder that died without releasing
    still counts until a waiter takes over, a TTL of silence later); ``holder`` is that holder's
    value (``""`` when free); ``mine`` is whether this object holds it.
    """

    held: bool
    holder: str
    mine: bool


class _Default(enum.Enum):
    DEFAULT = "default"


_DEFAULT: Final = _Default.DEFAULT


def _default_value() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Mutex:
    """A distributed mutex named ``name`` on ``backend`` (an async context manager).

    :param value: what :meth:`status` reports while this object holds it (default
        ``host:pid:random``, unique per Mutex).
    :param timeout: default for :meth:`acquire`: seconds to wait (``None``: forever; ``0``: one
        attempt).
    :param ttl: the lease; a crashed holder blocks others for about this long. ``None``: the
        backend's default (15 s, Vault's).
    :param renew_interval: how often the holder renews (``None``: the backend's default).
    :param retry_interval: how often a waiter looks again (``None``: the backend's default, 1 s).
    :param check_interval: how often a waiter checks that the table is still there (the lock's own
        retries take any engine error for a passing one). Default 5 s.

    Making a Mutex does no I/O. One object holds at most one grant; acquiring again while held
    returns at once. Objects are independent: two Mutex objects with one name contend, even in one
    process.
    """

    def __init__(
        self,
        backend: HABackend,
        name: str,
        *,
        value: str | None = None,
        timeout: float | None = None,
        ttl: float | None = None,
        renew_interval: float | None = None,
        retry_interval: float | None = None,
        check_interval: float = 5.0,
    ) -> None:
        validate_key(name)
        if timeout is not None:
            check_seconds("mutex timeout", timeout, allow_zero=True)
        check_seconds("mutex check_interval", check_interval)
        self._name = name
        self._value = _default_value() if value is None else value
        self._timeout = timeout
        self._check_interval = check_interval
        spec = LockSpec(name, self._value, ttl=ttl, renew_interval=renew_interval, retry_interval=retry_interval)
        self._client = LockClient(backend, spec, kind="mutex")
        self._lock = self._client.lock
        self._lost: asyncio.Event | None = None

    @property
    def name(self) -> str:
        """The mutex's name (a key; its record is hidden from ``list``)."""
        return self._name

    @property
    def value(self) -> str:
        """What this object advertises while it holds the mutex."""
        return self._value

    @property
    def state(self) -> MutexState:
        """UNLOCKED, LOCKED or LOST (see :class:`MutexState`); no I/O."""
        if self._lost is None:
            return MutexState.UNLOCKED
        return MutexState.LOST if self._lost.is_set() else MutexState.LOCKED

    @property
    def locked(self) -> bool:
        """Whether this object holds the mutex and has not lost the lease."""
        return self.state is MutexState.LOCKED

    @property
    def lost(self) -> asyncio.Event:
        """Set the moment this holder must stop acting as the owner (lease lost or released).

        :raises LockNotHeld: the mutex was never acquired by this object.
        """
        if self._lost is None:
            raise LockNotHeld(f"mutex {self._name!r} is not held by this object")
        return self._lost

    @property
    def fencing_token(self) -> int:
        """The fencing token of this object's latest grant (grows with every grant, never reused).

        :raises LockNotHeld: the mutex was never acquired by this object.
        """
        return self._client.fencing_token

    @property
    def fence(self) -> Fence:
        """A commit condition that holds only while this grant is the mutex's current one."""
        return self._client.fence

    async def status(self) -> MutexStatus:
        """Who holds the mutex now (one consistent read).

        :raises TableNotFound: the table does not exist.
        """
        held, holder = await self._lock.value()
        return MutexStatus(held, holder, self.locked)

    # The timeout bounds the wait only and must raise LockTimeout: asyncio.timeout() cannot say that.
    async def acquire(self, *, timeout: float | _Default | None = _DEFAULT) -> int:  # noqa: ASYNC109
        """Wait until this object holds the mutex; return the grant's fencing token.

        ``timeout`` overrides the constructor's (``None``: wait forever; ``0``: one attempt).
        Cancelling the wait leaves nothing behind.

        :raises LockTimeout: not acquired within ``timeout`` (the message names the holder).
        :raises TableNotFound: the table is missing, found before or while waiting.
        :raises TableNotActive: the backend reports the table unusable.
        :raises RequestRejected: the engine refuses the lock's requests (AccessDenied: the
            credentials), found before or while waiting; likewise any other non-transient error.
        """
        limit = self._timeout if timeout is _DEFAULT else timeout
        if limit is not None:
            check_seconds("mutex timeout", limit, allow_zero=True)
        if self.locked:
            return self.fencing_token
        await self._check_usable()
        stop = asyncio.Event()
        fatal: list[BaseException] = []
        checker = asyncio.create_task(self._watch_usable(stop, fatal), name=f"mutex-check:{self._name}")
        try:
            lost = await self._client.acquire(limit, stop)  # released again if it gives up or fails
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
        if lost is None:
            if fatal:
                raise fatal[0]
            raise LockTimeout(f"mutex {self._name!r}: not acquired within {limit}s ({await self._holder()})")
        self._lost = lost
        log.debug("mutex %s: acquired by %s, fencing token %d", self._name, self._value, self.fencing_token)
        return self.fencing_token

    async def release(self) -> None:
        """Release the mutex at once (a waiter may take it immediately).

        Releasing after the lease was lost only resets this object: the store is touched only if
        the record is still in this holder's name. Not cancellable halfway.

        :raises LockNotHeld: this object does not hold the mutex (it never acquired, or released).
        :raises BackendError: the release failed; the lease then frees itself a TTL later.
        """
        if self._lost is None:
            raise LockNotHeld(f"mutex {self._name!r} is not held by this object")
        self._lost = None
        await self._client.release()

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lost is None:
            return  # released inside the block
        self._lost = None
        await self._client.release(quiet=exc is not None)  # the block's exception matters more

    # -- internals ----------------------------------------------------------------------------

    async def _check_usable(self) -> None:
        """Read the lock record once, so a missing table fails now rather than after the timeout.

        A transient failure (see :func:`_fatal`) is waited out; anything else is raised.
        """
        try:
            await self._lock.value()
        except _CHECKED as exc:
            if _fatal(exc):
                raise
            log.debug("mutex %s: status read failed, waiting anyway: %r", self._name, exc)

    async def _watch_usable(self, stop: asyncio.Event, fatal: list[BaseException]) -> None:
        """While a wait lasts, re-read the lock record; stop the wait on an error waiting cannot cure."""
        while not stop.is_set():
            await asyncio.sleep(self._check_interval)
            try:
                await self._lock.value()
            except _CHECKED as exc:
                if not _fatal(exc):
                    log.debug("mutex %s: check read failed: %r", self._name, exc)
                    continue
                log.warning("mutex %s: giving up the wait: %r", self._name, exc)
                fatal.append(exc)
                stop.set()
                return

    async def _holder(self) -> str:
        """A description of the current holder for error messages (a failed read raises fatal errors)."""
        try:
            held, holder = await self._lock.value()
        except _CHECKED as exc:
            if _fatal(exc):
                raise
            return f"holder unknown: {exc}"
        return f"held by {holder!r}" if held else "it was just released"

