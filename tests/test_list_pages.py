"""Paged and streaming list (issue 12, item 1): list_page / iter_list beyond the conformance suite."""

from __future__ import annotations

import pytest

from kvstore import Entry
from kvstore.backend import Backend
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.records import ATTR_KEY, ATTR_PATH
from kvstore.errors import BackendClosed, InvalidValue
from kvstore.inmem import InmemBackend
from kvstore.testing import exercise_list_pages

Backends = InmemBackend | DynamoDBBackend


class _ListOnly(Backend):
    """A backend with only the abstract methods: list_page/iter_list come from Backend's defaults."""

    def __init__(self) -> None:
        self._inner = InmemBackend()

    async def put(self, entry: Entry) -> None:
        await self._inner.put(entry)

    async def get(self, key: str) -> Entry | None:
        return await self._inner.get(key)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def list(self, prefix: str) -> list[str]:
        return await self._inner.list(prefix)

    async def transaction(self, txns: object) -> None:  # type: ignore[override]
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_default_implementation_on_top_of_list() -> None:
    async with _ListOnly() as b:
        await exercise_list_pages(b)


async def _raw_children(b: DynamoDBBackend, path: str, names: list[str]) -> None:
    """Write items of partition ``path`` directly (a fast way to make a big folder)."""
    for start in range(0, len(names), 25):
        await b.table.call("batch_write_item", RequestItems={b.config.table: [
            {"PutRequest": {"Item": {ATTR_PATH: {"S": path}, ATTR_KEY: {"S": n}, "Value": {"B": b"v"}}}}
            for n in names[start:start + 25]]})


async def test_dynamodb_pages_are_queries_of_page_size(dynamo: DynamoDBBackend) -> None:
    names = [f"k{i:04d}" for i in range(250)]
    await dynamo.put(Entry("big/seed", b"v"))  # the folder pointer
    await _raw_children(dynamo, "big", names)
    whole = await dynamo.list("big/")
    assert len(whole) == 251
    before = dynamo.table.requests["query"]
    assert [n async for n in dynamo.iter_list("big/", page_size=100)] == whole
    assert dynamo.table.requests["query"] - before == 3  # 100 + 100 + 51 items
    before = dynamo.table.requests["query"]
    assert await dynamo.list_page("big/", after="k0099", limit=3) == ["k0100", "k0101", "k0102"]
    assert dynamo.table.requests["query"] - before == 1  # one Query seeking past `after`


async def test_dynamodb_lock_records_fill_no_page(dynamo: DynamoDBBackend) -> None:
    """A run of lock records in the folder: list_page keeps querying until the page is full."""
    await _raw_children(dynamo, "d", [f"_lock{i:02d}" for i in range(30)] + ["a", "b", "x", "y"])
    assert await dynamo.list_page("d/", limit=3) == ["a", "b", "x"]
    assert await dynamo.list_page("d/", after="b", limit=5) == ["x", "y"]
    assert [n async for n in dynamo.iter_list("d/", page_size=4)] == ["a", "b", "x", "y"]


@pytest.mark.parametrize("after", ["\ud800", "a\udfffz"])
async def test_after_with_a_lone_surrogate(backend: Backends, after: str) -> None:
    """No stored name holds a lone surrogate; such an `after` still compares in code-point order."""
    for k in ("a", "b", "\ue000", "\U0001f600"):
        await backend.put(Entry(k, b"v"))
    expected = sorted(n for n in ("a", "b", "\ue000", "\U0001f600") if n > after)
    assert await backend.list_page("", after=after, limit=10) == expected


async def test_byte_order_matches_code_point_order(backend: Backends) -> None:
    """UTF-8 byte order (DynamoDB's sort order) is code-point order (Python's) for valid Unicode,
    including astral characters against BMP characters above U+E000 (where UTF-16 order differs)."""
    names = ["\uffff", "\U00010000", "\ue000", "\ufb01", "\U0010fffd", "\x7f", "\u07ff", "\u0800"]
    for n in names:
        await backend.put(Entry(f"u/{n}", b"v"))
    assert await backend.list("u/") == sorted(names)
    assert [n async for n in backend.iter_list("u/", page_size=1)] == sorted(names)
    assert await backend.list_page("u/", after="\ufb01", limit=10) == sorted(n for n in names if n > "\ufb01")


async def test_checked_at_the_call(backend: Backends) -> None:
    with pytest.raises(InvalidValue):
        backend.iter_list("", page_size=0)
    await backend.aclose()
    with pytest.raises(BackendClosed):
        await backend.list_page("", limit=1)
    with pytest.raises(BackendClosed):
        [n async for n in backend.iter_list("")]


async def test_inmem_pages() -> None:
    b = InmemBackend()
    for i in range(2000):
        await b.put(Entry(f"f/{i:05d}", b""))
    assert await b.list_page("f/", after="01000", limit=2) == ["01001", "01002"]
    assert [n async for n in b.iter_list("f/", page_size=300)] == await b.list("f/")
