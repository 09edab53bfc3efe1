"""Model-based test: random put/delete/get/list/transaction sequences on DynamoDB and in memory.

Hypothesis drives both backends with the same operations over a small alphabet of deep keys, where
many names are both a key and a folder (``a/b`` and ``a/b/c``), and fails on the first difference.
InmemBackend is the model; DynamoDBBackend runs on DynamoDB Local.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from kvstore import Entry, Operation, TxnEntry
from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend

# "_c" is refused as a key's last segment (reserved for lock records) but is an ordinary, listed
# folder: both backends must agree on that too.
SEGMENTS = ["a", "b", "_c"]
keys = st.tuples(st.lists(st.sampled_from(SEGMENTS), max_size=3), st.sampled_from(["a", "b"])).map(
    lambda t: "/".join([*t[0], t[1]])
)
prefixes = st.one_of(st.just(""), keys.map(lambda k: k + "/"))
values = st.binary(max_size=24)


class StoreMachine(RuleBasedStateMachine):
    """One example = one fresh root folder on a shared table, so examples are cheap to run and
    to shrink (creating a table and a client per example made shrinking take minutes)."""

    loop: asyncio.AbstractEventLoop
    real: DynamoDBBackend

    def __init__(self) -> None:
        super().__init__()
        self.model = InmemBackend()
        self.root = f"r{uuid.uuid4().hex[:8]}/"

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def both(self, name: str, *args: Any) -> tuple[Any, Any]:
        return self.run(getattr(self.model, name)(*args)), self.run(getattr(self.real, name)(*args))

    def k(self, key: str) -> str:
        return self.root + key

    @rule(key=keys, value=values)
    def put(self, key: str, value: bytes) -> None:
        self.both("put", Entry(self.k(key), value))

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.both("delete", self.k(key))

    @rule(key=keys)
    def get(self, key: str) -> None:
        expected, actual = self.both("get", self.k(key))
        assert actual == expected, f"get({key!r})"

    @rule(prefix=prefixes)
    def list(self, prefix: str) -> None:
        expected, actual = self.both("list", self.root + prefix)
        assert actual == expected, f"list({prefix!r})"

    @rule(steps=st.lists(st.tuples(st.booleans(), keys, values), min_size=1, max_size=5))
    def transaction(self, steps: list[tuple[bool, str, bytes]]) -> None:
        txns = [TxnEntry(Operation.PUT if put else Operation.DELETE, Entry(self.k(k), v)) for put, k, v in steps]
        self.both("transaction", txns)

    @invariant()
    def root_listing_agrees(self) -> None:
        expected, actual = self.both("list", self.root)
        assert actual == expected, "the root folder's listing diverged"

    def teardown(self) -> None:
        self.run(self.model.aclose())


def test_dynamodb_matches_inmem_model(dynamodb_conf: dict[str, str]) -> None:
    loop = asyncio.new_event_loop()
    try:
        StoreMachine.loop = loop
        StoreMachine.real = loop.run_until_complete(DynamoDBBackend.create(dynamodb_conf))
        run_state_machine_as_test(
            StoreMachine,
            settings=settings(
                max_examples=40, stateful_step_count=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(StoreMachine.real.aclose())
        loop.close()
