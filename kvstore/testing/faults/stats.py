"""Statistics: what the proxy did with each operation's requests, counted and snapshotted."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["OperationStats", "ProxyStats", "StatsRecorder"]


@dataclass(frozen=True, slots=True)
class OperationStats:
    """What the proxy did with one operation's requests.

    ``seen`` counts requests received, ``forwarded`` the ones sent to the engine (so the round
    trips a code path costs), ``faulted`` the ones a fault acted on (a partial batch or an
    ambiguous reset is both forwarded and faulted), ``upstream_errors`` the forwards that got no
    answer from the engine. ``faults`` splits ``faulted`` by fault kind. Latency is not a fault.
    """

    seen: int = 0
    forwarded: int = 0
    faulted: int = 0
    upstream_errors: int = 0
    faults: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters, per operation name (``stats()["BatchWriteItem"]``)."""

    operations: Mapping[str, OperationStats]

    def __getitem__(self, operation: str) -> OperationStats:
        """The counters of one operation; all zero if it was never seen."""
        return self.operations.get(operation, OperationStats())

    @property
    def seen(self) -> int:
        """Requests received, all operations together."""
        return sum(s.seen for s in self.operations.values())

    @property
    def forwarded(self) -> int:
        """Requests sent to the engine, all operations together."""
        return sum(s.forwarded for s in self.operations.values())

    @property
    def faulted(self) -> int:
        """Requests a fault acted on, all operations together."""
        return sum(s.faulted for s in self.operations.values())


@dataclass(slots=True)
class _Counters:
    seen: int = 0
    forwarded: int = 0
    faulted: int = 0
    upstream_errors: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def freeze(self) -> OperationStats:
        return OperationStats(
            self.seen,
            self.forwarded,
            self.faulted,
            self.upstream_errors,
            MappingProxyType(dict(self.faults)),
        )


class StatsRecorder:
    """Per-operation counters behind a lock of their own; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, _Counters] = {}

    def record(
        self,
        operation: str,
        *,
        seen: int = 0,
        forwarded: int = 0,
        upstream_errors: int = 0,
        faulted: int = 0,
        fault: str | None = None,
    ) -> None:
        """Add to ``operation``'s counters; ``fault`` names a fault kind that acted once more."""
        with self._lock:
            counters = self._counters.setdefault(operation, _Counters())
            counters.seen += seen
            counters.forwarded += forwarded
            counters.upstream_errors += upstream_errors
            counters.faulted += faulted
            if fault is not None:
                counters.faults[fault] = counters.faults.get(fault, 0) + 1

    def snapshot(self) -> ProxyStats:
        """A frozen copy of every operation's counters."""
        with self._lock:
            return ProxyStats(MappingProxyType({op: c.freeze() for op, c in self._counters.items()}))

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counters.clear()
