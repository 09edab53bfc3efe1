"""settle: run awaitables concurrently and raise only once every one of them has finished.

A general asyncio helper (not DynamoDB's): used wherever one operation sends several writes at once
and must not report failure while one of them is still in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["settle"]

T = TypeVar("T")


async def settle(*aws: Awaitable[T]) -> list[T]:
    """Run ``aws`` concurrently, wait until **every one** has finished, then raise the first error.

    ``asyncio.gather`` raises as soon as one awaitable fails and leaves the others running: a
    write that keeps resending after its operation already reported failure can land later and
    undo the caller's next write. Operations that send writes concurrently use this instead, so
    when they raise, nothing of theirs is still in flight.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]  # no exceptions left, so every item is a T
