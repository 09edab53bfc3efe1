"""DynamoDBBackend under injected faults: partial batches, throttling, resets, stalls, conflicts.

Every test drives the real :class:`~kvstore.dynamodb.DynamoDBBackend` through a
:class:`~kvstore.testing.faults.FaultProxy` in front of the session's DynamoDB Local, and checks
the outcome through a second backend straight on the engine (no proxy), so what is asserted is
what a healthy reader sees afterwards. Each test also checks that its faults really fired, so it
cannot pass because nothing happened.

The promises under test (``/work/shared/DESIGN.md``): every put and delete either succeeds or
raises a typed error; nothing is dropped silently; a put split over several batches writes its
pointers before its record, so a failure leaves at worst an empty folder, never a key ``list``
cannot reach; retrying a failed put or delete (both idempotent) once the faults stop makes the
table exactly what the same operations make of an :class:`~kvstore.inmem.InmemBackend`.

The two tests at the end pin a bug found here and fixed in the library: a delete that raised kept
resending its write in the background and could undo the caller's next put.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from kvstore import (
    BackendError,
    EngineUnavailable,
    Entry,
    KVStoreError,
    Operation,
    Throttled,
    TransactionConflict,
    TxnEntry,
    WriteIncomplete,
)
from kvstore.backend import Backend
from kvstore.dynamodb import DynamoDBBackend
from kvstore.dynamodb.records import item_key, pointer_items
from kvstore.inmem import InmemBackend
from kvstore.keys import prefixes
from kvstore.testing.faults import FaultProxy

pytestmark = pytest.mark.timeout(60)

PTEE = "ProvisionedThroughputExceededException"

# -- helpers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def rig(
    dynamodb_conf: dict[str, str], **extra: str
) -> AsyncIterator[tuple[FaultProxy, DynamoDBBackend, DynamoDBBackend]]:
    """A proxy, a backend through it (conf ``extra`` added) and a clean backend on the same table.

    The clean backend is created first, so the table exists before any fault is installed.
    ``environ={}``: the session fixture's AWS_DYNAMODB_ENDPOINT would otherwise win over the
    proxy's endpoint.
    """
    async with (
        FaultProxy(dynamodb_conf["endpoint"]) as proxy,
        await DynamoDBBackend.create(dynamodb_conf, environ={}) as clean,
        await DynamoDBBackend.create({**dynamodb_conf, "endpoint": proxy.endpoint, **extra}, environ={}) as faulty,
    ):
        # A first request of each kind warms DynamoDB Local up (its first Query can take a second).
        await faulty.put(Entry("warm/up", b""))
        await faulty.get("warm/up")
        await faulty.list("warm/")
        await faulty.delete("warm/up")
        proxy.reset_stats()
        yield proxy, faulty, clean


def folders_of(keys: Iterable[str]) -> list[str]:
    """The root and every folder above any of ``keys``, as ``list`` prefixes."""
    return sorted({""} | {p + "/" for k in keys for p in prefixes(k)})


async def table_items(b: DynamoDBBackend) -> set[tuple[str, str]]:
    """(Path, Key) of every item in the table, read consistently (all pages)."""
    found: set[tuple[str, str]] = set()
    params: dict[str, Any] = {"ConsistentRead": True}
    while True:
        out = await b.table.call("scan", **params)
        found |= {(i["Path"]["S"], i["Key"]["S"]) for i in out.get("Items", [])}
        if not out.get("LastEvaluatedKey"):
            return found
        params["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def expected_items(keys: Iterable[str]) -> set[tuple[str, str]]:
    """The items a table holding exactly ``keys`` has: their records and their folder pointers."""
    items: set[tuple[str, str]] = set()
    for k in keys:
        for item in (item_key(k), *pointer_items(k, "")):
            items.add((item["Path"]["S"], item["Key"]["S"]))
    return items


async def assert_same_as_model(clean: DynamoDBBackend, model: InmemBackend, keys: Iterable[str]) -> None:
    """Every key reads back as in the model, every folder lists as in the model, no stray items."""
    keys = sorted(set(keys))
    got = await asyncio.gather(*(clean.get(k) for k in keys))
    want = await asyncio.gather(*(model.get(k) for k in keys))
    assert dict(zip(keys, got, strict=True)) == dict(zip(keys, want, strict=True))
    folders = folders_of(keys)
    got_lists = await asyncio.gather(*(clean.list(f) for f in folders))
    want_lists = await asyncio.gather(*(model.list(f) for f in folders))
    assert dict(zip(folders, got_lists, strict=True)) == dict(zip(folders, want_lists, strict=True))
    present = [k for k, e in zip(keys, want, strict=True) if e is not None]
    assert await table_items(clean) == expected_items(present)


async def assert_reachable(clean: DynamoDBBackend, keys: Iterable[str]) -> None:
    """Every key whose record exists is reachable by ``list`` from the root (empty folders allowed)."""
    for key in keys:
        if await clean.get(key) is None:
            continue
        parts = key.split("/")
        for depth in range(len(parts)):
            folder = "".join(p + "/" for p in parts[:depth])
            child = parts[depth] + ("/" if depth < len(parts) - 1 else "")
            assert child in await clean.list(folder), f"{key!r} has a record but {folder!r} does not list {child!r}"


# -- 1. partial batches ---------------------------------------------------------------------


async def test_partial_batches_still_write_every_record_and_pointer(dynamodb_conf: dict[str, str]) -> None:
    keys = [f"p/{i % 3}/{i % 5}/deep/k{i}" for i in range(24)] + ["p", "p/0", "top"]
    async with rig(dynamodb_conf) as (proxy, faulty, clean):
        # First one item per BatchWriteItem, then 30% of each (at least one): every put needs
        # several rounds of UnprocessedItems before it lands.
        keep_one = proxy.partial_batch(keep=1, times=40)
        fraction = proxy.partial_batch(fraction=0.3)
        await asyncio.gather(*(faulty.put(Entry(k, k.encode())) for k in keys))
        assert keep_one.fired == 40
        assert fraction.fired > 0
        assert faulty.writer.retries == keep_one.fired + fraction.fired  # one resubmission per short batch
        assert proxy.stats()["BatchWriteItem"].faults["partial_batch"] == keep_one.fired + fraction.fired
        proxy.clear()

        async with InmemBackend() as model:
            for k in keys:
                await model.put(Entry(k, k.encode()))
            await assert_same_as_model(clean, model, keys)


# -- 2. throttling storms -------------------------------------------------------------------


async def test_throttling_storm_within_the_deadline_every_put_lands(dynamodb_conf: dict[str, str]) -> None:
    keys = [f"t/{i % 4}/x/k{i}" for i in range(12)]
    async with rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="20") as (proxy, faulty, clean):
        # The SDK gives up at once; our writer's backoff has to ride out the storm.
        storm = proxy.throttle(operations={"BatchWriteItem"}, duration=0.4)
        await asyncio.gather(*(faulty.put(Entry(k, b"v" + k.encode())) for k in keys))
        # Puts share requests (group commit), so count requests, not puts: the storm throttled the
        # first ones and their resends, and every throttled request was resent exactly once.
        assert storm.fired >= 2
        assert faulty.writer.retries == storm.fired
        async with InmemBackend() as model:
            for k in keys:
                await model.put(Entry(k, b"v" + k.encode()))
            await assert_same_as_model(clean, model, keys)


async def test_throttling_storm_past_the_deadline_is_typed_and_retry_repairs(dynamodb_conf: dict[str, str]) -> None:
    keys = ["s/a/1", "s/a/2", "s/b/c/3"]
    async with rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="0.3") as (proxy, faulty, clean):
        storm = proxy.throttle(operations={"BatchWriteItem"})  # until cleared: longer than the deadline
        results = await asyncio.gather(*(faulty.put(Entry(k, b"v")) for k in keys), return_exceptions=True)
        for r in results:
            assert isinstance(r, Throttled), r
            assert r.code == PTEE
        assert storm.fired > len(keys)  # retried before giving up
        # A throttled request never reached the engine: nothing landed, nothing half-visible.
        assert await table_items(clean) == set()
        proxy.clear()

        await asyncio.gather(*(faulty.put(Entry(k, b"v")) for k in keys))
        async with InmemBackend() as model:
            for k in keys:
                await model.put(Entry(k, b"v"))
            await assert_same_as_model(clean, model, keys)


async def test_never_ending_partial_batches_raise_write_incomplete(dynamodb_conf: dict[str, str]) -> None:
    key = "w/x/y/z"  # three pointers and the record: one batch of four
    async with rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="0.5") as (proxy, faulty, clean):
        two = proxy.partial_batch(keep=1, times=2)  # two items land, one per request...
        stuck = proxy.partial_batch(keep=0)  # ...then nothing more, ever
        with pytest.raises(WriteIncomplete) as info:
            await faulty.put(Entry(key, b"v"))
        assert info.value.pending == 2
        assert info.value.code == "UnprocessedItems"
        assert two.fired == 2
        assert stuck.fired >= 1
        # The items that landed were pointers (they go first), never the record; the failed put's
        # cleanup then prunes the folders it left empty (its probes and conditional deletes are
        # not batch writes, so the stuck batches do not hold them up).
        for _ in range(100):
            if await table_items(clean) == set():
                break
            await asyncio.sleep(0.05)
        assert await table_items(clean) == set()
        assert await clean.get(key) is None
        assert await clean.list("") == []
        proxy.clear()

        await faulty.put(Entry(key, b"v"))  # retrying the failed put repairs everything
        async with InmemBackend() as model:
            await model.put(Entry(key, b"v"))
            await assert_same_as_model(clean, model, [key])


async def test_multi_batch_put_writes_pointers_before_the_record(dynamodb_conf: dict[str, str]) -> None:
    # 30 levels: 29 pointers (two batches, sent together), then the record's batch on its own.
    key = "/".join(f"d{i}" for i in range(29)) + "/leaf"
    async with rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="1") as (proxy, faulty, clean):
        # The pointer batches land, their answers are held; meanwhile the storm starts, so the
        # record's batch (sent only once both pointer batches are answered) is throttled.
        held = proxy.stall(0.3, after_forward=True, operations={"BatchWriteItem"}, times=2)
        put = asyncio.create_task(faulty.put(Entry(key, b"v")))
        for _ in range(200):
            if held.fired == 2:
                break
            await asyncio.sleep(0.005)
        assert held.fired == 2
        storm = proxy.throttle(operations={"BatchWriteItem"})
        with pytest.raises(Throttled):
            await put
        assert storm.fired >= 1
        # Every pointer landed and the record did not: at worst empty folders, never a hidden key.
        assert await table_items(clean) == expected_items([key]) - {("/".join(key.split("/")[:-1]), "leaf")}
        assert await clean.get(key) is None
        await assert_reachable(clean, [key])
        proxy.clear()

        await faulty.put(Entry(key, b"v"))
        async with InmemBackend() as model:
            await model.put(Entry(key, b"v"))
            await assert_same_as_model(clean, model, [key])


# -- 3. model comparison --------------------------------------------------------------------

MODEL_SEED = 20240604
MODEL_OPS = 160
# Deep keys over three top-level folders; a key and a folder of the same name ("m", "m/x")
# are both present, as are keys several levels apart in one folder.
MODEL_KEYS = [
    "m", "m/x", "m/x/1", "m/x/y/1", "m/x/y/2", "m/z/1",
    "n/1", "n/x/2", "n/x/y/z/1", "n/x/y/z/2",
    "o/q/r/s/t/1", "o/q/2", "o/q/r/3",
]


@dataclass(frozen=True)
class Op:
    index: int
    kind: str  # "put", "delete", "get" or "list"
    key: str  # the key, or the folder for "list"

    @property
    def top(self) -> str:
        return self.key.split("/", 1)[0]

    def conflicts(self, other: Op) -> bool:
        """Whether the two must not run concurrently (their order matters, or they race).

        Same key: order matters. A delete prunes the folder pointers up to the top level, and
        a put into a folder racing a delete that empties it can lose its pointer (the known
        limit in ``kvstore/dynamodb/backend.py``), so a delete runs alone in its top folder.
        """
        if self.kind in ("get", "list") and other.kind in ("get", "list"):
            return False
        if self.key == other.key:
            return True
        return "delete" in (self.kind, other.kind) and self.top == other.top


def model_ops(seed: int, count: int) -> list[Op]:
    rng = random.Random(seed)
    folders = folders_of(MODEL_KEYS)
    ops: list[Op] = []
    for i in range(count):
        kind = rng.choices(["put", "delete", "get", "list"], weights=[50, 30, 12, 8])[0]
        key = rng.choice(folders) if kind == "list" else rng.choice(MODEL_KEYS)
        ops.append(Op(i, kind, key))
    return ops


def schedule(ops: list[Op]) -> list[list[Op]]:
    """Rounds of ops that may run concurrently; each op runs after every earlier one it conflicts with.

    Only commuting ops change order, so applying the rounds one after the other ends in the same
    state as applying ``ops`` in sequence.
    """
    rounds: list[list[Op]] = []
    placed: list[tuple[Op, int]] = []
    for op in ops:
        level = 1 + max((r for other, r in placed if op.conflicts(other)), default=-1)
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(op)
        placed.append((op, level))
    return rounds


def value_of(op: Op) -> bytes:
    return f"{op.key}#{op.index}".encode()


async def apply(b: Backend, op: Op) -> Entry | list[str] | None:
    if op.kind == "put":
        await b.put(Entry(op.key, value_of(op)))
        return None
    if op.kind == "delete":
        await b.delete(op.key)
        return None
    if op.kind == "get":
        return await b.get(op.key)
    return await b.list(op.key)


def test_schedule_keeps_conflicting_ops_in_order() -> None:
    ops = model_ops(MODEL_SEED, MODEL_OPS)
    rounds = schedule(ops)
    assert sorted(op.index for r in rounds for op in r) == list(range(MODEL_OPS))
    level = {op.index: n for n, r in enumerate(rounds) for op in r}
    for a in ops:
        for b in ops[a.index + 1 :]:
            if a.conflicts(b):
                assert level[a.index] < level[b.index]
    assert len(rounds) < MODEL_OPS // 2  # there is real concurrency


async def test_random_ops_under_faults_match_the_model(dynamodb_conf: dict[str, str]) -> None:
    ops = model_ops(MODEL_SEED, MODEL_OPS)
    rounds = schedule(ops)
    async with (
        rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="0.3") as (proxy, faulty, clean),
        InmemBackend() as model,
    ):
        faults = [
            proxy.partial_batch(fraction=0.5, times=150),
            proxy.throttle(operations={"BatchWriteItem"}, times=40),
            proxy.throttle(operations={"GetItem", "Query"}, times=6),
            proxy.reset_connection(operations={"BatchWriteItem", "GetItem", "Query"}, times=8),
            proxy.reset_connection(after_forward=True, operations={"BatchWriteItem", "GetItem", "Query"}, times=8),
            proxy.reset_connection(how="close", after_forward=True, operations={"BatchWriteItem"}, times=4),
        ]
        failed: list[Op] = []  # writes that raised a typed error, in sequence order
        tainted: set[str] = set()  # keys whose state is unknown until their failed writes are retried
        read_errors = 0

        async def attempt(op: Op) -> tuple[Op, object]:
            try:
                return op, await apply(faulty, op)
            except KVStoreError as exc:  # anything else fails the test
                assert isinstance(exc, Throttled | EngineUnavailable | WriteIncomplete), repr(exc)
                return op, exc

        for ops_of_round in rounds:
            for op, outcome in await asyncio.gather(*(attempt(op) for op in ops_of_round)):
                if isinstance(outcome, KVStoreError):
                    if op.kind in ("put", "delete"):
                        failed.append(op)
                        tainted.add(op.key)
                    else:
                        read_errors += 1
                    continue
                if op.kind == "get" and op.key not in tainted:
                    # A read that succeeded sees exactly what the successful writes before it left.
                    assert outcome == await model.get(op.key), op
                await apply(model, op)

        fired = {f.kind: 0 for f in faults}
        for f in faults:
            fired[f.kind] += f.fired
        assert all(n > 0 for n in fired.values()), fired
        assert faulty.writer.retries > 0
        assert failed, "no write failed: the faults did not test the retry path"
        assert read_errors > 0
        proxy.clear()

        # Faults over: retry every failed write (idempotent), in order, and do the same to the model.
        failed.sort(key=lambda op: op.index)
        for op in failed:
            await apply(faulty, op)
            await apply(model, op)
        await assert_same_as_model(clean, model, MODEL_KEYS)


# -- 4. connection resets -------------------------------------------------------------------

RESET_KEY = "r/s/k"


async def _reset_case(b: Backend, op: str) -> object:
    if op == "put":
        await b.put(Entry(RESET_KEY, b"new"))
        return None
    if op == "get":
        return await b.get(RESET_KEY)
    if op == "list":
        return await b.list("r/")
    await b.delete(RESET_KEY)
    return None


@pytest.mark.parametrize("retries", ["0", None], ids=["sdk-retries-0", "sdk-retries-default"])
@pytest.mark.parametrize("after_forward", [False, True], ids=["request-lost", "reply-lost"])
@pytest.mark.parametrize(
    ("op", "operation"),
    [
        ("put", "BatchWriteItem"),
        ("get", "GetItem"),
        ("list", "Query"),
        ("delete", "BatchWriteItem"),
        ("delete", "Query"),
    ],
)
async def test_connection_reset(
    dynamodb_conf: dict[str, str], op: str, operation: str, after_forward: bool, retries: str | None
) -> None:
    extra = {"write_deadline": "5"} | ({"dynamodb_max_retries": retries} if retries is not None else {})
    async with rig(dynamodb_conf, **extra) as (proxy, faulty, clean), InmemBackend() as model:
        for b in (faulty, model):
            await b.put(Entry(RESET_KEY, b"old"))
            await b.put(Entry("r/sibling", b"s"))  # the delete of RESET_KEY prunes "r/s/" only
        proxy.reset_stats()
        reset = proxy.reset_connection(after_forward=after_forward, operations={operation}, times=1)
        try:
            outcome: object = await _reset_case(faulty, op)
        except KVStoreError as exc:
            outcome = exc
        assert reset.fired == 1
        assert proxy.stats()[operation].faults["reset_connection"] == 1

        # Writes are resent by our writer whatever the SDK does; reads and the delete's folder
        # query rely on the SDK alone, so with its retries off they fail, typed.
        sdk_retries = retries is None
        if operation == "BatchWriteItem" or sdk_retries:
            assert not isinstance(outcome, BaseException), repr(outcome)
            if op == "get":
                assert outcome == Entry(RESET_KEY, b"old")
            elif op == "list":
                assert outcome == ["s/", "sibling"]
        else:
            assert isinstance(outcome, EngineUnavailable), repr(outcome)
            assert outcome.code in ("EndpointConnectionError", "ConnectionClosedError")
        if operation == "BatchWriteItem":
            # Without SDK retries the resend is ours (a lost reply is resent too: idempotent).
            assert faulty.writer.retries == (0 if sdk_retries else 1)

        if op in ("put", "delete"):
            if isinstance(outcome, KVStoreError):
                await _reset_case(faulty, op)  # the caller's retry, now that the fault is gone
            await _reset_case(model, op)
        await assert_same_as_model(clean, model, [RESET_KEY, "r/sibling"])


# -- 5. stall -------------------------------------------------------------------------------


async def test_stall_past_the_read_timeout_is_engine_unavailable(dynamodb_conf: dict[str, str]) -> None:
    async with rig(dynamodb_conf, dynamodb_max_retries="0", read_timeout="1") as (proxy, faulty, _):
        await faulty.put(Entry("st/k", b"v"))
        stall = proxy.stall(3.0, operations={"GetItem"}, times=1)
        with pytest.raises(EngineUnavailable) as info:
            await faulty.get("st/k")
        assert stall.fired == 1
        assert info.value.code == "ReadTimeoutError"
        assert await faulty.get("st/k") == Entry("st/k", b"v")  # the next read is fine


# -- 6. transaction conflicts ---------------------------------------------------------------


async def test_transaction_conflict_is_typed_and_writes_nothing(dynamodb_conf: dict[str, str]) -> None:
    async with rig(dynamodb_conf) as (proxy, faulty, clean):
        await faulty.put(Entry("tx/old", b"o"))
        before = await table_items(clean)
        conflict = proxy.transaction_conflict(indexes={0}, times=1)
        txn = [
            TxnEntry(Operation.PUT, Entry("tx/new/a", b"1")),
            TxnEntry(Operation.DELETE, Entry("tx/old")),
        ]
        with pytest.raises(TransactionConflict) as info:
            await faulty.transaction(txn)
        assert conflict.fired == 1
        # One reason per TransactItems entry: just the two writes (folder pointers go before the
        # transaction, outside it, so plain puts into the same folder cannot cancel it).
        assert info.value.reasons == ["TransactionConflict", "None"]
        assert info.value.code == "TransactionCanceledException"
        assert await table_items(clean) == before
        assert await clean.get("tx/new/a") is None
        assert await clean.get("tx/old") == Entry("tx/old", b"o")

        await faulty.transaction(txn)  # conflict gone: the same transaction commits
        assert await clean.get("tx/new/a") == Entry("tx/new/a", b"1")
        assert await clean.get("tx/old") is None


# -- 7. throttled reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "read"),
    [("GetItem", lambda b: b.get("th/k")), ("Query", lambda b: b.list("th/"))],
    ids=["get", "list"],
)
async def test_throttled_read_without_sdk_retries(
    dynamodb_conf: dict[str, str], operation: str, read: Callable[[DynamoDBBackend], Awaitable[object]]
) -> None:
    async with rig(dynamodb_conf, dynamodb_max_retries="0") as (proxy, faulty, _):
        await faulty.put(Entry("th/k", b"v"))
        throttle = proxy.throttle(operations={operation}, times=1)
        with pytest.raises(Throttled) as info:
            await read(faulty)
        assert throttle.fired == 1
        assert info.value.code == PTEE
        assert isinstance(info.value, BackendError)
        assert await read(faulty)  # one throttle only: the next read succeeds


async def test_throttled_read_is_retried_by_the_sdk_by_default(dynamodb_conf: dict[str, str]) -> None:
    async with rig(dynamodb_conf) as (proxy, faulty, _):
        await faulty.put(Entry("th/k", b"v"))
        throttle = proxy.throttle(operations={"GetItem"}, times=1)
        assert await faulty.get("th/k") == Entry("th/k", b"v")
        assert throttle.fired == 1
        assert proxy.stats()["GetItem"].seen == 2


# -- a failed delete must not keep writing ----------------------------------------------------
# The record's delete and its folder query go out together; when the query failed, delete() used to
# raise at once while the write went on resending until write_deadline (asyncio.gather without
# return_exceptions), so it could land after the caller's next put. kvstore.settle.settle() waits for both.

async def test_failed_delete_sends_nothing_after_it_raised(dynamodb_conf: dict[str, str]) -> None:
    async with rig(dynamodb_conf, dynamodb_max_retries="0", write_deadline="0.5") as (proxy, faulty, _):
        await faulty.put(Entry("z/k", b"old"))
        storm = proxy.throttle(operations={"BatchWriteItem"})  # the record's delete backs off until
        with pytest.raises(Throttled):  # the deadline passes
            await faulty.delete("z/k")
        assert storm.fired >= 1
        sent = proxy.stats()["BatchWriteItem"].seen
        await asyncio.sleep(0.8)  # longer than write_deadline: a left-behind writer would be done
        assert proxy.stats()["BatchWriteItem"].seen == sent, "requests sent for a delete that already failed"


async def test_failed_delete_does_not_undo_a_later_put(dynamodb_conf: dict[str, str]) -> None:
    async with rig(dynamodb_conf, dynamodb_max_retries="0") as (proxy, faulty, clean):
        await faulty.put(Entry("z/k", b"old"))
        # The record's delete is held on its way in; the folder query sent with it fails at once.
        held = proxy.stall(0.5, operations={"BatchWriteItem"}, times=1)
        reset = proxy.reset_connection(operations={"Query"}, times=1)
        with pytest.raises(EngineUnavailable):
            await faulty.delete("z/k")
        assert reset.fired == 1
        # The caller saw the delete fail and writes the key again; that put succeeds...
        await faulty.put(Entry("z/k", b"new"))
        assert held.fired == 1
        await asyncio.sleep(0.8)  # past the stall
        # ...and must not be undone by the delete that already reported failure.
        assert await clean.get("z/k") == Entry("z/k", b"new")
