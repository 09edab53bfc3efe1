"""One table from DynamoDB's error codes to kvstore errors, and the one place that applies it.

Every call to the engine runs inside :func:`translated`, so callers only ever see
:class:`~kvstore.errors.KVStoreError` subclasses, each raised ``from`` the SDK's exception and keeping
the wire code in ``.code``. Throttling and 5xx errors were already retried by botocore's retry
handler (``dynamodb_max_retries``) before they reach this table.

Requests the engine refuses as invalid (``ValidationException`` and kin, :data:`REJECTION_CODES`)
become :class:`~kvstore.errors.RequestRejected`, and refused credentials or permissions
(:data:`ACCESS_CODES`) :class:`~kvstore.errors.AccessDenied`, which is both a ConfigError (the fix is
in the configuration or the IAM policy, as for missing credentials) and a RequestRejected (it keeps
``.code`` and stays a BackendError for handlers of engine errors). Neither is transient
(:func:`~kvstore.errors.is_transient`), so no retry loop spins on them.

What DynamoDB said is attached here, once, as typed fields, so nobody digs in the SDK's reply:
every error from a reply keeps ``retry_attempts`` (how often botocore re-sent the request), a failed
condition keeps the ``item`` sent back (``ALL_OLD``), and a cancelled transaction keeps one
:class:`~kvstore.errors.CancellationReason` per item. A cancellation only for contention is a
:class:`~kvstore.errors.TransactionConflict` (transient); one where some item met a final reason
(:data:`~kvstore.errors.FINAL_CANCELLATION_REASONS`: a failed condition...) is its base class
:class:`~kvstore.errors.TransactionCanceled`, which the backend explains (VersionConflict...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from kvstore.errors import (
    FINAL_CANCELLATION_REASONS,
    AccessDenied,
    BackendError,
    CancellationReason,
    ConditionFailed,
    ConfigError,
    EngineUnavailable,
    KVStoreError,
    RequestRejected,
    TableNotFound,
    Throttled,
    TransactionCanceled,
    TransactionConflict,
)

__all__ = [
    "ACCESS_CODES",
    "REJECTION_CODES",
    "THROTTLING_CODES",
    "cancellation_reasons",
    "error_code",
    "retry_attempts",
    "translated",
]

#: Codes that mean "slow down": botocore retries these itself; they are also what the batch writer
#: treats as a reason to back off rather than fail at once.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "Throttling",
    }
)

#: Codes of requests the engine refuses as invalid: the same request fails the same way again.
REJECTION_CODES = frozenset(
    {
        "ValidationException",  # a key over its size limit, a number out of range, a bad expression...
        "SerializationException",  # a body the engine cannot parse (a malformed attribute value)
        "ItemCollectionSizeLimitExceededException",  # a partition with an LSI is over 10 GB
        "IdempotentParameterMismatchException",  # a ClientRequestToken reused with other parameters
    }
)

#: Codes of refused credentials or permissions: fix the configuration or the IAM policy.
ACCESS_CODES = frozenset(
    {
        "UnrecognizedClientException",  # unknown access key id (or a wrong region/endpoint for it)
        "InvalidSignatureException",  # wrong secret key
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",  # an expired session token that the credential chain did not refresh
        "AccessDeniedException",  # an IAM policy forbids the action on this table
    }
)

_BY_CODE: dict[str, type[BackendError]] = {
    **{code: Throttled for code in THROTTLING_CODES},
    **{code: RequestRejected for code in REJECTION_CODES},
    **{code: AccessDenied for code in ACCESS_CODES},
    "ResourceNotFoundException": TableNotFound,
    "TransactionConflictException": TransactionConflict,
    "TransactionInProgressException": TransactionConflict,
    "ServiceUnavailable": EngineUnavailable,
    "InternalServerError": EngineUnavailable,
}


def error_code(exc: ClientError) -> str:
    """The DynamoDB error code of a ClientError (``""`` if it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reply(exc: ClientError) -> dict[str, Any]:
    """The parsed error reply (botocore's stubs type it narrower than the fields DynamoDB adds)."""
    return dict(exc.response)


def retry_attempts(exc: ClientError) -> int | None:
    """How many times botocore re-sent the request before ``exc`` (``None`` if the reply does not say)."""
    attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
    return attempts if isinstance(attempts, int) else None


def cancellation_reasons(exc: ClientError) -> tuple[CancellationReason, ...]:
    """The per-item reasons of a ``TransactionCanceledException`` (one per ``TransactItems`` entry)."""
    raw: list[dict[str, Any]] = _reply(exc).get("CancellationReasons") or []
    return tuple(
        CancellationReason(str(r.get("Code", "None")), str(r.get("Message", "")), r.get("Item") or None) for r in raw
    )


def _from_reply(exc: ClientError, key: str | None) -> BackendError:
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    attempts = retry_attempts(exc)
    if code == "ConditionalCheckFailedException":
        item: dict[str, Any] | None = _reply(exc).get("Item") or None
        return ConditionFailed(
            key or "", message=f"condition failed for key {key!r}: {message}", item=item, retry_attempts=attempts
        )
    if code == "TransactionCanceledException":
        reasons = cancellation_reasons(exc)
        final = FINAL_CANCELLATION_REASONS.intersection(r.code for r in reasons)
        cancelled = TransactionCanceled if final else TransactionConflict
        return cancelled(f"transaction cancelled: {message}", cancellation_reasons=reasons, retry_attempts=attempts)
    cls = _BY_CODE.get(code, BackendError)
    return cls(f"{code}: {message}", code=code, retry_attempts=attempts)


def _translate(exc: BaseException, key: str | None) -> KVStoreError | None:
    if isinstance(exc, ClientError):
        return _from_reply(exc, key)
    if isinstance(exc, NoCredentialsError):
        return ConfigError("no AWS credentials found (set access_key/secret_key or the AWS credential chain)")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError):
        return EngineUnavailable(f"DynamoDB unreachable: {exc}", code=type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError | ConnectionError | asyncio.TimeoutError):
        return EngineUnavailable(f"DynamoDB connection failed: {exc!r}", code=type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        return BackendError(f"DynamoDB client error: {exc}", code=type(exc).__name__)
    return None


@contextlib.contextmanager
def translated(key: str | None = None) -> Iterator[None]:
    """Re-raise SDK and transport errors inside the block as kvstore errors (``from`` the original)."""
    try:
        yield
    except KVStoreError:
        raise
    except Exception as exc:
        mapped = _translate(exc, key)
        if mapped is None:
            raise
        raise mapped from exc
