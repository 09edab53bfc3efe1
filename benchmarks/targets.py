"""What the harness benchmarks: a *target* is anything with kvstore's four storage methods.

The harness only ever talks to this protocol, so kvstore and the raw baseline are interchangeable
and another peer (say, a second backend) is one more entry in :data:`FACTORIES`. Targets are opened
inside their own worker process (see :mod:`benchmarks.worker`); their modules are imported there
lazily, so the harness runs even while kvstore's DynamoDB backend does not import.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["FACTORIES", "SelfCounting", "Target", "TargetSettings", "open_target"]


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """Where a target sends its requests. Both targets of a run get the same endpoint."""

    endpoint: str
    table: str
    region: str = "us-east-1"
    access_key: str = "local"
    secret_key: str = "local"
    max_parallel: int = 128


class Target(Protocol):
    """The storage operations a workload issues (values are plain bytes on both targets)."""

    name: str

    async def put(self, key: str, value: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def list(self, prefix: str) -> list[str]: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, object]:
        """Facts worth recording in the results (library version, client settings)."""
        ...


@runtime_checkable
class SelfCounting(Protocol):
    """A target that counts the requests it sends itself (the raw baseline does)."""

    def self_counts(self) -> tuple[int, int]:
        """(requests, items) sent so far."""
        ...


#: Target name -> "module:callable" of an async factory taking :class:`TargetSettings`.
FACTORIES: dict[str, str] = {
    "kvstore": "benchmarks.kvstore_target:open_kvstore",
    "raw": "benchmarks.raw:open_raw",
}


async def open_target(name: str, settings: TargetSettings) -> Target:
    """Import the target's module and open it.

    :raises KeyError: unknown target name.
    :raises ImportError: the target's library is not importable (yet).
    """
    module_name, _, attr = FACTORIES[name].partition(":")
    factory: Callable[[TargetSettings], Awaitable[Target]] = getattr(importlib.import_module(module_name), attr)
    return await factory(settings)
