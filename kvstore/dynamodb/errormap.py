"""One table from DynamoDB's error codes to kvstore errors, and the one place that applies it.

Every call to the engine runs inside :func:`translated`, so callers only ever see
:class:`~kvstore.errors.KVStoreError` subclasses, each raised ``from`` the SDK's exception and keeping
the wire code in ``.code``. Throttling and 5xx errors were already retried by botocore's retry
handler (``dynamodb_max_retries``) before they reach this table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

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
    BackendError,
    ConditionFailed,
    ConfigError,
    EngineUnavailable,
    KVStoreError,
    TableNotFound,
    Throttled,
    TransactionConflict,
)

__all__ = ["THROTTLING_CODES", "error_code", "translated"]

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

_BY_CODE: dict[str, type[BackendError]] = {
    **{code: Throttled for code in THROTTLING_CODES},
    "ResourceNotFoundException": TableNotFound,
    "TransactionConflictException": TransactionConflict,
    "TransactionInProgressException": TransactionConflict,
    "ServiceUnavailable": EngineUnavailable,
    "InternalServerError": EngineUnavailable,
}


def error_code(exc: ClientError) -> str:
    """The DynamoDB error code of a ClientError (``""`` if it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: BaseException, key: str | None) -> KVStoreError | None:
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        if code == "ConditionalCheckFailedException":
            return ConditionFailed(key or "", message=f"condition failed for key {key!r}: {message}")
        if code == "TransactionCanceledException":
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            return TransactionConflict(f"transaction cancelled: {message}", reasons=reasons)
        cls = _BY_CODE.get(code, BackendError)
        if cls is TransactionConflict:
            return TransactionConflict(f"{code}: {message}")
        return cls(f"{code}: {message}", code=code)
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
