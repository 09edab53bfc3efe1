"""A fault-injecting HTTP proxy that speaks DynamoDB's JSON protocol.

DynamoDB Local is a faithful engine but a perfectly healthy one: it never throttles, never
returns ``UnprocessedItems``, never loses a connection and answers in microseconds. Production
DynamoDB does all of these, and kvstore's retry, batching and idempotency code exists because of
them. :class:`FaultProxy` sits between an aiobotocore client and DynamoDB Local and injects those
faults on purpose, so tests can check that every one of them is handled, and benchmarks can add
an in-region round trip (``latency(0.005)``) to count what a code path really costs.

In the test's own event loop::

    async with FaultProxy("http://127.0.0.1:8000") as proxy:
        proxy.latency(0.005)                                   # every request, until clear()
        proxy.throttle(times=2, operations={"PutItem"})        # next two PutItems get HTTP 400
        proxy.partial_batch(keep=10, times=1)                  # next BatchWriteItem: 10 land
        async with session.create_client("dynamodb", endpoint_url=proxy.endpoint, ...) as c:
            ...
        print(proxy.stats()["PutItem"])                        # seen / forwarded / faulted

In a background thread, for synchronous code, code that runs its own event loop, or another
process that is only handed the endpoint URL (every control method is thread-safe)::

    with FaultProxy("http://127.0.0.1:8000").in_thread() as proxy:
        proxy.reset_connection(times=1, after_forward=True)   # write lands, response is lost
        subprocess.run([..., "--endpoint", proxy.endpoint])

Every fault method returns a :class:`Fault` handle (``fired``, ``active``, ``cancel()``) and
takes the same three limits:

* ``operations``: the DynamoDB operation names it applies to (read from ``X-Amz-Target``);
  ``None`` means every operation the fault makes sense for.
* ``times``: fire at most this many times.
* ``duration``: fire only during this many seconds from the call.

With neither ``times`` nor ``duration`` a fault stays until :meth:`FaultProxy.clear` (or
:meth:`Fault.cancel`). Faults that answer instead of the engine (``throttle``,
``transaction_conflict``, ``reset_connection``, ``stall``) are tried in the order they were
added, and the first active one takes the request; ``latency``, ``partial_batch`` and
``strip_all_old`` combine with them and with plain forwarding.

Requests are forwarded with their original headers (less hop-by-hop ones, ``Host`` and
``Content-Length``). ``partial_batch`` changes the request body, which invalidates its SigV4
signature: DynamoDB Local does not check signatures strictly, real DynamoDB would. This proxy is
for tests against DynamoDB Local, not for production traffic.

The package, one concept per module:

* :mod:`.handles`: the fault kinds and their parameters, :class:`Fault` handles and the
  thread-safe set of installed faults that decides which of them take a request.
* :mod:`.stats`: the per-operation counters (:class:`ProxyStats`, :class:`OperationStats`).
* :mod:`.rewrites`: pure DynamoDB JSON rewrites (batch splits, forged errors, ``ALL_OLD``).
* :mod:`.http`: HTTP/1.1 reading, writing and dropping of connections, and forwarding upstream.
* :mod:`.proxy`: :class:`FaultProxy` itself.
* :mod:`.thread`: running a proxy in a thread of its own (:meth:`FaultProxy.in_thread`).
"""

from kvstore.testing.faults.handles import (
    MAX_DELAY_SECONDS,
    MAX_STALL_SECONDS,
    Fault,
    FaultKind,
    ResetHow,
    StallThen,
    ThrottleCode,
)
from kvstore.testing.faults.http import UNKNOWN_OPERATION
from kvstore.testing.faults.proxy import FaultProxy
from kvstore.testing.faults.stats import OperationStats, ProxyStats

__all__ = [
    "MAX_DELAY_SECONDS",
    "MAX_STALL_SECONDS",
    "UNKNOWN_OPERATION",
    "Fault",
    "FaultKind",
    "FaultProxy",
    "OperationStats",
    "ProxyStats",
    "ResetHow",
    "StallThen",
    "ThrottleCode",
]
