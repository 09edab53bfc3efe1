"""A short tour of kvstore on a real DynamoDB engine: ``python -m kvstore.demo`` (``make demo``).

It starts an embedded DynamoDB Local (in memory, gone afterwards) unless ``AWS_DYNAMODB_ENDPOINT``
names an engine to use instead, then on a fresh table: writes a small tree, draws it, reads a value,
deletes a key and shows its empty folder vanish, takes a lock and shows its fencing token, releases
it. Each step prints what it did, so the output doubles as an explanation of the data model.

It never talks to real AWS: without an endpoint it always runs its own engine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping

from kvstore import Entry, KVStoreError
from kvstore.dynamodb import DynamoDBBackend
from kvstore.engine import LocalEngine
from kvstore.local import LOCAL_CREDENTIALS, local_credentials
from kvstore.tree import draw_tree, read_tree

__all__ = ["DEMO_KEYS", "main", "tour"]

#: The tree the tour writes: two apps with config and a secret, and a user.
DEMO_KEYS: Mapping[str, bytes] = {
    "apps/web/config": b'{"port": 8080}',
    "apps/web/secrets/db": b"postgres://web:hunter2@db/web",
    "apps/api/config": b'{"port": 9090}',
    "users/alice": b"Alice Liddell",
}

LOCK_NAME = "apps/web/leader"


def _say(line: str = "") -> None:
    print(line, flush=True)


def _indented(lines: list[str], indent: str = "     ") -> None:
    for line in lines:
        _say(indent + line if line else "")


async def tour(conf: Mapping[str, str], environ: Mapping[str, str] | None = None, *, drop_table: bool = False) -> None:
    """Walk through the store on the engine and table of ``conf``, printing every step.

    ``drop_table``: delete the table at the end (on an engine that outlives the demo).
    """
    t0 = time.monotonic()
    async with await DynamoDBBackend.create(conf, environ=environ) as store:
        table = store.config.table
        _say(f"2. opened table {table!r} (created with Vault's schema: Path HASH, Key RANGE) "
             f"in {time.monotonic() - t0:.1f} s")

        _say(f"3. put {len(DEMO_KEYS)} keys (each put also writes a pointer for every folder above it):")
        for key, value in DEMO_KEYS.items():
            await store.put(Entry(key, value))
            _say(f"     {key:<22} = {value!r}")

        _say("4. the tree, read with list() folder by folder (folders end in '/'):")
        _indented(draw_tree("", await read_tree(store)))

        entry = await store.get("apps/web/config")
        assert entry is not None
        missing = await store.get("apps/web/nope")
        _say(f"5. get('apps/web/config') -> {entry.value!r}; get('apps/web/nope') -> {missing}")

        before = await store.list("apps/web/")
        await store.delete("apps/web/secrets/db")
        after = await store.list("apps/web/")
        _say("6. delete('apps/web/secrets/db'): its folder is now empty, so it vanishes:")
        _say(f"     list('apps/web/') before: {before}")
        _say(f"     list('apps/web/') after:  {after}")

        lock = store.lock_with(LOCK_NAME, "demo-node-1", ttl=5.0, renew_interval=1.5, watch_interval=1.5)
        lost = await lock.lock()
        assert lost is not None
        held, holder = await lock.value()
        _say(f"7. lock_with({LOCK_NAME!r}, 'demo-node-1').lock(): granted")
        _say(f"     fencing token {lock.fencing_token} (grows with every grant; fence writes with it)")
        _say(f"     value() -> {(held, holder)}")
        _say(f"     list('apps/web/') -> {await store.list('apps/web/')} (the lock record '_leader' is hidden)")
        await lock.unlock()
        _say(f"8. unlock(): released at once; value() -> {await lock.value()}")

        _say("9. the tree at the end:")
        _indented(draw_tree("", await read_tree(store)))
        if drop_table:
            await store.table.call("delete_table")
            _say(f"   dropped table {table!r}: the engine outlives the demo")
    _say(f"done: the tour took {time.monotonic() - t0:.1f} s after the engine was up")


def main(argv: list[str] | None = None) -> int:
    """Run the tour; return the exit status (1 with a one-line message if the engine fails)."""
    del argv  # no options: the environment says which engine to use
    endpoint = os.environ.get("AWS_DYNAMODB_ENDPOINT")
    # Our own table, whatever AWS_DYNAMODB_TABLE says: the tour must not write into a real table.
    environ = {k: v for k, v in os.environ.items() if k != "AWS_DYNAMODB_TABLE"}
    conf = {"table": f"kvstore-demo-{uuid.uuid4().hex[:8]}", "billing_mode": "PAY_PER_REQUEST"}
    engine: LocalEngine | None = None
    try:
        _say("kvstore demo: a hierarchical key-value store on DynamoDB, in Vault's table format")
        if endpoint:
            _say(f"1. using the engine at {endpoint} (AWS_DYNAMODB_ENDPOINT)")
            conf.update(local_credentials(endpoint, conf, environ))
        else:
            t0 = time.monotonic()
            _say("1. starting an embedded DynamoDB Local (in memory; set AWS_DYNAMODB_ENDPOINT to use another)...")
            engine = LocalEngine.start()
            _say(f"     listening on {engine.endpoint} after {time.monotonic() - t0:.1f} s")
            conf.update(LOCAL_CREDENTIALS, endpoint=engine.endpoint)
            environ.pop("AWS_DYNAMODB_ENDPOINT", None)
        asyncio.run(tour(conf, environ, drop_table=engine is None))
        return 0
    except KVStoreError as exc:
        print(f"kvstore demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvstore demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if engine is not None:
            engine.stop()
            _say("stopped the embedded DynamoDB Local (its data is gone)")


if __name__ == "__main__":
    raise SystemExit(main())
