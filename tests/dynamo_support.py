"""What DynamoDB tests share: a backend whose requests pass through a fault proxy."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from kvstore.dynamodb import DynamoDBBackend
from kvstore.testing.faults import FaultProxy


@contextlib.asynccontextmanager
async def proxied(conf: dict[str, str], **extra: str) -> AsyncIterator[tuple[FaultProxy, DynamoDBBackend]]:
    """A backend (``conf`` plus ``extra``) whose requests go through a fault proxy to the engine."""
    async with FaultProxy(conf["endpoint"]) as proxy:
        # environ={}: the session's AWS_DYNAMODB_ENDPOINT would otherwise win over the proxy's.
        backend = await DynamoDBBackend.create({**conf, "endpoint": proxy.endpoint, **extra}, environ={})
        try:
            yield proxy, backend
        finally:
            await backend.aclose()
