"""Versioned writes (compare-and-swap), read-modify-write with retries, and multi-key atomic blocks.

Optimistic concurrency on any :class:`~kvstore.backend.ConditionalBackend`, in the style of
PynamoDB's version attribute and etcd/Consul CAS: read a key with its opaque version token, then
write it only if it still holds that version. Every write of a key, plain ``put`` included, gives
it a new version, so a plain put invalidates every CAS holder's token.

- :func:`get_versioned` reads ``(entry, version)`` (a consistent read).
- :func:`put_versioned` / :func:`create` / :func:`delete_versioned` write if the key holds a given
  version (or, with :data:`~kvstore.backend.ABSENT`, if it does not exist). A mismatch raises
  :class:`~kvstore.errors.VersionConflict` carrying ``key``, ``expected`` and ``current``, the
  key's :class:`~kvstore.backend.VersionedEntry` as it is now (``None`` when absent).
- :func:`update` is read-modify-write: it calls ``fn`` on the current value and writes the result
  conditionally, retrying with backoff on conflict. A retry starts from ``VersionConflict.current``,
  so contention costs no extra read.
- :func:`atomic` runs a block over several keys like etcd's STM: reads are recorded with their
  versions, writes are buffered, and the whole block commits as one ``commit()`` (one
  TransactWriteItems on DynamoDB) that requires every key read to be unchanged. On conflict the
  block runs again.

How a single conditional write travels on DynamoDB (pointers first, no transaction) was chosen by
measurement: see benchmarks/README.md, "CAS: how a versioned write reaches DynamoDB".
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from kvstore.backend import ABSENT, Absent, Check, ConditionalBackend, VersionedEntry, Write
from kvstore.entry import Entry, Operation
from kvstore.errors import ConfigError, RetriesExhausted, TransactionConflict, VersionConflict, is_transient
from kvstore.keys import validate_key
from kvstore.limits import check_entry

__all__ = [
    "DEFAULT_RETRY",
    "RetryPolicy",
    "Txn",
    "atomic",
    "create",
    "delete_versioned",
    "get_versioned",
    "put_versioned",
    "update",
]

T = TypeVar("T")

UpdateFn = Callable[[bytes | None], bytes | Awaitable[bytes | None] | None]
"""What :func:`update` calls: the current value (``None`` when absent) -> the new value
(``None`` deletes the key). May be a plain function or a coroutine function."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a conflicting optimistic write is retried.

    ``attempts`` counts every try, the first included. Before retry ``n`` (0-based) the writer
    sleeps a uniform random time in ``[0, min(max_delay, base_delay * 2**n)]`` ("full jitter"):
    writers that collided spread apart instead of colliding again in lock-step, and a hot key is
    not hammered with conditional writes that are bound to fail (each costs a write unit).

    Backoff cannot make one key take more than one write at a time: with N writers racing on a
    key, the unluckiest needs about N attempts whatever the delays (measured with 20 writers on
    DynamoDB Local and in memory: 13-20 attempts for the last one, ~9 on average). So choose
    ``attempts`` at least as large as the number of writers you expect on one key. The defaults
    (32 attempts, 2 ms doubling up to 100 ms) cover 20 writers in about a second.
    """

    attempts: int = 32
    base_delay: float = 0.002
    max_delay: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"retry attempts must be a positive int, not {self.attempts!r}")
        for name in ("base_delay", "max_delay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ConfigError(f"retry {name.replace('_', ' ')} must be a number >= 0, not {v!r}")

    def delay(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based)."""
        cap = min(self.max_delay, self.base_delay * (2 ** min(retry, 30)))
        return random.uniform(0.0, cap)


#: The policy used when none is given.
DEFAULT_RETRY = RetryPolicy()


async def get_versioned(store: ConditionalBackend, key: str) -> VersionedEntry | None:
    """The entry under ``key`` and its version token (a consistent read), or ``None`` when missing.

    The token is opaque: compare it for equality, pass it back as ``if_version``, nothing else.
    """
    return await store.get_versioned(key)


async def put_versioned(store: ConditionalBackend, entry: Entry, *, if_version: str | Absent | None) -> str:
    """Write ``entry`` if its key holds version ``if_version``; return the new version.

    ``if_version`` is a token from :func:`get_versioned` (update), :data:`~kvstore.backend.ABSENT`
    (create only) or ``None`` (unconditional, like ``put``, but returning the version). The folder
    pointers of the key are written too, so the key is listed like any other.

    :raises VersionConflict: the key holds another version (or exists, for ABSENT); ``current`` is
        what it holds now. Nothing was written.
    """
    versions = await store.commit([Write(Operation.PUT, entry, if_version)])
    return versions[entry.key]


async def create(store: ConditionalBackend, entry: Entry) -> str:
    """Write ``entry`` only if its key does not exist yet; return the new version.

    :raises VersionConflict: the key exists; ``current`` is its entry and version.
    """
    return await put_versioned(store, entry, if_version=ABSENT)


async def delete_versioned(store: ConditionalBackend, key: str, *, if_version: str | Absent | None) -> None:
    """Delete ``key`` if it holds version ``if_version`` (``ABSENT``: succeed only if already gone).

    A stale token fails: a delete never removes a value its caller has not seen.

    :raises VersionConflict: the key holds another version; ``current`` is what it holds now.
    """
    validate_key(key)
    await store.commit([Write(Operation.DELETE, Entry(key), if_version)])


async def update(
    store: ConditionalBackend,
    key: str,
    fn: UpdateFn,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> VersionedEntry | None:
    """Read ``key``, compute ``fn(value)``, and write the result only if nobody wrote in between.

    ``fn`` receives the current value (``None`` when the key is absent) and returns the new value,
    or ``None`` to delete the key (when the key is already absent, nothing is written). It may run
    several times, so it must not have side effects. On a conflict the next attempt starts from the
    value the conflict reported (no extra read) after a jittered backoff (see :class:`RetryPolicy`);
    a transaction conflict (another transaction touched the item) re-reads.

    Only conflicts are retried. Any other error propagates at once: engine errors are retried by
    the SDK and the backend already, and a rejected request (:class:`~kvstore.errors.RequestRejected`)
    or a missing table fails the same way on every attempt.

    :returns: the stored entry with its new version, or ``None`` when the key ends up absent.
    :raises RetriesExhausted: every attempt met a conflict; ``last`` is the final conflict.
    """
    validate_key(key)
    current = await store.get_versioned(key)
    reread = False
    last: BaseException | None = None
    for attempt in range(retry.attempts):
        if attempt > 0:
            await asyncio.sleep(retry.delay(attempt - 1))
        if reread:
            current, reread = await store.get_versioned(key), False
        result = fn(current.entry.value if current is not None else None)
        new = await result if inspect.isawaitable(result) else result
        expected: str | Absent = current.version if current is not None else ABSENT
        try:
            if new is None:
                if current is None:
                    return None
                await store.commit([Write(Operation.DELETE, Entry(key), expected)])
                return None
            entry = Entry(key, new)
            versions = await store.commit([Write(Operation.PUT, entry, expected)])
            return VersionedEntry(entry, versions[key])
        except VersionConflict as exc:
            last = exc
            if exc.key == key:
                current = exc.current  # what the key holds now (None: absent)
            else:
                reread = True
        except TransactionConflict as exc:
            if not is_transient(exc):
                raise  # cancelled for a reason the next attempt meets again (see is_transient)
            last = exc
            reread = True
    raise RetriesExhausted(
        f"update of {key!r} gave up after {retry.attempts} conflicting attempts", attempts=retry.attempts, last=last
    ) from last


class Txn:
    """The view of the store inside an :func:`atomic` block.

    Reads go to the store once per key (a consistent read) and are remembered with their version;
    later reads of the key return the remembered value, or what the block itself wrote. Writes are
    buffered until the block returns. Nothing is visible to others before the commit.
    """

    def __init__(self, store: ConditionalBackend, seed: Mapping[str, VersionedEntry | None] | None = None) -> None:
        self._store = store
        self._seed: dict[str, VersionedEntry | None] = dict(seed or {})
        self._reads: dict[str, str | Absent] = {}
        self._values: dict[str, bytes | None] = {}
        self._writes: dict[str, bytes | None] = {}

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` as this block sees it (``None`` when absent or deleted here)."""
        validate_key(key)
        if key in self._writes:
            return self._writes[key]
        if key not in self._reads:
            if key in self._seed:
                current = self._seed.pop(key)
            else:
                current = await self._store.get_versioned(key)
            self._reads[key] = current.version if current is not None else ABSENT
            self._values[key] = current.entry.value if current is not None else None
        return self._values[key]

    def put(self, key: str, value: bytes) -> None:
        """Buffer a write of ``key``; it lands with the commit, or not at all."""
        check_entry(Entry(key, value))
        self._writes[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Buffer a delete of ``key``."""
        validate_key(key)
        self._writes[key] = None

    @property
    def reads(self) -> dict[str, str | Absent]:
        """The version each key read so far was seen at (``ABSENT`` for a missing key)."""
        return dict(self._reads)

    @property
    def writes(self) -> dict[str, bytes | None]:
        """The buffered writes (``None`` marks a delete)."""
        return dict(self._writes)

    def plan(self) -> tuple[list[Write], list[Check]]:
        """The commit this block amounts to.

        A written key that was read is written only if it still holds the version read; a key
        written blindly (never read) is written unconditionally, since the block did not depend on
        its value; a key only read becomes a :class:`Check`.
        """
        writes = [
            Write(
                Operation.DELETE if value is None else Operation.PUT,
                Entry(key, value if value is not None else b""),
                self._reads.get(key),
            )
            for key, value in self._writes.items()
        ]
        checks = [Check(key, version) for key, version in self._reads.items() if key not in self._writes]
        return writes, checks


async def atomic(
    store: ConditionalBackend,
    block: Callable[[Txn], Awaitable[T]],
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> T:
    """Run ``block(txn)`` and commit its reads and writes atomically; re-run it on conflict.

    The commit succeeds only if every key the block read still holds the version it read, so the
    block behaves as if it ran alone (serializable, like etcd's STM). A block that only read more
    than one key is validated with a check-only commit, so its reads form one consistent snapshot.
    The block may run several times: keep side effects out of it. An exception from the block
    aborts it (nothing is written) and propagates. Only conflicts re-run the block; any other
    error of the commit (a rejected request, a transaction cancelled for a reason that is not
    contention, a missing table) propagates at once.

    Everything lands in one ``commit`` (one TransactWriteItems on DynamoDB), so reads + writes +
    folder pointers must fit the engine's limit of 100 items.

    :returns: the block's result from the attempt that committed.
    :raises RetriesExhausted: every attempt met a conflict; ``last`` is the final one.
    :raises TransactionTooLarge: the block touched too many keys.
    """
    seed: dict[str, VersionedEntry | None] = {}
    last: BaseException | None = None
    for attempt in range(retry.attempts):
        if attempt > 0:
            await asyncio.sleep(retry.delay(attempt - 1))
        txn = Txn(store, seed)
        result = await block(txn)
        writes, checks = txn.plan()
        try:
            if writes or len(checks) > 1:
                await store.commit(writes, checks)
            return result
        except VersionConflict as exc:
            last = exc
            # The conflicting key's state is known fresh; the other keys are read again.
            seed = {exc.key: exc.current}
        except TransactionConflict as exc:
            if not is_transient(exc):
                raise  # cancelled for a reason the next attempt meets again (see is_transient)
            last = exc
            seed = {}
    raise RetriesExhausted(
        f"atomic block gave up after {retry.attempts} conflicting attempts", attempts=retry.attempts, last=last
    ) from last
