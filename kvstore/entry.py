"""Plain data: an ``Entry`` (key and value), a transaction step (``TxnEntry``) and its ``Operation``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Entry", "Operation", "TxnEntry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One key and its value.

    Keys are hierarchical, ``/``-separated strings (``"a/b/c"``); values are opaque bytes. Two
    entries are equal when both key and value are.
    """

    key: str
    value: bytes = b""


class Operation(enum.Enum):
    """What a transaction step does to its entry's key."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class TxnEntry:
    """One step of a transaction: ``PUT`` writes ``entry``; ``DELETE`` removes ``entry.key``."""

    operation: Operation
    entry: Entry
