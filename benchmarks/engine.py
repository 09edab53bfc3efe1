"""The engine a benchmark run talks to: the one given, or a DynamoDB Local started for the run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kvstore.engine import LocalEngine

__all__ = ["endpoint_or_local"]


@contextlib.contextmanager
def endpoint_or_local(endpoint: str | None) -> Iterator[str]:
    """Yield ``endpoint`` if given, else start a local engine for the duration of the block."""
    if endpoint:
        yield endpoint
        return
    with LocalEngine.start() as engine:
        yield engine.endpoint
