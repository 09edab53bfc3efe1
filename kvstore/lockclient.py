"""The lock client: what :class:`~kvstore.election.Election` and :class:`~kvstore.recipes.Mutex` do
with a :class:`~kvstore.backend.Lock`, written once (etcd's Election and Mutex share one Session).

- :class:`LockSpec` is :meth:`~kvstore.backend.HABackend.lock_with`'s arguments as one value: the
  lock's name and advertised value, and its timings (``None``: the backend's configured default).
- :class:`LockClient` holds one lock made from a spec and knows how to acquire it within a timeout
  or until a stop event, how to release it without being cut off halfway, and the fencing token
  and :class:`~kvstore.backend.Fence` of its latest grant.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass

from kvstore.backend import Fence, HABackend, Lock
from kvstore.errors import LockNotHeld

__all__ = ["LockClient", "LockSpec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LockSpec:
    """What a lock is made from: its name (a lock key), the value it advertises while held, and
    its timings in seconds (``None``: the backend's configured default)."""

    name: str
    value: str
    ttl: float | None = None
    renew_interval: float | None = None
    watch_interval: float | None = None
    retry_interval: float | None = None

    def new_lock(self, backend: HABackend) -> Lock:
        """A new lock (a new identity) on ``backend``; no I/O.

        :raises ConfigError: a timing is invalid (a renew interval at or beyond the TTL only warns).
        """
        return backend.lock_with(
            self.name,
            self.value,
            ttl=self.ttl,
            renew_interval=self.renew_interval,
            watch_interval=self.watch_interval,
            retry_interval=self.retry_interval,
        )


class LockClient:
    """One lock made from ``spec`` on ``backend``, used by a ``kind`` of client ("election", "mutex").

    ``kind`` only names the client in errors and log lines. ``warn=False`` silences the
    RuntimeWarning about a renew interval at or beyond the TTL (see :meth:`fresh`).
    """

    __slots__ = ("_backend", "_kind", "_lock", "_spec", "_token")

    def __init__(self, backend: HABackend, spec: LockSpec, *, kind: str, warn: bool = True) -> None:
        self._backend = backend
        self._spec = spec
        self._kind = kind
        if warn:
            self._lock = spec.new_lock(backend)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self._lock = spec.new_lock(backend)
        self._token: int | None = None

    def fresh(self) -> LockClient:
        """A client on a new lock (a new identity) from the same spec, without warning again."""
        return LockClient(self._backend, self._spec, kind=self._kind, warn=False)

    @property
    def lock(self) -> Lock:
        """The lock this client holds (or reads)."""
        return self._lock

    @property
    def spec(self) -> LockSpec:
        """What this client's locks are made from (their name, value and timings)."""
        return self._spec

    @property
    def fencing_token(self) -> int:
        """The fencing token of this client's latest grant.

        :raises LockNotHeld: :meth:`acquire` never returned a grant.
        """
        if self._token is None:
            raise LockNotHeld(f"{self._kind} {self._spec.name!r} was never acquired by this object")
        return self._token

    @property
    def fence(self) -> Fence:
        """The write condition "this client's latest grant is the lock's current one" (:mod:`kvstore.fencing`).

        :raises LockNotHeld: :meth:`acquire` never returned a grant.
        """
        return Fence(self._spec.name, self.fencing_token)

    # The timeout bounds the wait only: asyncio.timeout() would raise rather than return None.
    async def acquire(self, timeout: float | None = None, stop: asyncio.Event | None = None) -> asyncio.Event | None:  # noqa: ASYNC109
        """Block until held; return the "lost" event, or ``None`` once ``timeout`` seconds passed
        or ``stop`` was set first.

        Whatever ends the call without a grant (giving up, an error, a cancellation) releases the
        lock quietly before returning or raising: an acquire in flight may have landed.

        :raises BackendError: a non-transient engine error while waiting (see :meth:`Lock.lock`).
        :raises LockError: the lock was unlocked while this waited, with neither timeout nor stop.
        """
        try:
            lost = await self._lock_within(timeout, stop)
        except BaseException:
            await self.release(quiet=True)
            raise
        if lost is None:
            await self.release(quiet=True)
            return None
        self._token = self._lock.fencing_token
        return lost

    async def _lock_within(self, timeout: float | None, stop: asyncio.Event | None) -> asyncio.Event | None:  # noqa: ASYNC109
        if timeout is None:
            return await self._lock.lock(stop)
        stop = asyncio.Event() if stop is None else stop
        timer = asyncio.get_running_loop().call_later(timeout, stop.set)
        try:
            return await self._lock.lock(stop)
        finally:
            timer.cancel()

    async def release(self, *, quiet: bool = False) -> None:
        """Unlock, shielded: a cancellation arriving meanwhile cannot stop the release halfway.

        Cancelled meanwhile, the release goes on in the background (a failure of it is logged)
        and the cancellation propagates. ``quiet``: an exception is already on its way, so a
        failure here is only logged rather than raised in its place.

        :raises BackendError: the release failed (not ``quiet``); the lease frees itself a TTL later.
        """
        release = asyncio.ensure_future(self._lock.unlock())
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            release.add_done_callback(self._log_failure)
            raise
        except Exception:
            if not quiet:
                raise
            self._log_failure(release)

    def _log_failure(self, release: asyncio.Future[None]) -> None:
        if not release.cancelled() and release.exception() is not None:
            log.warning(
                "%s %s: release failed (the lease frees itself after its TTL): %r",
                self._kind, self._spec.name, release.exception(),
            )
