"""Election: leader election on any HA backend, with fencing tokens.

A :class:`~kvstore.backend.Lock` is the primitive; an :class:`Election` wraps it the way etcd's
``concurrency.Election`` wraps a session: campaign until leader, learn the moment leadership is lost,
resign on the way out, and read who leads. Each period of leadership is a :class:`Term` that carries
the lock's fencing token, so writes made as leader can be fenced (:mod:`kvstore.fencing`) and the late
writes of a replaced leader (one that was paused, say) are refused by the store itself.

Works on every :class:`~kvstore.backend.HABackend` (``InmemBackend``, ``DynamoDBBackend``)::

    import asyncio
    from kvstore import Entry, FenceRejected
    from kvstore.dynamodb import DynamoDBBackend
    from kvstore.election import Election
    from kvstore.fencing import fenced_put

    async with await DynamoDBBackend.create({"table": "kv", "ha_enabled": "true"}) as store:
        election = Election(store, "service/leader", "node-1")   # lock name, advertised value
        print(await election.leader())              # the leader's value, or None: nobody leads

        async with election.campaign() as term:     # blocks until this node leads
            print("leading, fencing token", term.fencing_token)      # an int that only grows
            while term.is_leader:                   # False once term.lost is (about to be) set
                try:
                    await fenced_put(store, Entry("service/state", b"..."), fence=term.fence)
                except FenceRejected:
                    break                           # replaced meanwhile: the store refused it
                await asyncio.sleep(1)
        # leaving the block resigns (releases at once), also on an exception or a cancellation

A command that holds leadership until it is interrupted (what ``kvstore lock NAME --value V`` does)::

    from kvstore import LockLost, LockTimeout

    election = Election(store, name, value)
    async with election.campaign(timeout=30) as term:   # raises LockTimeout if not leader in 30 s
        print(term.fencing_token, flush=True)
        await term.lost.wait()                           # Ctrl-C / SIGTERM: cancel this; it resigns
        raise LockLost(term.name, term.fencing_token)    # lost it: exit non-zero

Or let the election run a coroutine whenever this node leads; it is cancelled when leadership is
lost, and the election campaigns again::

    async def serve(term: Term) -> None: ...
    await election.run_as_leader(serve)

Timings (``ttl``, ``renew_interval``, ``watch_interval``, ``retry_interval``; seconds) default to the
backend's configuration (``lock_ttl``... for DynamoDB) and can be overridden per election.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from kvstore.backend import Fence, HABackend, Lock
from kvstore.errors import InvalidValue, LockLost, LockTimeout
from kvstore.keys import validate_lock_name
from kvstore.lockclient import LockClient, LockSpec

__all__ = ["Election", "Term"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Term:
    """One period of leadership: from a won campaign until resignation or loss.

    ``fencing_token`` grows with every grant of the lock, across nodes, releases and takeovers;
    ``lost`` is set the moment this node must stop acting as leader.
    """

    __slots__ = ("_lock", "fencing_token", "lost", "name", "value")

    def __init__(self, name: str, value: str, fencing_token: int, lost: asyncio.Event, lock: Lock) -> None:
        self.name = name
        """The election's (the lock's) name."""
        self.value = value
        """The value this node advertises while it leads."""
        self.fencing_token = fencing_token
        """The fencing token of this term's grant (an ``int``)."""
        self.lost = lost
        """Set when leadership is lost or resigned; never cleared."""
        self._lock = lock

    @property
    def fence(self) -> Fence:
        """The write condition "this term is still the lock's current grant" (see :mod:`kvstore.fencing`)."""
        return Fence(self.name, self.fencing_token)

    @property
    def is_leader(self) -> bool:
        """Whether this term still leads, judged now on the local clock.

        Stricter than ``not lost.is_set()``: right after a process pause the lease may have run out
        before the background task that sets ``lost`` got to run.
        """
        return not self.lost.is_set() and self._lock.held

    def raise_if_lost(self) -> None:
        """Raise :class:`~kvstore.errors.LockLost` unless this term still leads (:attr:`is_leader`)."""
        if not self.is_leader:
            raise LockLost(self.name, self.fencing_token)

    def __repr__(self) -> str:
        state = "leading" if self.is_leader else "lost"
        return f"Term(name={self.name!r}, value={self.value!r}, fencing_token={self.fencing_token}, {state})"


class Election:
    """Leader election named ``name`` on ``backend``; this node advertises ``value`` while it leads.

    An Election object may campaign many times, one term after another; each campaign uses a new
    lock (a new identity), so two concurrent campaigns of one object compete like two nodes.

    :raises InvalidKey: ``name`` cannot name a lock (:func:`kvstore.keys.validate_lock_name`).
    :raises ConfigError: a timing is invalid (a renew interval at or beyond the TTL only warns).
    """

    def __init__(
        self,
        backend: HABackend,
        name: str,
        value: str,
        *,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> None:
        validate_lock_name(name)
        if not isinstance(value, str):
            raise InvalidValue(f"election value must be str, not {type(value).__name__}")
        spec = LockSpec(name, value, ttl, renew_interval, watch_interval, retry_interval)
        # Never locked: it only reads the record for leader(). Made here so bad timings fail (and
        # a stalled holder's timings warn) now; each campaign takes a fresh() client of it.
        self._observer = LockClient(backend, spec, kind="election")

    @property
    def name(self) -> str:
        """The election's name (the lock's key)."""
        return self._observer.spec.name

    @property
    def value(self) -> str:
        """The value this node advertises while it leads."""
        return self._observer.spec.value

    async def leader(self) -> str | None:
        """The current leader's value, or ``None`` when nobody holds the lock.

        A leader that died without resigning still shows until a contender takes over, a TTL of
        silence later: a single read cannot tell a silent leader from a dead one.
        """
        held, value = await self._observer.lock.value()
        return value if held else None

    @contextlib.asynccontextmanager
    # The timeout bounds the campaign only, not the block: asyncio.timeout() cannot say that.
    async def campaign(self, *, timeout: float | None = None) -> AsyncIterator[Term]:  # noqa: ASYNC109
        """Block until this node leads, yield its :class:`Term`, and resign when the block exits.

        Resigning releases the lock at once, so another candidate may take over immediately. It
        happens on every exit: normal, exception, or cancellation, during the campaign as well as
        while leading. An exception from the block always propagates as it was; a failure to
        resign is then only logged (the lease frees itself a TTL later). After a normal exit a
        failed resignation raises.

        The block is not cancelled when leadership is lost: watch ``term.lost`` (or use
        :meth:`run_as_leader`), and fence writes with ``term.fence``.

        :raises LockTimeout: ``timeout`` seconds passed without winning.
        :raises BackendError: resigning failed after the block exited normally.
        """
        if timeout is not None and not timeout >= 0:
            raise InvalidValue(f"campaign timeout must be >= 0 seconds, not {timeout!r}")
        client = self._observer.fresh()
        lost = await client.acquire(timeout)  # having given up, it released: nothing is left behind
        if lost is None:
            raise LockTimeout(f"election {self.name!r}: not leader within {timeout}s")
        term = Term(self.name, self.value, client.fencing_token, lost, client.lock)
        log.info("election %s: %r leads, fencing token %d", self.name, self.value, term.fencing_token)
        try:
            yield term
        except BaseException:
            await client.release(quiet=True)
            raise
        await client.release()

    async def run_as_leader(self, fn: Callable[[Term], Awaitable[T]]) -> T:
        """Campaign, run ``fn(term)`` while leading, and campaign again each time leadership is lost.

        ``fn`` is cancelled when its term is lost; this then resigns (freeing the record if it is
        still in our name) and campaigns for a new term, calling ``fn`` again with it. When ``fn``
        returns, this resigns and returns its result. An exception from ``fn`` resigns and
        propagates. Cancelling this call cancels ``fn`` and resigns.
        """
        while True:
            async with self.campaign() as term:
                body: asyncio.Future[T] = asyncio.ensure_future(fn(term))
                lost = asyncio.ensure_future(term.lost.wait())
                either: set[asyncio.Future[Any]] = {body, lost}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not body.done():
                        body.cancel()
                    # Let fn finish its own clean-up before we resign (a cancellation of ours
                    # arriving meanwhile still propagates from this wait).
                    await asyncio.wait({body})
                if not body.cancelled():
                    return body.result()  # fn returned or raised on its own: that is the outcome
            log.info("election %s: term %d lost; campaigning again", self.name, term.fencing_token)

