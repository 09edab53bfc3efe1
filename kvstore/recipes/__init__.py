"""Concurrency recipes built on the backend interfaces; each works on every backend.

- :mod:`kvstore.recipes.versioned`: compare-and-swap writes, ``update()`` (read-modify-write with
  retries) and ``atomic()`` (multi-key optimistic transactions), on a ConditionalBackend.
- :mod:`kvstore.recipes.idempotency`: run a coroutine once per idempotency key and replay its
  result (``IdempotencyStore``, ``@idempotent``), on a ConditionalBackend.
- :mod:`kvstore.recipes.mutex`: a distributed mutex with a lease and a fencing token, on an
  HABackend.
"""

from kvstore.recipes.idempotency import (
    JSON,
    Claim,
    CustomSerializer,
    DataclassSerializer,
    IdempotencyRecord,
    IdempotencyStore,
    JsonSerializer,
    Serializer,
    Status,
    idempotent,
    payload_hash,
)
from kvstore.recipes.mutex import Mutex, MutexState, MutexStatus
from kvstore.recipes.versioned import (
    DEFAULT_RETRY,
    RetryPolicy,
    Txn,
    atomic,
    create,
    delete_versioned,
    get_versioned,
    put_versioned,
    update,
)

__all__ = [
    "DEFAULT_RETRY",
    "JSON",
    "Claim",
    "CustomSerializer",
    "DataclassSerializer",
    "IdempotencyRecord",
    "IdempotencyStore",
    "JsonSerializer",
    "Mutex",
    "MutexState",
    "MutexStatus",
    "RetryPolicy",
    "Serializer",
    "Status",
    "Txn",
    "atomic",
    "create",
    "delete_versioned",
    "get_versioned",
    "idempotent",
    "payload_hash",
    "put_versioned",
    "update",
]
