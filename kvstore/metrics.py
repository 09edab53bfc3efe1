"""Metrics through the OpenTelemetry API: the one place kvstore's instruments are made and fed.

OpenTelemetry is optional (``pip install kvstore[metrics]``). Without ``opentelemetry-api`` every
function here returns at once, so the rest of the package calls them unconditionally; with it but
no MeterProvider configured yet, they return after reading a clock (no timing, no attributes
built; the API is asked for a provider at most once a second, since that looks at the environment,
so a provider set late misses at most a second of data). The instruments are created lazily, on
the first call after a provider is there, from ``get_meter("kvstore", version)`` of the global
MeterProvider, or of the one given to :func:`use_meter_provider` (tests, or an application that
keeps its provider out of the global slot, which can be set only once per process).

Instruments (attribute keys in brackets):

=================================  =====================  ==============================================
``kvstore.request.duration``       histogram, s           one DynamoDB request, permit wait excluded
                                                          [``operation`` (``GetItem``...), ``outcome``
                                                          (``ok``/``error``)]
``kvstore.request.errors``         counter, {error}       [``operation``, ``error.type`` (kvstore class,
                                                          e.g. ``Throttled``), ``code`` (wire code)]
``kvstore.throttles``              counter, {throttle}    requests that failed throttled after the SDK's
                                                          own retries [``operation``]
``kvstore.batch.retries``          counter, {retry}       batch (re)submissions of unprocessed or failed
                                                          items [``operation``, ``reason``]
``kvstore.batch.unprocessed_items``  counter, {item}      items a batch reply handed back [``operation``]
``kvstore.permits.in_use``         observable up-down     permits held now, over every PermitPool
``kvstore.permits.waiting``        observable up-down     requests waiting for a permit now
``kvstore.cache.hits``/``misses``  counter, {get}         CachedBackend gets from memory / passed through
``kvstore.lock.held``              up-down counter        grants held by this process [``lock`` = key]
``kvstore.lock.renewals``          counter, {renewal}     [``lock``, ``outcome``: ``ok``, ``failed``
                                                          (transient, retried), ``lost``, ``error``]
=================================  =====================  ==============================================

Observable callbacks run on the metric reader's thread: they only read integer counters of the
pools (never asyncio state), which is safe under the GIL.
"""

from __future__ import annotations

import threading
import weakref
from time import monotonic as _monotonic
from time import perf_counter as _clock
from typing import TYPE_CHECKING, Any, Protocol

from kvstore.errors import BackendError, Throttled

try:
    from opentelemetry import metrics as otel_metrics

    AVAILABLE = True
    """Whether ``opentelemetry-api`` is importable (else every function here is a no-op)."""
except ImportError:  # the optional extra is not installed
    AVAILABLE = False

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = [
    "AVAILABLE",
    "DURATION_BUCKETS",
    "METER_NAME",
    "record_batch_retry",
    "record_cache",
    "record_lock_held",
    "record_lock_released",
    "record_renewal",
    "record_request",
    "record_unprocessed",
    "timed_request",
    "track_permits",
    "use_meter_provider",
]

#: The instrumentation scope name of every kvstore instrument.
METER_NAME = "kvstore"

#: Histogram buckets in seconds: DynamoDB answers in single-digit milliseconds in-region, and
#: throttled or stalled requests take up to seconds. (OpenTelemetry's default buckets assume ms.)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _PoolLike(Protocol):
    """What the permit gauges read from a :class:`~kvstore.permits.PermitPool` (no import cycle)."""

    @property
    def in_use(self) -> int: ...

    @property
    def waiting(self) -> int: ...


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_pools_lock = threading.Lock()  # the reader's thread iterates while the loop's thread registers


def _snapshot() -> list[_PoolLike]:
    with _pools_lock:
        return list(_pools)


def _observe_in_use(options: CallbackOptions) -> Iterable[Observation]:
    yield otel_metrics.Observation(sum(p.in_use for p in _snapshot()))


def _observe_waiting(options: CallbackOptions) -> Iterable[Observation]:
    yield otel_metrics.Observation(sum(p.waiting for p in _snapshot()))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvstore")
    except PackageNotFoundError:
        return "0"


class _Instruments:
    """Every kvstore instrument, made from one meter."""

    def __init__(self, meter: Meter) -> None:
        try:
            self.duration = meter.create_histogram(
                "kvstore.request.duration", unit="s", description="Duration of one DynamoDB request",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        except TypeError:  # opentelemetry-api < 1.23 has no bucket advice: configure a View instead
            self.duration = meter.create_histogram(
                "kvstore.request.duration", unit="s", description="Duration of one DynamoDB request"
            )
        self.errors = meter.create_counter(
            "kvstore.request.errors", unit="{error}", description="DynamoDB requests that failed"
        )
        self.throttles = meter.create_counter(
            "kvstore.throttles", unit="{throttle}", description="Requests throttled after the SDK's retries"
        )
        self.batch_retries = meter.create_counter(
            "kvstore.batch.retries", unit="{retry}", description="Batch resubmissions of unprocessed or failed items"
        )
        self.unprocessed = meter.create_counter(
            "kvstore.batch.unprocessed_items", unit="{item}", description="Items a batch reply returned unprocessed"
        )
        self.cache_hits = meter.create_counter(
            "kvstore.cache.hits", unit="{get}", description="CachedBackend gets answered from memory"
        )
        self.cache_misses = meter.create_counter(
            "kvstore.cache.misses", unit="{get}", description="CachedBackend gets passed to the backend"
        )
        self.lock_held = meter.create_up_down_counter(
            "kvstore.lock.held", unit="{lock}", description="Lock grants this process holds"
        )
        self.renewals = meter.create_counter(
            "kvstore.lock.renewals", unit="{renewal}", description="Lock renewal attempts by outcome"
        )
        meter.create_observable_up_down_counter(
            "kvstore.permits.in_use", callbacks=[_observe_in_use], unit="{permit}",
            description="Request permits held now",
        )
        meter.create_observable_up_down_counter(
            "kvstore.permits.waiting", callbacks=[_observe_waiting], unit="{request}",
            description="Requests waiting for a permit now",
        )


_provider: MeterProvider | None = None
_instruments: _Instruments | None = None
_next_check = 0.0  # when to look for a global provider again (while none is set)
#: How often to look for a global MeterProvider while none is set (seconds).
CHECK_INTERVAL = 1.0


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Make kvstore's instruments from ``provider`` (``None``: the global one) from now on.

    The instruments made so far are dropped, so the next call creates them anew. Tests use this
    with an SDK provider and an in-memory reader, since the global provider can be set only once.
    """
    global _provider, _instruments, _next_check
    _provider = provider
    _instruments = None
    _next_check = 0.0


#: What the API returns while no MeterProvider is set (a proxy), or one that records nothing.
_UNSET_PROVIDERS = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider"})


def _get() -> _Instruments | None:
    """The instruments, made on first use once a provider is there; None while there is none."""
    global _instruments, _next_check
    if _instruments is None and AVAILABLE:
        if _provider is None:
            now = _monotonic()
            if now < _next_check:
                return None
            _next_check = now + CHECK_INTERVAL
        provider = _provider if _provider is not None else otel_metrics.get_meter_provider()
        if type(provider).__name__ in _UNSET_PROVIDERS:
            return None  # looked at again after CHECK_INTERVAL: the application may set one later
        _instruments = _Instruments(provider.get_meter(METER_NAME, _version()))
    return _instruments


_OPERATIONS: dict[str, str] = {}


def _operation_name(operation: str) -> str:
    """DynamoDB's name of a client method: ``"batch_write_item"`` -> ``"BatchWriteItem"``."""
    name = _OPERATIONS.get(operation)
    if name is None:
        name = _OPERATIONS[operation] = "".join(part[:1].upper() + part[1:] for part in operation.split("_"))
    return name


def record_request(operation: str, seconds: float, error: BaseException | None = None) -> None:
    """Record one request (``operation`` in snake_case or DynamoDB's name) that took ``seconds``."""
    inst = _get() if AVAILABLE else None
    if inst is None:
        return
    op = _operation_name(operation)
    inst.duration.record(seconds, {"operation": op, "outcome": "ok" if error is None else "error"})
    if error is None:
        return
    attrs = {"operation": op, "error.type": type(error).__name__}
    if isinstance(error, BackendError) and error.code:
        attrs["code"] = error.code
    inst.errors.add(1, attrs)
    if isinstance(error, Throttled):
        inst.throttles.add(1, {"operation": op})


class _Timed:
    """Times the block and records it with :func:`record_request` (the exception it ends with)."""

    __slots__ = ("_operation", "_started")

    def __init__(self, operation: str) -> None:
        self._operation = operation
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = _clock()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        record_request(self._operation, _clock() - self._started, exc)


class _Untimed:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_UNTIMED = _Untimed()


def timed_request(operation: str) -> _Timed | _Untimed:
    """A context manager recording the duration and outcome of the request sent inside it."""
    return _Timed(operation) if AVAILABLE and _get() is not None else _UNTIMED


def record_batch_retry(operation: str, reason: BaseException | None = None) -> None:
    """Count one resubmission of a batch: of unprocessed items (``reason`` None) or after ``reason``."""
    inst = _get() if AVAILABLE else None
    if inst is not None:
        why = "unprocessed" if reason is None else type(reason).__name__
        inst.batch_retries.add(1, {"operation": _operation_name(operation), "reason": why})


def record_unprocessed(operation: str, count: int) -> None:
    """Count ``count`` items (or keys) a batch reply returned unprocessed."""
    inst = _get() if AVAILABLE and count else None
    if inst is not None:
        inst.unprocessed.add(count, {"operation": _operation_name(operation)})


def record_cache(*, hit: bool) -> None:
    """Count one CachedBackend get, answered from memory (``hit``) or passed through."""
    inst = _get() if AVAILABLE else None
    if inst is not None:
        (inst.cache_hits if hit else inst.cache_misses).add(1)


def record_lock_held(name: str) -> None:
    """A lock on ``name`` was granted to this process."""
    inst = _get() if AVAILABLE else None
    if inst is not None:
        inst.lock_held.add(1, {"lock": name})


def record_lock_released(name: str, lost: Any) -> None:
    """The grant whose "lost" event is ``lost`` ends; call it before setting the event.

    Counts only while ``lost`` is still clear, so the several places that end a grant count it once.
    """
    inst = _get() if AVAILABLE else None
    if inst is not None and not lost.is_set():
        inst.lock_held.add(-1, {"lock": name})


def record_renewal(name: str, outcome: str) -> None:
    """Count one renewal of the lock on ``name``: ``ok``, ``failed`` (retried), ``lost`` or ``error``."""
    inst = _get() if AVAILABLE else None
    if inst is not None:
        inst.renewals.add(1, {"lock": name, "outcome": outcome})


def track_permits(pool: _PoolLike) -> None:
    """Feed ``pool``'s ``in_use`` and ``waiting`` to the permit gauges while it lives."""
    if AVAILABLE:
        with _pools_lock:
            _pools.add(pool)
        _get()  # the observable instruments exist from now on, even before any request
