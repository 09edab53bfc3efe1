"""The engine a benchmark run talks to (the one given, or a DynamoDB Local started for the run),
and the path to it (direct, or through a latency-adding proxy)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kvstore.engine import LocalEngine

__all__ = ["data_path", "endpoint_or_local"]


@contextlib.contextmanager
def endpoint_or_local(endpoint: str | None) -> Iterator[str]:
    """Yield ``endpoint`` if given, else start a local engine for the duration of the block."""
    if endpoint:
        yield endpoint
        return
    with LocalEngine.start() as engine:
        yield engine.endpoint


@contextlib.contextmanager
def data_path(upstream: str, latency_ms: float) -> Iterator[str]:
    """The endpoint the targets use: ``upstream``, or a FaultProxy adding ``latency_ms`` per request."""
    if latency_ms <= 0:
        yield upstream
        return
    from kvstore.testing.faults import FaultProxy

    with FaultProxy(upstream).in_thread() as proxy:  # its own thread: its CPU is not the targets'
        proxy.latency(latency_ms / 1000.0)
        yield proxy.endpoint
