"""The hierarchy's invariant under races, cancellation and partial failures (issue 8).

The invariant, checked after every scenario: every key that ``get`` reads is reachable by walking
``list`` from the root, and no listed folder is empty. Each race below broke it on the code before
the folder-pointer protocol (kvstore.dynamodb.pointers): the targeted put-into-an-emptying-folder
race hid the new key in 283 of 300 trials, two deletes emptying one folder left it listed in 138
of 300. Every test runs on DynamoDB Local (and the mixed race on InmemBackend too: both backends
must agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
from collections.abc import Iterable
from typing import Any

import pytest
from dynamo_support import proxied

from kvstore import Entry, Operation, TxnEntry, WriteIncomplete
from kvstore.backend import Backend
from kvstore.dynamodb import DynamoDBBackend


async def walk(b: Backend, prefix: str = "") -> tuple[set[str], list[str]]:
    """Every key reachable by ``list`` under ``prefix``, and every listed folder that is empty."""
    keys: set[str] = set()
    empty: list[str] = []
    names = await b.list(prefix)
    if prefix and not names:
        empty.append(prefix)
    for name in names:
        if name.endswith("/"):
            sub_keys, sub_empty = await walk(b, prefix + name)
            keys |= sub_keys
            empty += sub_empty
        else:
            keys.add(prefix + name)
    return keys, empty


async def violations(b: Backend, candidates: Iterable[str]) -> list[str]:
    """What breaks the invariant, given every key the scenario may have written."""
    reachable, empty = await walk(b)
    problems = [f"listed folder {f!r} is empty" for f in empty]
    for key in sorted(set(candidates)):
        if await b.get(key) is not None and key not in reachable:
            problems.append(f"{key!r} reads but list does not reach it")
        elif key in reachable and await b.get(key) is None:
            problems.append(f"{key!r} is listed but does not read")
    return problems



async def test_put_into_a_folder_being_emptied_stays_listed(
    dynamo: DynamoDBBackend, dynamodb_conf: dict[str, str]
) -> None:
    written = []
    for n in range(60):
        await dynamo.put(Entry(f"t{n}/q/k1", b"1"))
        # The delete empties t{n}/q/ while the put lands in it: the put's pointer must survive.
        await asyncio.gather(dynamo.delete(f"t{n}/q/k1"), dynamo.put(Entry(f"t{n}/q/k2", b"2")))
        assert await dynamo.list(f"t{n}/q/") == ["k2"], f"trial {n}"
        assert await dynamo.list(f"t{n}/") == ["q/"], f"trial {n}"
        written += [f"t{n}/q/k1", f"t{n}/q/k2"]
    await dynamo.aclose()  # the background re-checks finish
    async with await DynamoDBBackend.create(dynamodb_conf) as again:
        assert await violations(again, written) == []


async def test_two_deletes_emptying_one_folder_prune_it(dynamo: DynamoDBBackend) -> None:
    for n in range(60):
        await dynamo.put(Entry(f"t{n}/q/a", b"1"))
        await dynamo.put(Entry(f"t{n}/q/b", b"1"))
        # Each delete may see the other's key in its probe; the later probe must see neither.
        await asyncio.gather(dynamo.delete(f"t{n}/q/a"), dynamo.delete(f"t{n}/q/b"))
        assert await dynamo.list(f"t{n}/") == [], f"trial {n}"
    assert await dynamo.list("") == []


RACE_FOLDERS = ["r/a", "r/a/b", "r/a/b/c", "r/d", "s/e/f", "s/g", "t/h/i/j"]


async def mixed_race(b: Backend, seed: int, *, workers: int = 24, ops: int = 60, txn: bool = True) -> set[str]:
    """Coroutines putting, deleting and transacting in a few shared folders at depths 2-4.

    Two names per folder, so deletes empty folders (and their parents) all the time while puts
    land in them: the race that hid keys before the pointer protocol.
    """
    folders = RACE_FOLDERS
    names = ["k0", "k1"]
    keys = [f"{f}/{n}" for f in folders for n in names]

    async def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        for _ in range(ops):
            roll = rng.random()
            if roll < 0.45:
                await b.put(Entry(rng.choice(keys), b"v"))
            elif roll < 0.9 or not txn:
                await b.delete(rng.choice(keys))
            else:
                picks = rng.sample(keys, 3)
                steps = [TxnEntry(rng.choice([Operation.PUT, Operation.DELETE]), Entry(k, b"t")) for k in picks]
                await b.transaction(steps)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return set(keys)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_mixed_race_keeps_the_invariant(backend: Backend, seed: int) -> None:
    keys = await mixed_race(backend, seed)
    assert await violations(backend, keys) == []


def _process_race(conf: dict[str, str], seed: int) -> None:
    async def main() -> None:
        async with await DynamoDBBackend.create(conf) as b:
            await mixed_race(b, seed, workers=8, ops=60)

    asyncio.run(main())


async def test_processes_racing_keep_the_invariant(dynamodb_conf: dict[str, str]) -> None:
    async with await DynamoDBBackend.create(dynamodb_conf):
        pass  # create the table once, before the processes race to
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_race, args=(dynamodb_conf, seed)) for seed in range(3)]
    for p in procs:
        p.start()
    await asyncio.to_thread(lambda: [p.join(120) for p in procs])
    assert [p.exitcode for p in procs] == [0, 0, 0]
    async with await DynamoDBBackend.create(dynamodb_conf) as b:
        keys = {f"{f}/{n}" for f in RACE_FOLDERS for n in ["k0", "k1"]}
        assert await violations(b, keys) == []


async def test_cancelled_writes_leave_the_invariant_intact(dynamodb_conf: dict[str, str]) -> None:
    written: list[str] = []
    async with proxied(dynamodb_conf) as (proxy, b):
        proxy.latency(0.01)
        rng = random.Random(7)
        for n in range(30):
            key = f"c{n}/x/y/k"
            await b.put(Entry(key, b"1"))
            # Cancel the delete (or a put of a fresh deep key) at a random moment part-way.
            op = b.delete(key) if n % 2 else b.put(Entry(f"c{n}/p/q/k", b"1"))
            written += [key, f"c{n}/p/q/k"]
            task = asyncio.ensure_future(op)
            await asyncio.sleep(rng.uniform(0, 0.06))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    async with await DynamoDBBackend.create(dynamodb_conf) as again:
        assert await violations(again, written) == []


async def test_put_that_fails_part_way_cleans_up_after_itself(dynamodb_conf: dict[str, str]) -> None:
    # Its pointers (first in the batch) land, its record comes back unprocessed until the write
    # deadline passes. The put fails; its cleanup prunes the folders it left empty.
    async with proxied(dynamodb_conf, write_deadline="0.3") as (proxy, b):
        for n in range(5):
            first = proxy.partial_batch(keep=2, times=1)  # both pointers land
            storm = proxy.partial_batch(keep=0, duration=0.6)  # the record keeps coming back
            with pytest.raises(WriteIncomplete):
                await b.put(Entry(f"w{n}/a/k", b"1"))
            assert first.fired == 1
            assert storm.fired >= 1
            await asyncio.sleep(0.7)
    async with await DynamoDBBackend.create(dynamodb_conf) as again:
        assert await violations(again, [f"w{n}/a/k" for n in range(5)]) == []
        assert await again.list("") == []


async def test_delete_prunes_pointers_written_without_tokens(dynamo: DynamoDBBackend) -> None:
    # Tables Vault (or an older kvstore) wrote have pointers without a token: still pruned.
    items: list[dict[str, Any]] = [
        {"Path": {"S": " "}, "Key": {"S": "v/"}},
        {"Path": {"S": "v"}, "Key": {"S": "w/"}},
        {"Path": {"S": "v/w"}, "Key": {"S": "k"}, "Value": {"B": b"1"}},
    ]
    await dynamo.table.call("batch_write_item", RequestItems={dynamo.table.name: [
        {"PutRequest": {"Item": i}} for i in items]})
    assert await dynamo.list("v/") == ["w/"]
    await dynamo.delete("v/w/k")
    assert await dynamo.list("") == []


def _deep_writer(conf: dict[str, str], seed: int) -> None:
    """Put and delete normal and very deep (> 25 levels: two batches) keys until killed."""

    async def main() -> None:
        rng = random.Random(seed)
        async with await DynamoDBBackend.create(conf) as b:
            while True:
                depth = rng.choice([3, 5, 30])
                key = "/".join(f"k{seed}{rng.randrange(2)}" for _ in range(depth))
                await (b.put(Entry(key, b"v")) if rng.random() < 0.6 else b.delete(key))

    asyncio.run(main())


@pytest.mark.parametrize("round_", range(4))
async def test_sigkill_mid_write_then_fsck_repair(dynamodb_conf: dict[str, str], round_: int) -> None:
    from kvstore.fsck import fsck

    async with await DynamoDBBackend.create(dynamodb_conf):
        pass  # the table exists before the writers start
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_deep_writer, args=(dynamodb_conf, 10 * round_ + i)) for i in range(2)]
    for p in procs:
        p.start()
    await asyncio.sleep(random.Random(round_).uniform(3.0, 4.5))  # spawn and imports take ~2 s
    for p in procs:
        p.kill()  # SIGKILL: whatever write was in flight stops half-way
    await asyncio.to_thread(lambda: [p.join(10) for p in procs])
    async with await DynamoDBBackend.create(dynamodb_conf) as b:
        await fsck(b, "", repair=True)
        after = await fsck(b, "")
        assert after.clean, after
        reachable, empty = await walk(b)
        assert empty == []
        assert [k for k in sorted(reachable) if await b.get(k) is None] == []
