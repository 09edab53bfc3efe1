"""DynamoDB's size limits, and the checks every backend runs before it writes anything.

The in-memory backend enforces the same limits as the DynamoDB one, so code tested against it does
not meet a ``ValueTooLarge`` for the first time in production.
"""

from __future__ import annotations

from kvstore.entry import Entry
from kvstore.errors import InvalidValue, ValueTooLarge
from kvstore.keys import split, validate_key

__all__ = [
    "MAX_ITEM_BYTES",
    "MAX_TXN_BYTES",
    "MAX_TXN_ITEMS",
    "RECORD_OVERHEAD",
    "check_entry",
    "record_size",
]

#: DynamoDB's maximum item size, attribute names included.
MAX_ITEM_BYTES = 400 * 1024
#: DynamoDB's limits on one TransactWriteItems call.
MAX_TXN_ITEMS = 100
MAX_TXN_BYTES = 4 * 1024 * 1024
#: Room kept for the attributes a record carries besides Path, Key and Value (its version token
#: and names), so that the check never passes an item the engine then refuses.
RECORD_OVERHEAD = 64


def record_size(key: str, value: bytes) -> int:
    """The size DynamoDB counts for the record of ``key`` holding ``value`` (an upper bound)."""
    path, name = split(key)
    return (
        len("Path") + len(path.encode())
        + len("Key") + len(name.encode())
        + len("Value") + len(value)
        + RECORD_OVERHEAD
    )


def check_entry(entry: object) -> Entry:
    """Return ``entry`` if it can be stored; raise a typed error otherwise.

    :raises InvalidValue: not an :class:`Entry`, or its value is not ``bytes``.
    :raises InvalidKey: the key is malformed, reserved (see :func:`~kvstore.keys.validate_key`) or too long.
    :raises ValueTooLarge: the record would exceed DynamoDB's 400 KB item limit.
    """
    if not isinstance(entry, Entry):
        raise InvalidValue(f"expected an Entry, not {type(entry).__name__}")
    key = validate_key(entry.key)
    if not isinstance(entry.value, bytes | bytearray | memoryview):
        raise InvalidValue(f"value for key {key!r} must be bytes, not {type(entry.value).__name__}")
    size = record_size(key, bytes(entry.value))
    if size > MAX_ITEM_BYTES:
        raise ValueTooLarge(key, size, MAX_ITEM_BYTES)
    return entry
