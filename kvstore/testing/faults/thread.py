"""Running a proxy in a daemon thread with an event loop of its own (``FaultProxy.in_thread``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["ProxyThread", "Startable"]

logger = logging.getLogger(__name__)


class Startable(Protocol):
    """Something started and stopped in an event loop, like :class:`FaultProxy`."""

    async def start(self) -> Any:
        """Start in the running event loop."""

    async def stop(self) -> None:
        """Stop, releasing everything started."""


S = TypeVar("S", bound=Startable)


class ProxyThread(Generic[S]):
    """Runs ``proxy`` in a daemon thread with its own event loop; a context manager giving ``proxy``.

    Entering starts the thread and waits (up to ``start_timeout`` seconds) until the proxy
    listens, re-raising in the caller whatever made its start fail; leaving stops the proxy and
    joins the thread.
    """

    def __init__(self, proxy: S, start_timeout: float) -> None:
        self._proxy = proxy
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> S:
        if self._thread is not None:
            raise RuntimeError("already entered")
        self._thread = threading.Thread(target=self._run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"FaultProxy did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._start_timeout)
            raise self._error
        return self._proxy

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            # stop() cancels every handler, so this is quick; the bound is a safety net.
            thread.join(self._start_timeout + 10.0)
            if thread.is_alive():
                logger.warning("FaultProxy thread did not stop in time")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._proxy.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._proxy.stop()
