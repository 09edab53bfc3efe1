"""Idempotency: run a coroutine once per idempotency key and replay its result to duplicates.

After the idempotency utility of Powertools for AWS Lambda (its DynamoDB persistence layer), in
asyncio, on any :class:`~kvstore.backend.ConditionalBackend`, and closing its gaps:

- **Owner-checked completion.** Powertools writes the result and deletes failed records
  unconditionally, so a slow invocation whose claim was taken over overwrites the new owner's
  record. Here :meth:`IdempotencyStore.complete` and :meth:`~IdempotencyStore.release` are
  conditional on the version the claimer wrote: a stale owner is refused and changes nothing.
- **Expiry is enforced on read**, from the record's own expiry time, never left to DynamoDB's TTL
  sweeper (which may run up to days late). An expired record counts as absent: a claim overwrites
  it (conditional on the version read, so two claimers cannot both win).
- **Only COMPLETED records are cached** locally (optional LRU): an in-progress record must be read
  fresh, or a waiter would never see it finish.

Records are kvstore entries under a folder of their own, ``_idempotency/<sha256 of the key>`` by
default (an ordinary folder: ``list("")`` shows ``_idempotency/``, and ``fsck`` checks it like any
other; pass ``prefix=`` to put the records elsewhere), each value a JSON object::

    {"v": 1, "key": "...", "status": "INPROGRESS" | "COMPLETED", "owner": "<uuid>",
     "expiry": <epoch s>, "in_progress_until": <epoch s> | null,
     "payload_hash": "<sha256>" | null, "response": <JSON> | null}

A record's state machine, in wall-clock time (epoch seconds, so all machines must roughly agree
on the time; ``in_progress_timeout`` and ``expires_after`` should dwarf their clock skew)::

    claim ──> INPROGRESS ──complete──> COMPLETED ──(expiry)──> EXPIRED (= absent)
                 │    └──(in_progress_until passes)──> claimable by another caller
                 └──release (the body failed)──> absent

:meth:`IdempotencyStore.claim` is one conditional create. When the key exists the engine returns
the existing record with the refusal (ALL_OLD; a consistent read when the engine omits it), and
only when that record is expired or its in-progress claim timed out does a second conditional
write take it over, conditional on the version just seen.

**Ambiguous replies.** When the reply to a conditional write is lost, the SDK sends it again and
the resend may find the write itself already landed. Each claim carries a fresh random ``owner``,
so a refusal showing a record with this claim's owner is this claim, and :meth:`claim` reports it
won (never "in progress by another"); a completion refused by a record holding exactly the bytes it
wrote reports the completion done. Backends that recognise their own landed write report success
in the first place; these checks keep the recipe honest on any backend.

The :func:`idempotent` decorator wraps any coroutine function::

    store = IdempotencyStore(backend, expires_after=3600, in_progress_timeout=60)

    @idempotent(store, key="order.id", validate="order")
    async def charge(order: dict[str, Any]) -> dict[str, Any]: ...
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar

from kvstore.backend import ABSENT, Absent, ConditionalBackend, VersionedEntry, Write
from kvstore.entry import Entry, Operation
from kvstore.errors import (
    AlreadyInProgress,
    ConfigError,
    IdempotencyError,
    IdempotencyKeyMissing,
    InvalidValue,
    PayloadMismatch,
    RetriesExhausted,
    TransactionConflict,
    ValueTooLarge,
    VersionConflict,
    is_transient,
)
from kvstore.keys import validate_prefix
from kvstore.recipes.durations import check_seconds

__all__ = [
    "JSON",
    "Claim",
    "CustomSerializer",
    "DataclassSerializer",
    "IdempotencyRecord",
    "IdempotencyStore",
    "JsonSerializer",
    "Serializer",
    "Status",
    "idempotent",
    "payload_hash",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: The format version written in every record, so a future layout can be told apart.
_FORMAT = 1

#: How many conditional writes one claim may spend when the record keeps changing under it
#: (each round means another caller wrote the record meanwhile, so this bounds pathological churn).
_CLAIM_ROUNDS = 8


class Status(enum.Enum):
    """The state of an idempotency record as of the moment it was read."""

    INPROGRESS = "INPROGRESS"
    """A caller claimed the key and has not finished yet."""
    COMPLETED = "COMPLETED"
    """The result is stored and is replayed to duplicate calls."""
    EXPIRED = "EXPIRED"
    """Past its expiry: it counts as absent (derived on read, never stored)."""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """One idempotency record as read (or written) by this process.

    ``status`` is derived at read time: a stored record past ``expiry`` reads as EXPIRED.
    ``version`` is the store's version of the record; the owner's ``complete`` and ``release`` are
    conditional on it.
    """

    key: str
    status: Status
    owner: str
    expiry: float
    in_progress_until: float | None
    payload_hash: str | None
    response: Any
    version: str

    def claimable(self, now: float) -> bool:
        """Whether a new claim may overwrite this record at time ``now`` (epoch seconds)."""
        if now >= self.expiry:
            return True
        return (
            self.status is Status.INPROGRESS
            and self.in_progress_until is not None
            and now >= self.in_progress_until
        )

    def retry_after(self, now: float) -> float:
        """Seconds until this in-progress claim may be taken over (0 when it already may)."""
        until = self.in_progress_until if self.in_progress_until is not None else self.expiry
        return max(0.0, min(until, self.expiry) - now)


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`IdempotencyStore.claim`.

    ``claimed`` is True when this caller now owns the key (``record`` is its INPROGRESS record, to
    pass to ``complete`` or ``release``); otherwise ``record`` is the existing record that refused
    the claim (COMPLETED, or INPROGRESS under another owner).
    """

    claimed: bool
    record: IdempotencyRecord


def _canonical(material: object) -> bytes:
    """Stable JSON bytes of ``material`` (sorted keys; dataclasses as dicts)."""

    def default(obj: object) -> object:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=repr)
        raise TypeError(f"{type(obj).__name__} is not JSON-serializable")

    return json.dumps(material, sort_keys=True, separators=(",", ":"), default=default).encode()


def payload_hash(payload: object) -> str:
    """The validation hash of ``payload``: sha256 of its canonical JSON.

    :raises TypeError: ``payload`` is not JSON-serializable.
    """
    return hashlib.sha256(_canonical(payload)).hexdigest()


class IdempotencyStore:
    """Idempotency records on a :class:`~kvstore.backend.ConditionalBackend`.

    :param prefix: the folder of the records; its last segment must start with ``_`` so the folder
        stays hidden from ``list``.
    :param expires_after: seconds a record (claimed or completed) counts; after that the key may
        run again. Default one hour, Powertools' default.
    :param in_progress_timeout: seconds an unfinished claim blocks the key; after that another
        caller may take it over (the claimer is presumed dead). Keep it above the longest run.
    :param cache_size: how many COMPLETED records to keep in a local LRU (0: no cache). A cached
        record is replayed without a read until it expires, even if another process ``forget``-s it.
    :param clock: the wall clock in epoch seconds (tests pass a fake one).
    """

    def __init__(
        self,
        backend: ConditionalBackend,
        *,
        prefix: str = "_idempotency",
        expires_after: float = 3600.0,
        in_progress_timeout: float = 60.0,
        cache_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        validate_prefix(prefix)
        if not prefix or prefix.endswith("/"):
            raise ConfigError(f"idempotency prefix {prefix!r}: a folder name without the trailing '/', e.g. 'idem'")
        check_seconds("idempotency expires_after", expires_after)
        check_seconds("idempotency in_progress_timeout", in_progress_timeout)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"idempotency cache_size must be an int >= 0, not {cache_size!r}")
        self._backend = backend
        self._prefix = prefix
        self.expires_after = float(expires_after)
        self.in_progress_timeout = float(in_progress_timeout)
        self._clock = clock
        self._cache_size = cache_size
        self._cache: collections.OrderedDict[str, IdempotencyRecord] = collections.OrderedDict()

    @property
    def backend(self) -> ConditionalBackend:
        """The backend the records live in."""
        return self._backend

    def now(self) -> float:
        """The store's clock (epoch seconds)."""
        return self._clock()

    def record_key(self, key: str) -> str:
        """The kvstore key of the record for idempotency key ``key``."""
        if not isinstance(key, str) or not key:
            raise IdempotencyKeyMissing(f"idempotency key must be a non-empty str, not {key!r}")
        return f"{self._prefix}/{hashlib.sha256(key.encode()).hexdigest()}"

    # -- encoding -----------------------------------------------------------------------------

    def _encode(self, key: str, rec: dict[str, Any]) -> Entry:
        try:
            data = json.dumps({"v": _FORMAT, "key": key, **rec}, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise IdempotencyError(f"idempotency record for {key!r} is not JSON-serializable: {exc}") from exc
        return Entry(self.record_key(key), data.encode())

    def _decode(self, key: str, current: VersionedEntry, now: float) -> IdempotencyRecord:
        try:
            doc = json.loads(current.entry.value)
            stored = Status(doc["status"])
            expiry = float(doc["expiry"])
            until = doc.get("in_progress_until")
            rec = IdempotencyRecord(
                key=str(doc.get("key", key)),
                status=Status.EXPIRED if now >= expiry else stored,
                owner=str(doc["owner"]),
                expiry=expiry,
                in_progress_until=None if until is None else float(until),
                payload_hash=doc.get("payload_hash"),
                response=doc.get("response"),
                version=current.version,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IdempotencyError(f"{current.entry.key!r} does not hold an idempotency record") from exc
        if stored is Status.EXPIRED:
            raise IdempotencyError(f"{current.entry.key!r} holds a stored EXPIRED status")
        return rec

    # -- the local cache of COMPLETED records ---------------------------------------------------

    def _cached(self, rk: str, now: float) -> IdempotencyRecord | None:
        rec = self._cache.get(rk)
        if rec is None:
            return None
        if now >= rec.expiry:
            del self._cache[rk]
            return None
        self._cache.move_to_end(rk)
        return rec

    def _remember(self, rk: str, rec: IdempotencyRecord) -> None:
        if self._cache_size == 0 or rec.status is not Status.COMPLETED:
            return
        self._cache[rk] = rec
        self._cache.move_to_end(rk)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- operations -----------------------------------------------------------------------------

    async def claim(
        self, key: str, *, payload_hash: str | None = None, in_progress_timeout: float | None = None
    ) -> Claim:
        """Claim ``key`` for this caller, or learn who has (or had) it.

        One conditional create when the key is new. When it exists, the refusal carries the
        existing record; an expired record, or an INPROGRESS one past its in-progress deadline, is
        then taken over by a write conditional on the version seen. A record carrying this claim's
        own owner token is this claim's write that landed although its reply was lost (the SDK's
        resend then found it): the claim is won. Anything else is returned unclaimed.

        :param payload_hash: the caller's payload hash (see :func:`payload_hash`), stored with the
            claim and compared with an existing record's.
        :param in_progress_timeout: overrides the store's for this claim.
        :raises PayloadMismatch: the key is held (or completed) with another payload hash.
        :raises RetriesExhausted: the record kept changing for several rounds.
        """
        rk = self.record_key(key)
        now = self._clock()
        cached = self._cached(rk, now)
        if cached is not None:
            self.check_payload(cached, payload_hash)
            return Claim(False, cached)
        timeout = self.in_progress_timeout if in_progress_timeout is None else in_progress_timeout
        check_seconds("idempotency in_progress_timeout", timeout)
        owner = uuid.uuid4().hex  # this claim's identity: only its own writes carry it
        fields: dict[str, Any] = {
            "status": Status.INPROGRESS.value,
            "owner": owner,
            "expiry": now + self.expires_after,
            "in_progress_until": now + timeout,
            "payload_hash": payload_hash,
            "response": None,
        }
        entry = self._encode(key, fields)
        expected: str | Absent = ABSENT
        last: BaseException | None = None
        for _ in range(_CLAIM_ROUNDS):
            try:
                versions = await self._backend.commit([Write(Operation.PUT, entry, expected)])
            except VersionConflict as exc:
                last = exc
                current = exc.current
            except TransactionConflict as exc:
                if not is_transient(exc):
                    raise
                last = exc
                current = await self._backend.get_versioned(rk)
            else:
                mine = self._decode(key, VersionedEntry(entry, versions[rk]), now)
                return Claim(True, mine)
            if current is None:
                expected = ABSENT  # gone meanwhile (released or forgotten): create it again
                continue
            existing = self._decode(key, current, self._clock())
            if existing.owner == owner:
                # Our own write, landed with its reply lost: the resend found it. The claim is ours,
                # at the version the store holds (what complete() and release() condition on).
                log.info("idempotency key %r: the claim landed although its reply was lost", key)
                return Claim(True, self._decode(key, current, now))
            if existing.claimable(self._clock()):
                log.info("idempotency key %r: taking over a %s record", key, existing.status.value)
                expected = current.version
                continue
            self.check_payload(existing, payload_hash)
            self._remember(rk, existing)
            return Claim(False, existing)
        raise RetriesExhausted(
            f"idempotency claim of {key!r} gave up: the record changed {_CLAIM_ROUNDS} times",
            attempts=_CLAIM_ROUNDS, last=last,
        )

    @staticmethod
    def check_payload(record: IdempotencyRecord, payload_hash: str | None) -> None:
        """Raise PayloadMismatch if ``record`` was stored with another payload hash than ``payload_hash``.

        Nothing to compare (either hash missing) passes.
        """
        if payload_hash is not None and record.payload_hash is not None and record.payload_hash != payload_hash:
            raise PayloadMismatch(record.key, record)

    @staticmethod
    def _won(claim: Claim, what: str) -> IdempotencyRecord:
        if not isinstance(claim, Claim) or not claim.claimed:
            raise InvalidValue(f"{what}() takes a Claim this caller won (claim.claimed is True), not {claim!r}")
        return claim.record

    async def complete(self, claim: Claim, response: Any) -> IdempotencyRecord:
        """Store ``response`` (a JSON value) for the won ``claim``; return the COMPLETED record.

        Conditional on the claim's version: if the claim was taken over (this caller ran past its
        in-progress timeout) or released, nothing is written. The expiry restarts now. A refusal
        by a record holding exactly the bytes this call wrote (this claim's owner token, this
        expiry, this response) means the completion landed and only its reply was lost: it is
        reported done, at the version the store holds.

        :raises VersionConflict: the claim is no longer current (a stale owner); nothing written.
        :raises ValueTooLarge: the record with ``response`` exceeds the engine's item limit.
        :raises IdempotencyError: ``response`` is not JSON-serializable.
        :raises InvalidValue: ``claim`` was not won by this caller.
        """
        record = self._won(claim, "complete")
        now = self._clock()
        fields: dict[str, Any] = {
            "status": Status.COMPLETED.value,
            "owner": record.owner,
            "expiry": now + self.expires_after,
            "in_progress_until": None,
            "payload_hash": record.payload_hash,
            "response": response,
        }
        entry = self._encode(record.key, fields)
        try:
            versions = await self._backend.commit([Write(Operation.PUT, entry, record.version)])
        except VersionConflict as exc:
            current = exc.current
            if current is None or current.entry.value != entry.value:
                raise
            log.info("idempotency key %r: the completion landed although its reply was lost", record.key)
            version = current.version
        else:
            version = versions[entry.key]
        done = self._decode(record.key, VersionedEntry(entry, version), now)
        self._remember(entry.key, done)
        return done

    async def release(self, claim: Claim) -> bool:
        """Delete the won ``claim``'s record so the key may run again (the body failed).

        Conditional on the claim's version, so a stale owner never deletes a new owner's record.

        :returns: whether the record was deleted (False: it was not this claim any more).
        :raises InvalidValue: ``claim`` was not won by this caller.
        """
        record = self._won(claim, "release")
        rk = self.record_key(record.key)
        try:
            await self._backend.commit([Write(Operation.DELETE, Entry(rk), record.version)])
        except VersionConflict:
            return False
        self._cache.pop(rk, None)
        return True

    async def get(self, key: str) -> IdempotencyRecord | None:
        """The record for ``key`` (an EXPIRED one included), or ``None``. A consistent read."""
        rk = self.record_key(key)
        now = self._clock()
        cached = self._cached(rk, now)
        if cached is not None:
            return cached
        current = await self._backend.get_versioned(rk)
        if current is None:
            return None
        rec = self._decode(key, current, now)
        self._remember(rk, rec)
        return rec

    async def forget(self, key: str) -> None:
        """Delete the record for ``key`` whatever its state (the next call runs again)."""
        rk = self.record_key(key)
        self._cache.pop(rk, None)
        await self._backend.commit([Write(Operation.DELETE, Entry(rk), None)])

    def clear_cache(self) -> None:
        """Empty the local cache of COMPLETED records."""
        self._cache.clear()


# -- serializers --------------------------------------------------------------------------------


class Serializer(Protocol[T]):
    """Turns a function's result into a JSON value for the record, and back for a replay."""

    def dump(self, value: T) -> Any:
        """A JSON-compatible value (dict, list, str, int, float, bool, None) for ``value``."""
        ...

    def load(self, data: Any) -> T:
        """The result to replay, from what :meth:`dump` produced."""
        ...


class JsonSerializer:
    """Results that already are JSON values (tuples come back as lists)."""

    def dump(self, value: Any) -> Any:
        return value

    def load(self, data: Any) -> Any:
        return data


#: The default serializer.
JSON = JsonSerializer()


class DataclassSerializer(Generic[T]):
    """Results that are instances of dataclass ``cls`` (stored with ``dataclasses.asdict``).

    ``load`` calls ``cls(**data)``: nested dataclasses come back as dicts unless ``cls`` converts
    them in ``__post_init__``; use :class:`CustomSerializer` for anything richer.
    """

    def __init__(self, cls: type[T]) -> None:
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            raise ConfigError(f"DataclassSerializer needs a dataclass type, not {cls!r}")
        self.cls = cls

    def dump(self, value: T) -> Any:
        if not isinstance(value, self.cls):
            raise IdempotencyError(f"expected a {self.cls.__name__} result, got {type(value).__name__}")
        return dataclasses.asdict(value)  # type: ignore[call-overload]

    def load(self, data: Any) -> T:
        return self.cls(**data)


class CustomSerializer(Generic[T]):
    """A serializer from two functions: ``dump(result) -> JSON value`` and ``load(value) -> result``."""

    def __init__(self, dump: Callable[[T], Any], load: Callable[[Any], T]) -> None:
        self._dump = dump
        self._load = load

    def dump(self, value: T) -> Any:
        return self._dump(value)

    def load(self, data: Any) -> T:
        return self._load(data)


# -- the decorator ------------------------------------------------------------------------------

Selector = str | Callable[..., object] | None
"""How to pick the key (or payload) material from a call: ``None`` (all arguments), a parameter
name with optional dotted path into mappings or attributes (``"order.id"``), or a function called
with the same arguments."""

_MISSING = object()


def _select(selector: Selector, bound: inspect.BoundArguments) -> object:
    """The material ``selector`` picks from a call (``_MISSING`` when the path does not resolve)."""
    if callable(selector):
        return selector(*bound.args, **bound.kwargs)
    if selector is None:
        return dict(bound.arguments)
    name, *path = selector.split(".")
    value: object = bound.arguments.get(name, _MISSING)
    if value is _MISSING:
        value = bound.kwargs.get(name, _MISSING)
    for part in path:
        if value is _MISSING or value is None:
            return _MISSING
        value = value.get(part, _MISSING) if isinstance(value, Mapping) else getattr(value, part, _MISSING)
    return value


def _function_name(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def idempotent(
    store: IdempotencyStore,
    *,
    key: Selector = None,
    validate: Selector = None,
    on_in_progress: Literal["raise", "wait"] = "raise",
    wait_timeout: float | None = None,
    in_progress_timeout: float | None = None,
    serializer: Serializer[Any] = JSON,
    response_hook: Callable[[Any, IdempotencyRecord], Any] | None = None,
    name: str | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Make a coroutine function idempotent: one run per key; duplicates get the stored result.

    The idempotency key is ``name`` (default: the function's module and qualified name) plus the
    sha256 of the canonical JSON of what ``key`` selects (see :data:`Selector`); it must not be
    ``None``. With ``validate``, the hash of what it selects is stored and a later call with the
    same key but another payload raises :class:`PayloadMismatch`.

    - The first call claims the key, runs the function and stores its result (``serializer.dump``).
    - A duplicate after completion returns ``serializer.load(stored)``, passed through
      ``response_hook(result, record)`` when given, without running the function.
    - A duplicate while the first still runs raises :class:`AlreadyInProgress` (with a
      ``retry_after`` hint), or with ``on_in_progress="wait"`` polls until the first completes
      (then replays it) or its claim times out (then runs itself), at most ``wait_timeout``
      seconds (default: the in-progress timeout plus one second).
    - If the function raises (or is cancelled), the claim is released and the error propagates,
      so a retry runs again. If its result cannot be stored (:class:`ValueTooLarge`, not JSON),
      the claim is released and that error propagates.
    - If the claim was taken over while the function ran (it outlived its in-progress timeout),
      the result is returned but not stored; the new owner's record is left alone.

    :raises IdempotencyKeyMissing: the key could not be derived from the call.
    """
    if on_in_progress not in ("raise", "wait"):
        raise ConfigError(f"on_in_progress must be 'raise' or 'wait', not {on_in_progress!r}")

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        sig = inspect.signature(fn)
        prefix = name or _function_name(fn)

        def derive(selector: Selector, what: str, bound: inspect.BoundArguments) -> str:
            try:
                material = _select(selector, bound)
            except (TypeError, LookupError, AttributeError) as exc:
                raise IdempotencyKeyMissing(f"{prefix}: cannot select the {what} ({exc})") from exc
            if material is _MISSING or material is None:
                raise IdempotencyKeyMissing(f"{prefix}: the {what} selector {selector!r} found nothing in the call")
            try:
                return payload_hash(material)
            except (TypeError, ValueError) as exc:
                raise IdempotencyKeyMissing(f"{prefix}: the {what} is not JSON-serializable ({exc})") from exc

        def replay(record: IdempotencyRecord) -> Any:
            result = serializer.load(record.response)
            return response_hook(result, record) if response_hook is not None else result

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = sig.bind(*args, **kwargs)  # a call the function itself would refuse fails as usual
            bound.apply_defaults()
            idem_key = f"{prefix}#{derive(key, 'idempotency key', bound)}"
            digest = derive(validate, "payload", bound) if validate is not None else None
            claim = await _claim_or_replay(store, idem_key, digest, on_in_progress, wait_timeout, in_progress_timeout)
            if not claim.claimed:
                return replay(claim.record)  # type: ignore[no-any-return]
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                await _release_quietly(store, claim)
                raise
            try:
                await store.complete(claim, serializer.dump(result))
            except VersionConflict:
                log.warning("idempotency key %r: the claim was taken over while running; result not stored", idem_key)
            except (ValueTooLarge, IdempotencyError):
                await _release_quietly(store, claim)
                raise
            return result

        return wrapper

    return decorate


async def _release_quietly(store: IdempotencyStore, claim: Claim) -> None:
    try:
        await store.release(claim)
    except Exception as exc:  # the original error matters more; the claim times out anyway
        log.warning("idempotency key %r: could not release the claim: %s", claim.record.key, exc)


async def _claim_or_replay(
    store: IdempotencyStore,
    key: str,
    digest: str | None,
    on_in_progress: str,
    wait_timeout: float | None,
    in_progress_timeout: float | None,
) -> Claim:
    """Claim ``key``, or return the COMPLETED record to replay; wait for an in-progress one if asked."""
    timeout = store.in_progress_timeout if in_progress_timeout is None else in_progress_timeout
    deadline = time.monotonic() + (timeout + 1.0 if wait_timeout is None else wait_timeout)
    poll = 0.02
    while True:
        claim = await store.claim(key, payload_hash=digest, in_progress_timeout=in_progress_timeout)
        if claim.claimed or claim.record.status is Status.COMPLETED:
            return claim
        record: IdempotencyRecord | None = claim.record
        while record is not None and record.status is Status.INPROGRESS:
            now = store.now()
            if record.claimable(now):
                break
            left = deadline - time.monotonic()
            if on_in_progress == "raise" or left <= 0:
                raise AlreadyInProgress(key, retry_after=record.retry_after(now))
            # Poll (reads only) until it completes, goes away, or its claim may be taken over.
            await asyncio.sleep(min(poll, left, max(record.retry_after(now), 0.001)))
            poll = min(poll * 2, 1.0)
            record = await store.get(key)
            if record is not None:
                store.check_payload(record, digest)
        if record is not None and record.status is Status.COMPLETED:
            return Claim(False, record)
        # Gone, expired or claimable: claim again (which may also find someone else was faster).
