"""The closed loop the experiments measure with: ``concurrency`` tasks pulling keys from one queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Op", "closed_loop"]

Op = Callable[[str], Awaitable[Any]]


async def closed_loop(op: Op, keys: list[str], concurrency: int,
                      latencies: list[float] | None = None) -> tuple[float, float, int]:
    """(CPU s, wall s, errors) of ``op`` on every key, in a closed loop of ``concurrency`` tasks.

    CPU is ``time.thread_time()`` of the event-loop thread, so the client's own (an engine runs in
    another process). Each operation's latency (s) is appended to ``latencies`` when given. Tasks
    the operations left running (kvstore's follow-up writes) are waited for: their CPU counts,
    their time does not.
    """
    todo = iter(keys)
    errors = 0
    took = latencies if latencies is not None else []

    async def worker() -> None:
        nonlocal errors
        for key in todo:
            start = time.perf_counter()
            try:
                await op(key)
            except Exception:
                errors += 1
            took.append(time.perf_counter() - start)

    before = asyncio.all_tasks()
    cpu0, t0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(keys)))))
    wall = time.perf_counter() - t0
    if left := asyncio.all_tasks() - before - {asyncio.current_task()}:
        await asyncio.wait(left, timeout=30)
    return time.thread_time() - cpu0, wall, errors
