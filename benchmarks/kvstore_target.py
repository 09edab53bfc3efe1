"""The kvstore target: kvstore's public DynamoDBBackend, used exactly as an application would.

Only public names are imported (``kvstore.Entry``, ``kvstore.dynamodb.DynamoDBBackend``), and only
when the target is opened, so the harness keeps working while the backend is being written.
The table is created by the harness beforehand (PAY_PER_REQUEST, same as the raw target's), so
table setup is outside every measurement.
"""

from __future__ import annotations

from typing import Any

from benchmarks.targets import TargetSettings

__all__ = ["KvstoreTarget", "open_kvstore"]


class KvstoreTarget:
    """Adapts ``DynamoDBBackend`` to the :class:`benchmarks.targets.Target` protocol."""

    name = "kvstore"

    def __init__(self, backend: Any, entry_type: Any, settings: TargetSettings) -> None:
        self._backend = backend
        self._entry = entry_type
        self._settings = settings

    def describe(self) -> dict[str, object]:
        """kvstore's version and the configuration it was opened with."""
        import kvstore

        return {
            "implementation": "kvstore.dynamodb.DynamoDBBackend",
            "kvstore": getattr(kvstore, "__version__", "unknown"),
            "max_parallel": self._settings.max_parallel,
        }

    async def put(self, key: str, value: bytes) -> None:
        """``backend.put(Entry(key, value))``."""
        await self._backend.put(self._entry(key, value))

    async def get(self, key: str) -> bytes | None:
        """``backend.get(key)``, reduced to the value."""
        entry = await self._backend.get(key)
        if entry is None:
            return None
        value: bytes = entry.value
        return value

    async def list(self, prefix: str) -> list[str]:
        """``backend.list(prefix)``."""
        names: list[str] = await self._backend.list(prefix)
        return names

    async def delete(self, key: str) -> None:
        """``backend.delete(key)``."""
        await self._backend.delete(key)

    async def aclose(self) -> None:
        """``backend.aclose()``."""
        await self._backend.aclose()


async def open_kvstore(settings: TargetSettings) -> KvstoreTarget:
    """Open ``DynamoDBBackend`` on the harness's table and endpoint.

    :raises ImportError: kvstore's DynamoDB backend is not importable (yet).
    """
    from kvstore import Entry
    from kvstore.dynamodb import DynamoDBBackend

    backend = await DynamoDBBackend.create(
        {
            "endpoint": settings.endpoint,
            "table": settings.table,
            "region": settings.region,
            "access_key": settings.access_key,
            "secret_key": settings.secret_key,
            "max_parallel": str(settings.max_parallel),
        }
    )
    return KvstoreTarget(backend, Entry, settings)
