"""View: a backend whose keys all live under one folder of another backend (Vault's ``physical_view.go``).

``View(store, "tenant/")`` is a full backend over the keys of ``store`` under ``tenant/``: key
``a/b`` of the view is key ``tenant/a/b`` of ``store``, ``list("")`` lists ``tenant/``, and every
:class:`~kvstore.entry.Entry` (and :class:`~kvstore.backend.VersionedEntry`) it returns carries the
key *without* the prefix, so code written against a whole store runs unchanged inside one folder::

    tenant = View(store, "tenants/acme/")
    await tenant.put(Entry("config", b"..."))          # stored as tenants/acme/config
    await tenant.get("config")                         # Entry(key="config", ...)
    async with Election(tenant, "leader", "node-1").campaign() as term:   # lock tenants/acme/leader
        await fenced_put(tenant, Entry("state", b"..."), fence=term.fence)

Keys given to the view are validated as keys of their own (:func:`kvstore.keys.validate_key`) before
the prefix is added, so none can escape it: an empty key, a leading ``/``, an empty segment or the
root marker ``" "`` as first segment would name something outside (or the folder itself) and raise
:class:`~kvstore.errors.InvalidKey`, as they do on any backend. The view adds nothing else: locks
(their names and the :class:`~kvstore.backend.Fence` of a conditional commit are mapped under the
prefix too), transactions and conditional commits are the wrapped backend's, with its atomicity.

Errors that name a key (``InvalidKey``, ``ValueTooLarge``, ``VersionConflict`` with its ``current``
entry, ``FenceRejected``) name the view's key. Limits are the wrapped backend's and count the whole
key: a key near the 2048-byte folder limit can be valid on its own and too long under the prefix.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import cast

from kvstore.backend import (
    DEFAULT_PAGE_SIZE,
    Backend,
    Check,
    ConditionalBackend,
    Fence,
    HABackend,
    Lock,
    VersionedEntry,
    Write,
)
from kvstore.commits import coalesce, validate_commit
from kvstore.entry import Entry, TxnEntry
from kvstore.errors import BackendClosed, FenceRejected, InvalidKey, InvalidValue, ValueTooLarge, VersionConflict
from kvstore.keys import validate_key, validate_lock_name, validate_prefix
from kvstore.limits import check_entry

__all__ = ["View"]


class View(Backend):
    """The keys of ``backend`` under folder ``prefix``, as a backend of their own (see the module docstring).

    ``View(backend, prefix)`` is an :class:`~kvstore.backend.HABackend` and a
    :class:`~kvstore.backend.ConditionalBackend` exactly when ``backend`` is. A view does not own
    ``backend`` (several views usually share one): :meth:`aclose` closes the view only.

    :raises InvalidKey: ``prefix`` is not a valid folder (:func:`kvstore.keys.validate_prefix`), is
        empty, or does not end in ``/``.
    :raises InvalidValue: ``backend`` is not a Backend, or ``prefix`` is not a str.
    """

    def __new__(cls, backend: Backend, prefix: str) -> View:
        if cls is View:  # pick the subclass with the wrapped backend's capabilities
            ha, cond = isinstance(backend, HABackend), isinstance(backend, ConditionalBackend)
            cls = {(False, False): View, (True, False): _HAView,
                   (False, True): _ConditionalView, (True, True): _HAConditionalView}[ha, cond]
        return super().__new__(cls)

    def __init__(self, backend: Backend, prefix: str) -> None:
        if not isinstance(backend, Backend):
            raise InvalidValue(f"View wraps a Backend, not {type(backend).__name__}")
        validate_prefix(prefix)
        if not prefix.endswith("/"):
            # "" would be no view at all, and "t" would make "t" + "x" = "tx": a sibling of the folder.
            raise InvalidKey(prefix, "a view's prefix must be a non-empty folder ending in '/'")
        self._backend = backend
        self._prefix = prefix
        self._closed = False

    @property
    def prefix(self) -> str:
        """The folder of the wrapped backend this view lives in (ends in ``/``)."""
        return self._prefix

    @property
    def backend(self) -> Backend:
        """The wrapped backend."""
        return self._backend

    # -- key mapping ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosed("the view is closed")

    def _full(self, key: str) -> str:
        """The wrapped backend's key for the view's ``key`` (validated on its own first)."""
        return self._prefix + validate_key(key)

    def _rel(self, full: str) -> str:
        return full[len(self._prefix):] if full.startswith(self._prefix) else full

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Re-raise the wrapped backend's key-naming errors with the view's keys (chained)."""
        try:
            yield
        except VersionConflict as exc:
            key = self._rel(exc.key)
            cur = exc.current
            if cur is not None:
                cur = VersionedEntry(Entry(self._rel(cur.entry.key), cur.entry.value), cur.version)
            raise VersionConflict(key, exc.expected, cur, message=str(exc).replace(repr(exc.key), repr(key)),
                                  item=exc.item, retry_attempts=exc.retry_attempts) from exc
        except FenceRejected as exc:
            key = self._rel(exc.key)
            raise FenceRejected(key, exc.expected, None, message=str(exc).replace(repr(exc.key), repr(key)),
                                item=exc.item, retry_attempts=exc.retry_attempts) from exc
        except InvalidKey as exc:
            if isinstance(exc.key, str) and exc.key.startswith(self._prefix):
                raise InvalidKey(self._rel(exc.key), exc.reason) from exc
            raise
        except ValueTooLarge as exc:
            raise ValueTooLarge(self._rel(exc.key), exc.size, exc.limit) from exc

    # -- Backend ------------------------------------------------------------------------------

    async def put(self, entry: Entry) -> None:
        check_entry(entry)
        self._check_open()
        with self._errors():
            await self._backend.put(Entry(self._full(entry.key), entry.value))

    async def get(self, key: str) -> Entry | None:
        full = self._full(key)
        self._check_open()
        with self._errors():
            found = await self._backend.get(full)
        return None if found is None else Entry(key, found.value)

    async def delete(self, key: str) -> None:
        full = self._full(key)
        self._check_open()
        with self._errors():
            await self._backend.delete(full)

    async def list(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        self._check_open()
        with self._errors():
            return await self._backend.list(self._prefix + prefix)  # child names carry no prefix

    async def list_page(self, prefix: str, *, after: str = "", limit: int = DEFAULT_PAGE_SIZE) -> builtins.list[str]:
        validate_prefix(prefix)
        self._check_open()
        with self._errors():
            return await self._backend.list_page(self._prefix + prefix, after=after, limit=limit)

    def iter_list(self, prefix: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[str]:
        validate_prefix(prefix)
        self._check_open()
        with self._errors():
            names = self._backend.iter_list(self._prefix + prefix, page_size=page_size)
        return self._mapped(names)

    async def _mapped(self, names: AsyncIterator[str]) -> AsyncIterator[str]:
        with self._errors():
            async for name in names:
                yield name

    async def transaction(self, txns: Sequence[TxnEntry]) -> None:
        writes = coalesce(txns)  # validates the view's keys; the last step per key wins, as below
        self._check_open()
        with self._errors():
            await self._backend.transaction(
                [TxnEntry(w.operation, Entry(self._prefix + w.entry.key, w.entry.value)) for w in writes]
            )

    async def aclose(self) -> None:
        """Close the view (idempotent); the wrapped backend stays open."""
        self._closed = True

    def __repr__(self) -> str:
        return f"View({self._backend!r}, {self._prefix!r})"


class _HAForward(HABackend):
    """Locks of the view are the wrapped backend's locks, named under the prefix."""

    _backend: Backend
    _prefix: str

    @property
    def ha_enabled(self) -> bool:
        return cast(HABackend, self._backend).ha_enabled

    def lock_with(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        renew_interval: float | None = None,
        watch_interval: float | None = None,
        retry_interval: float | None = None,
    ) -> Lock:
        validate_lock_name(key)
        cast(View, self)._check_open()
        return cast(HABackend, self._backend).lock_with(
            self._prefix + key, value, ttl=ttl, renew_interval=renew_interval,
            watch_interval=watch_interval, retry_interval=retry_interval,
        )


class _ConditionalForward(ConditionalBackend):
    """Versioned reads and conditional commits with keys, checks and the fence's lock mapped."""

    _backend: Backend
    _prefix: str

    async def get_versioned(self, key: str) -> VersionedEntry | None:
        view = cast(View, self)
        full = view._full(key)
        view._check_open()
        with view._errors():
            found = await cast(ConditionalBackend, self._backend).get_versioned(full)
        return None if found is None else VersionedEntry(Entry(key, found.entry.value), found.version)

    async def commit(
        self,
        writes: Sequence[Write],
        checks: Sequence[Check] = (),
        *,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        validate_commit(writes, checks, fenced=fence is not None)
        if fence is not None:
            if not isinstance(fence, Fence):
                raise InvalidValue(f"fence must be a Fence, not {type(fence).__name__}")
            validate_lock_name(fence.lock)
            fence = Fence(self._prefix + fence.lock, fence.token)
        view = cast(View, self)
        view._check_open()
        p = self._prefix
        with view._errors():
            versions = await cast(ConditionalBackend, self._backend).commit(
                [Write(w.operation, Entry(p + w.entry.key, w.entry.value), w.if_version) for w in writes],
                [Check(p + c.key, c.if_version) for c in checks],
                fence=fence,
            )
        return {view._rel(k): v for k, v in versions.items()}


class _HAView(View, _HAForward):
    """A View of an HABackend."""


class _ConditionalView(View, _ConditionalForward):
    """A View of a ConditionalBackend."""


class _HAConditionalView(View, _HAForward, _ConditionalForward):
    """A View of a backend that is both HA and conditional."""
