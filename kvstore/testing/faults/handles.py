"""Fault handles: what a fault is (kind, limits, parameters) and the thread-safe set of installed ones.

A :class:`Fault` is the handle a test gets back from a :class:`~kvstore.testing.faults.FaultProxy`
fault method. :class:`FaultSet` owns the lock every handle of one proxy shares, and is the only
place that reads or changes a handle's counters under that lock: it installs faults, removes them,
and picks, atomically, which faults take a request (:meth:`FaultSet.plan`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from kvstore.testing.faults.rewrites import BatchSplit, split_batch

__all__ = [
    "ALL_OLD_OPERATIONS",
    "BATCH_OPERATIONS",
    "JSON_OPERATIONS",
    "TRANSACTION_OPERATIONS",
    "MAX_DELAY_SECONDS",
    "MAX_STALL_SECONDS",
    "Fault",
    "FaultKind",
    "FaultParams",
    "FaultSet",
    "Latency",
    "PartialBatch",
    "Plan",
    "ResetConnection",
    "ResetHow",
    "Stall",
    "StallThen",
    "StripAllOld",
    "Throttle",
    "ThrottleCode",
    "TransactionConflict",
    "check_limits",
    "check_seconds",
    "normalise_operations",
]

FaultKind = Literal[
    "latency",
    "throttle",
    "partial_batch",
    "transaction_conflict",
    "reset_connection",
    "stall",
    "strip_all_old",
]
"""The kinds of fault; also the keys of :attr:`OperationStats.faults` and ``clear(kind)``."""

ThrottleCode = Literal[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
]
"""The throttling error codes DynamoDB answers with (all HTTP 400, all retried by botocore)."""

ResetHow = Literal["rst", "close"]
"""How a connection is dropped: ``"rst"`` sends a TCP reset (aiobotocore raises
``EndpointConnectionError``), ``"close"`` a clean FIN with no response (``ConnectionClosedError``)."""

StallThen = Literal["respond", "reset"]
"""What a stall does once its time is up: deliver the response or reset the connection."""

MAX_DELAY_SECONDS: Final = 10.0
"""Upper bound of a latency (plus jitter): a proxy that can hang a test forever is a bug."""

MAX_STALL_SECONDS: Final = 60.0
"""Upper bound of a stall; a stall is meant to outlast a client's read timeout, not the test."""

BATCH_OPERATIONS: Final = frozenset({"BatchWriteItem", "BatchGetItem"})
"""The operations ``partial_batch`` applies to."""
TRANSACTION_OPERATIONS: Final = frozenset({"TransactWriteItems", "TransactGetItems"})
"""The operations ``transaction_conflict`` applies to."""
ALL_OLD_OPERATIONS: Final = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})
"""The operations ``strip_all_old`` applies to."""
JSON_OPERATIONS: Final = BATCH_OPERATIONS | TRANSACTION_OPERATIONS | ALL_OLD_OPERATIONS
"""The operations whose request body some fault reads."""
_TERMINAL_KINDS: Final = frozenset({"throttle", "transaction_conflict", "reset_connection", "stall"})


# --------------------------------------------------------------------------------------------
# Parameters, one class per kind
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """``latency``: delay by ``seconds`` plus a uniform ``[0, jitter]``."""

    seconds: float
    jitter: float


@dataclass(frozen=True, slots=True)
class Throttle:
    """``throttle``: answer with throttling error ``code`` and ``message``."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PartialBatch:
    """``partial_batch``: forward ``keep`` requests of a batch, or a ``fraction`` of them."""

    keep: int | None
    fraction: float | None


@dataclass(frozen=True, slots=True)
class TransactionConflict:
    """``transaction_conflict``: the item indexes reported as conflicting (``None``: all)."""

    indexes: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class ResetConnection:
    """``reset_connection``: drop before or after forwarding, by reset or clean close."""

    after_forward: bool
    how: ResetHow


@dataclass(frozen=True, slots=True)
class Stall:
    """``stall``: hold the request or the response ``seconds``, then respond or reset."""

    seconds: float
    then: StallThen
    after_forward: bool


@dataclass(frozen=True, slots=True)
class StripAllOld:
    """``strip_all_old``: remove the old item from ``ALL_OLD`` condition failures."""


FaultParams = Latency | Throttle | PartialBatch | TransactionConflict | ResetConnection | Stall | StripAllOld


# --------------------------------------------------------------------------------------------
# Argument checks shared by the fault methods
# --------------------------------------------------------------------------------------------


def normalise_operations(
    operations: Collection[str] | str | None, allowed: frozenset[str] | None
) -> frozenset[str] | None:
    """``operations`` as a set (``None`` stays ``None``); :class:`ValueError` outside ``allowed``."""
    if operations is None:
        return None
    ops = frozenset({operations} if isinstance(operations, str) else operations)
    if not ops:
        raise ValueError("operations must not be empty (use None for all operations)")
    if allowed is not None and not ops <= allowed:
        raise ValueError(f"this fault only applies to {sorted(allowed)}, not {sorted(ops - allowed)}")
    return ops


def check_limits(times: int | None, duration: float | None) -> None:
    """:class:`ValueError` unless ``times`` and ``duration`` are ``None`` or non-negative."""
    if times is not None and times < 0:
        raise ValueError("times must be >= 0")
    if duration is not None and not duration >= 0:
        raise ValueError("duration must be >= 0")


def check_seconds(name: str, value: float, maximum: float) -> None:
    """:class:`ValueError` unless ``0 <= value <= maximum``."""
    if not 0.0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum} seconds, got {value!r}")


# --------------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------------


class Fault:
    """A handle to one installed fault.

    It lets a test check that the fault really fired (``fired``) instead of passing because
    nothing happened, and remove just this fault (``cancel()``) while keeping the others.
    """

    __slots__ = ("_cancelled", "_deadline", "_fired", "_lock", "_remaining", "kind", "operations", "params")

    def __init__(
        self,
        lock: threading.Lock,
        kind: FaultKind,
        operations: frozenset[str] | None,
        times: int | None,
        duration: float | None,
        params: FaultParams,
    ) -> None:
        self._lock = lock
        self.kind: Final = kind
        #: The operations this fault applies to; ``None`` for all it makes sense for.
        self.operations: Final = operations
        self.params: Final[FaultParams] = params
        self._remaining = times
        self._deadline = None if duration is None else time.monotonic() + duration
        self._fired = 0
        self._cancelled = False

    @property
    def fired(self) -> int:
        """How many requests this fault has acted on so far."""
        with self._lock:
            return self._fired

    @property
    def remaining(self) -> int | None:
        """How many more times it may fire (``None``: no count limit)."""
        with self._lock:
            return self._remaining

    @property
    def active(self) -> bool:
        """Whether it can still fire (not cancelled, not used up, not expired)."""
        with self._lock:
            return self._is_active(time.monotonic())

    def cancel(self) -> None:
        """Remove this fault; requests already being handled keep what they got."""
        with self._lock:
            self._cancelled = True

    def __repr__(self) -> str:
        ops = "*" if self.operations is None else ",".join(sorted(self.operations))
        return f"<Fault {self.kind} ops={ops} fired={self._fired} {self.params!r}>"

    # The methods below are called by FaultSet (this module) with the shared lock held.

    def _is_active(self, now: float) -> bool:
        if self._cancelled:
            return False
        if self._remaining is not None and self._remaining <= 0:
            return False
        return self._deadline is None or now < self._deadline

    def _matches(self, operation: str, now: float) -> bool:
        return (self.operations is None or operation in self.operations) and self._is_active(now)

    def _consume(self) -> None:
        self._fired += 1
        if self._remaining is not None:
            self._remaining -= 1


def _may_forward(terminal: Fault | None) -> bool:
    """Whether a request taken by ``terminal`` (if any) may still reach the engine."""
    if terminal is None:
        return True
    params = terminal.params
    if isinstance(params, ResetConnection):
        return params.after_forward
    if isinstance(params, Stall):
        return params.after_forward or params.then == "respond"
    return False


@dataclass(slots=True)
class Plan:
    """What to do with one request, decided atomically when it arrives (:meth:`FaultSet.plan`).

    ``delay`` is the latency to add, ``terminal`` the fault that answers instead of the engine
    (if any), ``partial`` the ``partial_batch`` fault that shortened the batch into ``split``.
    """

    delay: float = 0.0
    terminal: Fault | None = None
    partial: Fault | None = None
    split: BatchSplit | None = None


class FaultSet:
    """The faults installed on one proxy, behind one lock; every method is thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        """``seed`` makes latency jitter reproducible."""
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []

    def add(
        self,
        kind: FaultKind,
        operations: Collection[str] | str | None,
        allowed: frozenset[str] | None,
        times: int | None,
        duration: float | None,
        params: FaultParams,
    ) -> Fault:
        """Check the limits, install a fault and return its handle.

        ``allowed`` is the set of operations the kind makes sense for (``None``: all); it is
        also the default when ``operations`` is ``None``.
        """
        check_limits(times, duration)
        ops = normalise_operations(operations, allowed)
        if ops is None and allowed is not None:
            ops = allowed
        fault = Fault(self._lock, kind, ops, times, duration, params)
        with self._lock:
            # Drop faults that can never fire again, so the list does not grow without bound.
            now = time.monotonic()
            self._faults = [f for f in self._faults if f._is_active(now)]
            self._faults.append(fault)
        return fault

    def clear(self, kind: FaultKind | None = None) -> None:
        """Cancel and remove every fault, or every fault of one kind."""
        with self._lock:
            for fault in self._faults:
                if kind is None or fault.kind == kind:
                    fault._cancelled = True
            self._faults = [f for f in self._faults if not f._cancelled]

    def installed(self) -> list[Fault]:
        """The faults installed and not cancelled (some may be used up or expired)."""
        with self._lock:
            return [f for f in self._faults if not f._cancelled]

    def __bool__(self) -> bool:
        """Whether any fault is installed (a cheap, unlocked hint)."""
        return bool(self._faults)

    def plan(self, operation: str, doc: Mapping[str, Any] | None) -> Plan:
        """Decide which faults take a request of ``operation`` (with JSON body ``doc``); use them up.

        Every matching latency adds up; the first matching terminal fault takes the request;
        a partial batch is only used up by a request that will be forwarded and that it
        actually shortens.
        """
        plan = Plan()
        with self._lock:
            now = time.monotonic()
            for fault in self._faults:
                if not fault._matches(operation, now):
                    continue
                params = fault.params
                if isinstance(params, Latency):
                    fault._consume()
                    plan.delay += params.seconds + (self._rng.uniform(0.0, params.jitter) if params.jitter else 0.0)
                elif fault.kind in _TERMINAL_KINDS and plan.terminal is None:
                    fault._consume()
                    plan.terminal = fault
            if doc and _may_forward(plan.terminal):
                for fault in self._faults:
                    params = fault.params
                    if isinstance(params, PartialBatch) and fault._matches(operation, now):
                        split = split_batch(operation, doc, keep=params.keep, fraction=params.fraction)
                        if split is not None:
                            fault._consume()
                            plan.partial, plan.split = fault, split
                            break
        plan.delay = min(plan.delay, MAX_DELAY_SECONDS)
        return plan

    def find_strip(self, operation: str) -> Fault | None:
        """The first active ``strip_all_old`` fault for ``operation``, not yet used up."""
        with self._lock:
            now = time.monotonic()
            for fault in self._faults:
                if fault.kind == "strip_all_old" and fault._matches(operation, now):
                    return fault
        return None

    def consume_if_active(self, fault: Fault) -> bool:
        """Use ``fault`` up once if it is still active; whether it was (a race-free take)."""
        with self._lock:
            if not fault._is_active(time.monotonic()):
                return False
            fault._consume()
            return True
