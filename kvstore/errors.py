"""The one error hierarchy of kvstore.

Every error kvstore raises is a :class:`KVStoreError`. Misuse of the API (bad keys, bad values, bad
configuration, calling a closed backend) is kept apart from operational failures (the engine is
unreachable, throttles, or a condition did not hold), so callers can tell "fix your code" from
"try again"::

    KVStoreError
    ├── UsageError                      the caller's mistake; retrying cannot help
    │   ├── InvalidKey                  (also ValueError) empty, malformed or over-long key
    │   ├── InvalidValue                (also TypeError) a value that is not bytes, a key not str
    │   ├── ValueTooLarge               the item would exceed DynamoDB's 400 KB
    │   ├── TransactionTooLarge         over 100 items or 4 MB in one transaction
    │   ├── ConfigError                 an invalid configuration value (AccessDenied is one too)
    │   ├── BackendClosed               (also RuntimeError) used after aclose()
    │   └── LockNotHeld                 (also RuntimeError) asked for a token of a lock not held
    ├── BackendError                    the engine failed or refused; ``code`` keeps the wire code
    │   ├── EngineUnavailable           endpoint unreachable, connection dropped, timed out
    │   ├── Throttled                   throughput exceeded and the SDK's retries ran out
    │   ├── TableNotFound               the table does not exist (or was deleted)
    │   ├── TableNotActive              the table exists but is not ACTIVE in time
    │   ├── WriteIncomplete             unprocessed items still left when the deadline passed
    │   ├── TransactionCanceled         DynamoDB cancelled a transaction; ``cancellation_reasons`` says why
    │   │   └── TransactionConflict     only contention: another transaction touched the same items
    │   ├── ConditionFailed             a conditional write found another state; ``item`` is what it found
    │   │   ├── VersionConflict         a versioned write found another version
    │   │   ├── FenceRejected           a fenced write's token is no longer current
    │   │   └── LockRecordChanged       a lock record's conditional write found another record
    │   └── RequestRejected             the engine refused the request as invalid; retrying cannot help
    │       └── AccessDenied            (also ConfigError) credentials or permissions refused
    ├── LockError
    │   ├── LockLost                    leadership was lost
    │   └── LockTimeout                 the lock was not acquired in time
    ├── RetriesExhausted                a read-modify-write gave up after its retries
    ├── IdempotencyError
    │   ├── AlreadyInProgress           another call holds the idempotency claim
    │   ├── PayloadMismatch             same key, different payload
    │   └── IdempotencyKeyMissing       the key could not be derived from the call
    └── EngineError                     DynamoDB Local could not be installed or started

:func:`is_transient` tells which errors are worth retrying after a backoff (the engine was
unreachable, busy or contended) from those that will fail the same way again (usage errors,
rejected requests, a missing table, a condition that did not hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: both modules import this one
    from kvstore.backend import VersionedEntry
    from kvstore.lease import LockRecord

#: An item in DynamoDB's wire format (``{"Path": {"S": "a"}, ...}``), as the engine sent it.
WireItem = dict[str, Any]

__all__ = [
    "AccessDenied",
    "AlreadyInProgress",
    "BackendClosed",
    "BackendError",
    "CancellationReason",
    "ConditionFailed",
    "ConfigError",
    "EngineError",
    "EngineUnavailable",
    "FINAL_CANCELLATION_REASONS",
    "FenceRejected",
    "IdempotencyError",
    "IdempotencyKeyMissing",
    "InvalidKey",
    "InvalidValue",
    "KVStoreError",
    "LockError",
    "LockLost",
    "LockNotHeld",
    "LockRecordChanged",
    "LockTimeout",
    "PayloadMismatch",
    "RequestRejected",
    "RetriesExhausted",
    "TableNotActive",
    "TableNotFound",
    "Throttled",
    "TransactionCanceled",
    "TransactionConflict",
    "TransactionTooLarge",
    "UsageError",
    "ValueTooLarge",
    "VersionConflict",
    "WireItem",
    "WriteIncomplete",
    "is_transient",
]


class KVStoreError(Exception):
    """The root of every error kvstore raises."""


class UsageError(KVStoreError):
    """The caller used the API wrongly; the same call will fail again."""


class InvalidKey(UsageError, ValueError):
    """A key is empty, malformed, or longer than DynamoDB allows."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidValue(UsageError, TypeError):
    """An argument has the wrong type (a value that is not bytes, a key that is not str)."""


class ValueTooLarge(UsageError):
    """The item would exceed DynamoDB's item size limit; nothing was written."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"item for key {key!r} would be {size} bytes, over the {limit}-byte limit")
        self.key = key
        self.size = size
        self.limit = limit


class TransactionTooLarge(UsageError):
    """A transaction exceeds DynamoDB's item count or size limit; nothing was written."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"transaction has {size} {what}, over the limit of {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class ConfigError(UsageError):
    """A configuration value is missing or invalid."""


class BackendClosed(UsageError, RuntimeError):
    """The backend was used after ``aclose()``."""


class LockNotHeld(UsageError, RuntimeError):
    """A lock's holder-only property was read before the lock was ever granted."""


class BackendError(KVStoreError):
    """The storage engine failed or refused a request.

    ``code`` is the engine's error code (``"ProvisionedThroughputExceededException"``...) when
    there was one, so nothing is lost by the translation. ``retry_attempts`` is how many times the
    SDK re-sent the request before giving up (botocore's ``ResponseMetadata.RetryAttempts``), or
    ``None`` when unknown (no reply, or an error kvstore raised itself). More than zero means an
    earlier sending may have landed although its reply was lost.
    """

    def __init__(self, message: str, *, code: str | None = None, retry_attempts: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_attempts = retry_attempts


class EngineUnavailable(BackendError):
    """The endpoint could not be reached, the connection dropped, or a request timed out."""


class Throttled(BackendError):
    """DynamoDB throttled the request and the SDK's retries ran out."""


class TableNotFound(BackendError):
    """The table does not exist."""


class TableNotActive(BackendError):
    """The table exists but did not become ACTIVE in time."""


class WriteIncomplete(BackendError):
    """Some items were still unprocessed when the retry deadline passed.

    ``pending`` counts the write requests that did not land. The ones that did are not rolled back
    (BatchWriteItem is not atomic); a put that raises this may be retried safely, since puts and
    deletes are idempotent.
    """

    def __init__(self, message: str, *, pending: int) -> None:
        super().__init__(message, code="UnprocessedItems")
        self.pending = pending


@dataclass(frozen=True)
class CancellationReason:
    """Why DynamoDB cancelled one item of a transaction, at the index of its ``TransactItems`` entry.

    ``code`` is the reason's wire code: ``"None"`` for an item that was fine (the others cancelled
    the transaction), ``"ConditionalCheckFailed"``, ``"TransactionConflict"``, ``"ThrottlingError"``,
    ``"ValidationError"``... ``item`` is the item found, in wire format, when the engine sent it back
    (``ReturnValuesOnConditionCheckFailure=ALL_OLD`` on a failed condition), else ``None``.
    """

    code: str
    message: str = ""
    item: WireItem | None = None


class TransactionCanceled(BackendError):
    """DynamoDB cancelled a transaction; nothing of it was written.

    ``cancellation_reasons`` holds one :class:`CancellationReason` per ``TransactItems`` entry (empty
    when the engine sent none) and ``reasons`` their codes. A cancellation only for contention is a
    :class:`TransactionConflict` (transient); this base class alone means some item met a reason the
    same transaction meets again (a failed condition, a validation error...), so it is not
    transient. Conditional backends turn failed conditions into :class:`VersionConflict` or
    :class:`FenceRejected` before callers see them.
    """

    def __init__(
        self,
        message: str,
        *,
        reasons: list[str] | None = None,
        cancellation_reasons: tuple[CancellationReason, ...] = (),
        code: str | None = "TransactionCanceledException",
        retry_attempts: int | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_attempts=retry_attempts)
        self.cancellation_reasons = cancellation_reasons
        self.reasons: list[str] = list(reasons) if reasons is not None else [r.code for r in cancellation_reasons]


class TransactionConflict(TransactionCanceled):
    """A transaction was cancelled because another one touched the same items; retry it.

    Also raised for ``TransactionConflictException`` and ``TransactionInProgressException`` (a
    single write met a transaction in progress), with no ``cancellation_reasons`` then.
    """


class ConditionFailed(BackendError):
    """A conditional write found the item in another state than expected.

    ``current`` is what the backend made of the item's state when the condition failed (or
    ``None`` when it is absent or unknown); the subclasses say what type it has. ``item`` is the
    item the engine sent back, in wire format (``ReturnValuesOnConditionCheckFailure=ALL_OLD``),
    or ``None`` when there is none or the engine left it out.
    """

    current: object

    def __init__(
        self,
        key: str,
        expected: Any = None,
        current: object = None,
        *,
        message: str = "",
        item: WireItem | None = None,
        retry_attempts: int | None = None,
    ) -> None:
        super().__init__(
            message or f"condition failed for key {key!r}",
            code="ConditionalCheckFailedException",
            retry_attempts=retry_attempts,
        )
        self.key = key
        self.expected = expected
        self.current = current
        self.item = item


class VersionConflict(ConditionFailed):
    """A versioned write expected one version of the key and found another (``current``)."""

    current: VersionedEntry | None

    def __init__(
        self,
        key: str,
        expected: Any = None,
        current: VersionedEntry | None = None,
        *,
        message: str = "",
        item: WireItem | None = None,
        retry_attempts: int | None = None,
    ) -> None:
        super().__init__(key, expected, current, message=message, item=item, retry_attempts=retry_attempts)


class FenceRejected(ConditionFailed):
    """A fenced write carried a fencing token that is no longer the lock's current one."""

    current: None


class LockRecordChanged(ConditionFailed):
    """A lock record's conditional write found another record (``current``, ``None`` if absent or unknown)."""

    current: LockRecord | None

    def __init__(
        self,
        key: str,
        expected: str | None = None,
        current: LockRecord | None = None,
        *,
        message: str = "",
        item: WireItem | None = None,
        retry_attempts: int | None = None,
    ) -> None:
        super().__init__(key, expected, current, message=message, item=item, retry_attempts=retry_attempts)


class RequestRejected(BackendError):
    """The engine refused the request as invalid; retrying cannot help.

    DynamoDB's ``ValidationException`` (a sort key over 1024 bytes, a number out of range, an
    expression it cannot parse), ``SerializationException``, ``ItemCollectionSizeLimitExceededException``
    and ``IdempotentParameterMismatchException`` end up here: the same request fails the same way
    however often it is sent, so retry loops must give up on it at once (see :func:`is_transient`).
    ``code`` is the wire code and the message carries the engine's own text.
    """


class AccessDenied(ConfigError, RequestRejected):
    """The engine refused the credentials or their permissions.

    ``UnrecognizedClientException`` (unknown access key), ``InvalidSignatureException`` (wrong
    secret), ``ExpiredTokenException``, ``AccessDeniedException`` (an IAM policy forbids the
    action)... The fix is in the configuration or the policy, so it is a :class:`ConfigError`, like
    missing credentials; it is also a :class:`RequestRejected` (a :class:`BackendError` keeping the
    wire ``code``), so handlers of engine errors still see it, and it is never transient.
    """


class LockError(KVStoreError):
    """A lock could not be acquired or was lost."""


class LockLost(LockError):
    """Leadership of ``key`` (granted with fencing ``token``) was lost."""

    def __init__(self, key: str, token: int | None = None) -> None:
        super().__init__(f"lock {key!r} lost (fencing token {token})")
        self.key = key
        self.token = token


class LockTimeout(LockError):
    """The lock was not acquired before the timeout or the last retry."""


class RetriesExhausted(KVStoreError):
    """A retried operation gave up; ``last`` is the error of the final attempt."""

    def __init__(self, message: str, *, attempts: int, last: BaseException | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last = last


class IdempotencyError(KVStoreError):
    """An idempotent call could not proceed."""


class AlreadyInProgress(IdempotencyError):
    """Another call holds the claim for this idempotency key; ``retry_after`` is a hint in seconds."""

    def __init__(self, key: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"idempotency key {key!r} is already in progress")
        self.key = key
        self.retry_after = retry_after


class PayloadMismatch(IdempotencyError):
    """The idempotency key was used before with a different payload; ``record`` is the stored one."""

    def __init__(self, key: str, record: Any = None) -> None:
        super().__init__(f"idempotency key {key!r} was used with a different payload")
        self.key = key
        self.record = record


class IdempotencyKeyMissing(IdempotencyError, ValueError):
    """The idempotency key could not be derived from the call's arguments."""


class EngineError(KVStoreError):
    """DynamoDB Local could not be installed or started."""


#: The classes :func:`is_transient` accepts: failures that say nothing about the request itself.
_TRANSIENT: tuple[type[BackendError], ...] = (EngineUnavailable, Throttled, TransactionConflict, WriteIncomplete)

#: Cancellation reasons of a transaction that the same transaction will meet again.
FINAL_CANCELLATION_REASONS = frozenset({"ConditionalCheckFailed", "ItemCollectionSizeLimitExceeded", "ValidationError"})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying after a backoff: the same request may well succeed later.

    True for :class:`EngineUnavailable` (unreachable, connection dropped, timed out),
    :class:`Throttled`, :class:`TransactionConflict` and :class:`WriteIncomplete`. False for
    everything else: usage errors, :class:`RequestRejected` (and :class:`AccessDenied`),
    :class:`TableNotFound`, :class:`TableNotActive`, :class:`ConditionFailed` and its subclasses
    (the state differs from what the request expects; retrying it unchanged fails again), a generic
    :class:`BackendError` with an unknown code, :class:`RetriesExhausted` (retrying already gave
    up) and any exception that is not a :class:`KVStoreError`.

    A :class:`TransactionCanceled` that is not a :class:`TransactionConflict` is not transient, nor
    is a :class:`TransactionConflict` whose ``reasons`` name a failed condition, a validation error
    or a full item collection (:data:`FINAL_CANCELLATION_REASONS`): only the contention-type reasons
    (``TransactionConflict``, throttling) go away by themselves.

    "Transient" is about the engine, not about the write: after :class:`EngineUnavailable` a write
    may have landed without its reply, so only idempotent requests (or ones that recognise their
    own landed write) may be resent blindly.
    """
    if not isinstance(exc, _TRANSIENT):
        return False
    if isinstance(exc, TransactionConflict):
        return not FINAL_CANCELLATION_REASONS.intersection(exc.reasons)
    return True
