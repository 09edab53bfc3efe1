"""kvstore: an asyncio, hierarchical key-value store on DynamoDB, after Vault's physical backends.

The public names live here; backends are imported from their modules::

    from kvstore import Entry
    from kvstore.inmem import InmemBackend
    from kvstore.dynamodb import DynamoDBBackend

    async with await DynamoDBBackend.create({"table": "kv"}) as store:
        await store.put(Entry("a/b/c", b"v"))
        await store.list("a/")        # ["b/"]
"""

from kvstore.backend import (
    ABSENT,
    Backend,
    Check,
    ConditionalBackend,
    Fence,
    HABackend,
    Lock,
    VersionedEntry,
    Write,
)
from kvstore.entry import Entry, Operation, TxnEntry
from kvstore.errors import (
    AccessDenied,
    AlreadyInProgress,
    BackendClosed,
    BackendError,
    CancellationReason,
    ConditionFailed,
    ConfigError,
    EngineError,
    EngineUnavailable,
    FenceRejected,
    IdempotencyError,
    IdempotencyKeyMissing,
    InvalidKey,
    InvalidValue,
    KVStoreError,
    LockError,
    LockLost,
    LockNotHeld,
    LockRecordChanged,
    LockTimeout,
    PayloadMismatch,
    RequestRejected,
    RetriesExhausted,
    TableNotActive,
    TableNotFound,
    Throttled,
    TransactionCanceled,
    TransactionConflict,
    TransactionTooLarge,
    UsageError,
    ValueTooLarge,
    VersionConflict,
    WriteIncomplete,
    is_transient,
)

__version__ = "0.1.0"

__all__ = [
    "ABSENT",
    "AccessDenied",
    "AlreadyInProgress",
    "Backend",
    "BackendClosed",
    "BackendError",
    "CancellationReason",
    "Check",
    "ConditionFailed",
    "ConditionalBackend",
    "ConfigError",
    "EngineError",
    "EngineUnavailable",
    "Entry",
    "Fence",
    "FenceRejected",
    "HABackend",
    "IdempotencyError",
    "IdempotencyKeyMissing",
    "InvalidKey",
    "InvalidValue",
    "KVStoreError",
    "Lock",
    "LockError",
    "LockLost",
    "LockNotHeld",
    "LockRecordChanged",
    "LockTimeout",
    "Operation",
    "PayloadMismatch",
    "RequestRejected",
    "RetriesExhausted",
    "TableNotActive",
    "TableNotFound",
    "Throttled",
    "TransactionCanceled",
    "TransactionConflict",
    "TransactionTooLarge",
    "TxnEntry",
    "UsageError",
    "ValueTooLarge",
    "VersionConflict",
    "VersionedEntry",
    "Write",
    "WriteIncomplete",
    "__version__",
    "is_transient",
]
