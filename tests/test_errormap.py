"""The translation of DynamoDB errors into kvstore's typed errors, and :func:`kvstore.is_transient`.

Most tests build botocore's exceptions by hand (no socket, no engine): the translation is a pure
table from wire codes to classes. The last tests send requests DynamoDB Local refuses, so the
classes are checked against what a real engine answers, not only against our idea of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

import kvstore
from kvstore import (
    AccessDenied,
    BackendError,
    CancellationReason,
    ConditionFailed,
    ConfigError,
    EngineUnavailable,
    Entry,
    FenceRejected,
    InvalidKey,
    KVStoreError,
    LockRecordChanged,
    RequestRejected,
    RetriesExhausted,
    TableNotActive,
    TableNotFound,
    Throttled,
    TransactionCanceled,
    TransactionConflict,
    UsageError,
    VersionConflict,
    VersionedEntry,
    WriteIncomplete,
    is_transient,
)
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.errormap import ACCESS_CODES, REJECTION_CODES, THROTTLING_CODES, translated


def client_error(code: str, message: str = "engine says no", operation: str = "PutItem", **extra: Any) -> ClientError:
    """A ClientError as botocore raises it for an error reply with ``code`` and ``message``."""
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
        **extra,
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def translate(exc: BaseException, key: str | None = "a/b") -> BaseException:
    """What :func:`translated` turns ``exc`` into (asserting it chains the original)."""
    with pytest.raises(BaseException) as caught, translated(key):
        raise exc
    assert caught.value is exc or caught.value.__cause__ is exc
    return caught.value


# -- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(REJECTION_CODES))
def test_invalid_requests_are_rejected_and_final(code: str) -> None:
    err = translate(client_error(code, "One or more parameter values were invalid: too long"))
    assert type(err) is RequestRejected
    assert isinstance(err, BackendError)
    assert not isinstance(err, UsageError)
    assert err.code == code
    assert "One or more parameter values were invalid: too long" in str(err)
    assert code in str(err)
    assert not is_transient(err)


@pytest.mark.parametrize("code", sorted(ACCESS_CODES))
def test_refused_credentials_are_access_denied(code: str) -> None:
    err = translate(client_error(code, "The security token included in the request is invalid."))
    assert type(err) is AccessDenied
    # A configuration problem, like missing credentials, and still an engine refusal with its code.
    assert isinstance(err, ConfigError)
    assert isinstance(err, UsageError)
    assert isinstance(err, RequestRejected)
    assert isinstance(err, BackendError)
    assert err.code == code
    assert "security token included in the request is invalid" in str(err)
    assert not is_transient(err)


def test_validation_and_access_codes_do_not_overlap_the_others() -> None:
    assert not REJECTION_CODES & ACCESS_CODES
    assert not (REJECTION_CODES | ACCESS_CODES) & THROTTLING_CODES


# -- the other codes keep their classes ---------------------------------------------------------


@pytest.mark.parametrize("code", sorted(THROTTLING_CODES))
def test_throttling_is_transient(code: str) -> None:
    err = translate(client_error(code))
    assert type(err) is Throttled
    assert err.code == code
    assert is_transient(err)


@pytest.mark.parametrize(
    ("code", "cls", "transient"),
    [
        ("ResourceNotFoundException", TableNotFound, False),
        ("InternalServerError", EngineUnavailable, True),
        ("ServiceUnavailable", EngineUnavailable, True),
        ("TransactionConflictException", TransactionConflict, True),
        ("TransactionInProgressException", TransactionConflict, True),
        ("ResourceInUseException", BackendError, False),  # table.ensure() looks at this code
        ("SomethingNobodyHeardOfException", BackendError, False),
    ],
)
def test_other_codes(code: str, cls: type[BackendError], transient: bool) -> None:
    err = translate(client_error(code, "details"))
    assert type(err) is cls
    assert "details" in str(err)
    assert is_transient(err) is transient
    if cls is not TransactionConflict:
        assert err.code == code


def test_condition_failure_is_final() -> None:
    err = translate(client_error("ConditionalCheckFailedException", "The conditional request failed"), key="a/b")
    assert type(err) is ConditionFailed
    assert err.key == "a/b"
    assert err.code == "ConditionalCheckFailedException"
    assert not is_transient(err)


@pytest.mark.parametrize(
    ("reasons", "transient"),
    [
        (["None", "TransactionConflict"], True),
        (["ThrottlingError", "None"], True),
        (["None", "ConditionalCheckFailed"], False),
        (["ValidationError"], False),
        (["ItemCollectionSizeLimitExceeded", "TransactionConflict"], False),
    ],
)
def test_cancelled_transaction_is_transient_only_for_contention(reasons: list[str], transient: bool) -> None:
    exc = client_error(
        "TransactionCanceledException",
        "Transaction cancelled, please refer cancellation reasons for specific reasons",
        operation="TransactWriteItems",
        CancellationReasons=[{"Code": r} for r in reasons],
    )
    err = translate(exc)
    # Contention only is a TransactionConflict; a final reason leaves its base class, which the
    # backend explains (VersionConflict...) and which retry loops catching conflicts let through.
    assert type(err) is (TransactionConflict if transient else TransactionCanceled)
    assert isinstance(err, TransactionCanceled)
    assert err.reasons == reasons
    assert is_transient(err) is transient


def test_cancellation_reasons_are_typed() -> None:
    old = {"Path": {"S": "a"}, "Key": {"S": "b"}, "Version": {"S": "v1"}}
    exc = client_error(
        "TransactionCanceledException",
        "Transaction cancelled, please refer cancellation reasons for specific reasons",
        operation="TransactWriteItems",
        CancellationReasons=[
            {"Code": "None"},
            {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed", "Item": old},
        ],
        ResponseMetadata={"HTTPStatusCode": 400, "RetryAttempts": 2},
    )
    err = translate(exc)
    assert isinstance(err, TransactionCanceled)
    assert err.cancellation_reasons == (
        CancellationReason("None"),
        CancellationReason("ConditionalCheckFailed", "The conditional request failed", old),
    )
    assert err.reasons == ["None", "ConditionalCheckFailed"]
    assert err.retry_attempts == 2
    assert err.code == "TransactionCanceledException"


def test_cancellation_without_reasons_is_a_conflict() -> None:
    err = translate(client_error("TransactionCanceledException", "cancelled", operation="TransactWriteItems"))
    assert type(err) is TransactionConflict
    assert err.cancellation_reasons == () and err.reasons == []
    assert is_transient(err)


def test_condition_failure_keeps_the_old_item_and_retry_count() -> None:
    old = {"Path": {"S": "a"}, "Key": {"S": "b"}}
    exc = client_error(
        "ConditionalCheckFailedException",
        "The conditional request failed",
        Item=old,
        ResponseMetadata={"HTTPStatusCode": 400, "RetryAttempts": 1},
    )
    err = translate(exc)
    assert type(err) is ConditionFailed
    assert err.item == old
    assert err.retry_attempts == 1
    assert err.current is None  # the backend, not the table, knows how to read the item


def test_condition_failure_without_item_or_metadata() -> None:
    err = translate(client_error("ConditionalCheckFailedException", "The conditional request failed"))
    assert isinstance(err, ConditionFailed)
    assert err.item is None
    assert err.retry_attempts is None  # the reply did not say


def test_every_reply_error_keeps_retry_attempts() -> None:
    exc = client_error(
        "ProvisionedThroughputExceededException",
        "slow down",
        ResponseMetadata={"HTTPStatusCode": 400, "RetryAttempts": 9},
    )
    err = translate(exc)
    assert type(err) is Throttled and err.retry_attempts == 9
    assert translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")).retry_attempts is None


def test_transaction_conflict_codes_keep_their_wire_code() -> None:
    err = translate(client_error("TransactionConflictException", "busy"))
    assert type(err) is TransactionConflict and err.code == "TransactionConflictException"
    assert err.cancellation_reasons == ()
    assert is_transient(err)


def test_condition_subclasses_type_current() -> None:
    from kvstore.lease import LockRecord

    entry = VersionedEntry(Entry("k", b"1"), "v1")
    assert VersionConflict("k", "v0", entry).current is entry
    record = LockRecord(identity="me", value="", version="r1", fence=3, ttl=10.0)
    err = LockRecordChanged("_lock", "r0", record)
    assert err.current is record and isinstance(err, ConditionFailed) and not is_transient(err)
    assert FenceRejected("lock", 3, None).current is None


# -- transport and client-side errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_failures_are_transient(exc: BaseException) -> None:
    err = translate(exc)
    assert type(err) is EngineUnavailable
    assert err.code == type(exc).__name__
    assert is_transient(err)


def test_missing_credentials_are_a_config_error() -> None:
    err = translate(NoCredentialsError())
    assert type(err) is ConfigError
    assert not is_transient(err)


def test_errors_raised_inside_pass_through() -> None:
    mine = VersionConflict("k", "v1", None)
    assert translate(mine) is mine
    with pytest.raises(ZeroDivisionError), translated():
        _ = 1 / 0


# -- is_transient on its own -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (EngineUnavailable("down"), True),
        (Throttled("slow down"), True),
        (TransactionConflict("busy"), True),
        (TransactionConflict("cancelled", reasons=["None", "ConditionalCheckFailed"]), False),
        (TransactionCanceled("cancelled", reasons=["ConditionalCheckFailed"]), False),
        (TransactionCanceled("cancelled"), False),
        (LockRecordChanged("_lock", None, None), False),
        (WriteIncomplete("left over", pending=3), True),
        (RequestRejected("bad", code="ValidationException"), False),
        (AccessDenied("who are you", code="UnrecognizedClientException"), False),
        (TableNotFound("gone"), False),
        (TableNotActive("creating"), False),
        (ConditionFailed("k"), False),
        (VersionConflict("k", "v1", None), False),
        (FenceRejected("lock", 3, None), False),
        (BackendError("odd", code="SomethingNew"), False),
        (BackendError("no code"), False),
        (InvalidKey("", "empty"), False),
        (ConfigError("bad"), False),
        (RetriesExhausted("gave up", attempts=3, last=Throttled("slow down")), False),
        (KVStoreError("root"), False),
        (ValueError("not ours"), False),
        (ConnectionResetError("untranslated"), False),
        (asyncio.CancelledError(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_new_names_are_exported() -> None:
    for name in (
        "RequestRejected",
        "AccessDenied",
        "is_transient",
        "TransactionCanceled",
        "CancellationReason",
        "LockRecordChanged",
    ):
        assert name in kvstore.__all__
        assert getattr(kvstore, name) is getattr(kvstore.errors, name)
        assert name in kvstore.errors.__all__


# -- against DynamoDB Local ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"Path": {"S": "x"}, "Key": {"S": "k" * 1025}}, "1024"),  # sort key over 1024 bytes
        ({"Path": {"S": "x"}, "Key": {"S": "k"}, "Value": {"N": "1e126"}}, "Number"),  # out of range
        ({"Path": {"S": "x"}}, "key"),  # the sort key is missing
    ],
    ids=["long-sort-key", "number-overflow", "missing-sort-key"],
)
async def test_engine_rejection_is_request_rejected(dynamo: DynamoDBBackend, item: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        await dynamo.table.call("put_item", key="x/k", Item=item)
    err = caught.value
    assert type(err) is RequestRejected
    assert err.code == "ValidationException"
    assert words.lower() in str(err).lower()  # the engine's own message is kept
    assert isinstance(err.__cause__, ClientError)
    assert not is_transient(err)
    assert (await dynamo.table.call("scan", ConsistentRead=True))["Items"] == []  # nothing was written


async def test_engine_rejection_inside_a_batch_is_request_rejected(dynamo: DynamoDBBackend) -> None:
    """The batch writer does not retry a rejection until its deadline: it fails at once."""
    request = {"PutRequest": {"Item": {"Path": {"S": "x"}, "Key": {"S": "k" * 1025}}}}
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestRejected) as caught:
        await dynamo.writer.write([request])
    assert caught.value.code == "ValidationException"
    assert loop.time() - started < 5.0
    assert dynamo.writer.retries == 0
