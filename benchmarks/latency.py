"""Latency injection: put kvstore.testing.faults.FaultProxy between both targets and the engine.

DynamoDB Local answers in well under a millisecond on loopback, which hides what round trips cost:
a code path that sends one request more looks free. ``--latency-ms 5`` models an in-region round
trip by delaying every request in the proxy; both targets are pointed at the proxy's endpoint, so
they pay the same delay per request and the ratio shows what kvstore's extra requests (if any)
cost. Table setup goes straight to the engine.

The proxy runs in the harness's parent process (its event loop is idle while the workers measure),
so its own CPU cost does not land in either target's process. As a bonus, its per-operation
counters give a third, protocol-level count of each cell's requests.

=====================================================================================================
HOOK: this is the only place the harness touches the proxy. FaultProxy is owned by
kvstore/testing/faults.py (``FaultProxy(upstream)``, async context manager, ``.endpoint``,
``.latency(seconds)``, ``.stats()``, ``.reset_stats()``). Adapt here if that API changes.
=====================================================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DataPath", "LatencyUnavailable", "data_path"]


class LatencyUnavailable(RuntimeError):
    """Latency was asked for but kvstore.testing.faults is not importable."""


@dataclass(slots=True)
class DataPath:
    """Where the targets send requests, and the proxy in between (None when direct)."""

    endpoint: str
    latency_ms: float
    proxy: Any = None

    def reset_counts(self) -> None:
        """Zero the proxy's counters before a cell (no-op when direct)."""
        if self.proxy is not None:
            self.proxy.reset_stats()

    def forwarded(self) -> int | None:
        """Requests the proxy forwarded since :meth:`reset_counts` (None when direct)."""
        if self.proxy is None:
            return None
        return int(self.proxy.stats().forwarded)

    def describe(self) -> dict[str, object]:
        """For the results: direct or through the proxy, with how much latency."""
        return {"latency_ms": self.latency_ms, "via": "FaultProxy" if self.proxy is not None else "direct"}


@contextlib.asynccontextmanager
async def data_path(upstream: str, latency_ms: float) -> AsyncIterator[DataPath]:
    """Yield the endpoint the targets should use: ``upstream`` itself, or a delaying proxy.

    :raises LatencyUnavailable: ``latency_ms > 0`` and FaultProxy cannot be imported.
    """
    if latency_ms <= 0:
        yield DataPath(upstream, 0.0)
        return
    try:
        from kvstore.testing.faults import FaultProxy
    except ImportError as exc:
        raise LatencyUnavailable(f"--latency-ms needs kvstore.testing.faults.FaultProxy: {exc}") from exc
    async with FaultProxy(upstream) as proxy:
        proxy.latency(latency_ms / 1000.0)
        yield DataPath(proxy.endpoint, latency_ms, proxy)
