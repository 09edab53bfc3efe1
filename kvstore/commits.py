"""Normalising transactions and conditional commits before any backend touches storage.

Both backends validate the same way, so a request that one refuses the other refuses too, and
nothing is written when any step is bad: keys and values are checked, steps on the same key are
coalesced (the last wins), and DynamoDB's transaction limits (100 items, 4 MB) are enforced.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.backend import Absent, Check, Write
from kvstore.entry import Operation, TxnEntry
from kvstore.errors import InvalidValue, TransactionTooLarge
from kvstore.keys import validate_key
from kvstore.limits import MAX_TXN_BYTES, MAX_TXN_ITEMS, check_entry, record_size

__all__ = ["check_size", "coalesce", "validate_commit"]



def coalesce(txns: Sequence[TxnEntry]) -> list[Write]:
    """Validate transaction steps and keep the last step per key, in first-seen order."""
    if isinstance(txns, str | bytes) or not isinstance(txns, Sequence):
        raise InvalidValue("transaction takes a sequence of TxnEntry")
    last: dict[str, Write] = {}
    for t in txns:
        if not isinstance(t, TxnEntry) or not isinstance(t.operation, Operation):
            raise InvalidValue(f"transaction steps must be TxnEntry, not {type(t).__name__}")
        if t.operation is Operation.PUT:
            check_entry(t.entry)
        else:
            validate_key(t.entry.key)
        last[t.entry.key] = Write(t.operation, t.entry)
    writes = list(last.values())
    check_size(writes, ())
    return writes


def check_size(writes: Sequence[Write], checks: Sequence[Check], *, fenced: bool = False) -> None:
    """Refuse what DynamoDB would: over 100 transaction items (a fence is one more) or 4 MB.

    Folder pointers are not counted: they are written before the transaction, not in it.

    :raises TransactionTooLarge: nothing has been written.
    """
    count = len(writes) + len(checks) + (1 if fenced else 0)
    if count > MAX_TXN_ITEMS:
        raise TransactionTooLarge("items", count, MAX_TXN_ITEMS)
    size = sum(record_size(w.entry.key, w.entry.value) for w in writes)
    if size > MAX_TXN_BYTES:
        raise TransactionTooLarge("bytes", size, MAX_TXN_BYTES)


def validate_commit(writes: Sequence[Write], checks: Sequence[Check], *, fenced: bool = False) -> None:
    """Check a conditional commit before anything is sent.

    Each key may appear once, as a write or as a check (DynamoDB refuses two operations on one item
    in a transaction, and a key that is written carries its own condition).

    :raises InvalidValue: a malformed write, check or expected version, or a key named twice.
    :raises InvalidKey, ValueTooLarge, TransactionTooLarge: as for the entries themselves.
    """
    seen: set[str] = set()
    for w in writes:
        if not isinstance(w, Write):
            raise InvalidValue(f"commit writes must be Write, not {type(w).__name__}")
        if w.operation is Operation.PUT:
            check_entry(w.entry)
        else:
            validate_key(w.entry.key)
        _check_expected(w.if_version, allow_none=True)
        seen.add(w.entry.key)
    for c in checks:
        if not isinstance(c, Check):
            raise InvalidValue(f"commit checks must be Check, not {type(c).__name__}")
        validate_key(c.key)
        _check_expected(c.if_version, allow_none=False)
    if len(seen) != len(writes):
        raise InvalidValue("a commit may write each key at most once")
    both = seen.intersection(c.key for c in checks)
    if both or len({c.key for c in checks}) != len(checks):
        raise InvalidValue(f"a commit may name each key once, as a write or a check: {sorted(both)!r}")
    check_size(writes, checks, fenced=fenced)


def _check_expected(v: object, *, allow_none: bool) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, str | Absent):
        raise InvalidValue(f"expected version must be a version token or ABSENT, not {v!r}")
