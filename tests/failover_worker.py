"""One candidate of the multi-process failover test (tests/test_failover.py); run as a script.

It campaigns for leadership on DynamoDB; while it leads it writes its fencing token to one shared
record with fenced writes, and it appends every event to a JSON-lines log with monotonic
timestamps (CLOCK_MONOTONIC is one clock for all processes of a machine, so the test can merge
the logs). Before each write it asks ``term.is_leader`` and logs the moment the answer was yes
(``t_check``): the last such moment of a term ends its leadership interval, which the test checks
against every other term's. When it notices it lost, it sends one more write under its old token
(a "probe": the late write of a zombie leader) to show the store refuses it, then campaigns again.
A failed resignation (a partition) is logged and the campaign starts over.

Usage: python tests/failover_worker.py --endpoint URL --table T --id NAME --log PATH [timings]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import IO, Any

from kvstore import BackendError, Entry, FenceRejected, TransactionConflict
from kvstore.dynamodb import DynamoDBBackend
from kvstore.election import Election, Term
from kvstore.fencing import fenced_put


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--id", required=True, help="this candidate's name (the election value)")
    p.add_argument("--log", required=True, help="JSON-lines event log to append to")
    p.add_argument("--name", default="failover/leader", help="the election (lock) name")
    p.add_argument("--record", default="failover/record", help="the shared record leaders write")
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--renew", type=float, default=0.5)
    p.add_argument("--watch", type=float, default=0.5)
    p.add_argument("--retry", type=float, default=0.2)
    p.add_argument("--write-interval", type=float, default=0.05)
    p.add_argument("--read-timeout", type=float, default=None, help="the client's read timeout (s)")
    p.add_argument("--max-retries", type=int, default=None, help="the SDK's retries (dynamodb_max_retries)")
    return p.parse_args(argv)


class EventLog:
    """Appends one JSON object per line and flushes it, so a SIGKILL loses at most a partial line."""

    def __init__(self, out: IO[str], ident: str) -> None:
        self._out = out
        self._id = ident

    def emit(self, event: str, **fields: Any) -> None:
        rec = {"event": event, "id": self._id, "pid": os.getpid(), "t": time.monotonic(), **fields}
        self._out.write(json.dumps(rec) + "\n")
        self._out.flush()


async def fenced_write(
    store: DynamoDBBackend, term: Term, record: str, log: EventLog, kind: str, t_check: float | None = None
) -> bool | None:
    """One fenced write of this term's token; logs it; True accepted, False rejected, None unknown.

    ``t_check``: when ``term.is_leader`` last said yes before this write (None for a probe).
    """
    payload = json.dumps({"token": term.fencing_token, "id": term.value}).encode()
    t_send = time.monotonic()
    ok: bool | None = None
    for _ in range(5):
        try:
            await fenced_put(store, Entry(record, payload), fence=term.fence)
            ok, err = True, None
        except FenceRejected as exc:
            ok, err = False, type(exc).__name__
        except TransactionConflict as exc:
            # Cancelled because another leader's write touched the record at the same moment:
            # nothing was written, so ask again for a definite answer.
            err = repr(exc)
            continue
        except BackendError as exc:  # e.g. a timeout: the outcome is not known here
            ok, err = None, repr(exc)
        break
    log.emit(kind, token=term.fencing_token, ok=ok, t_check=t_check, t_send=t_send, t_done=time.monotonic(), err=err)
    return ok


async def run(args: argparse.Namespace, log: EventLog) -> None:
    conf = {
        "endpoint": args.endpoint,
        "table": args.table,
        "region": "us-east-1",
        "access_key": "local",
        "secret_key": "local",
        "billing_mode": "PAY_PER_REQUEST",
        "ha_enabled": "true",
    }
    if args.read_timeout is not None:
        conf["read_timeout"] = str(args.read_timeout)
    if args.max_retries is not None:
        conf["dynamodb_max_retries"] = str(args.max_retries)
    async with await DynamoDBBackend.create(conf, environ={}) as store:
        election = Election(
            store, args.name, args.id,
            ttl=args.ttl, renew_interval=args.renew, watch_interval=args.watch, retry_interval=args.retry,
        )
        log.emit("ready")
        while True:
            log.emit("campaigning")
            try:
                async with election.campaign() as term:
                    log.emit("elected", token=term.fencing_token)
                    # term.is_leader also checks the lease on the local clock, so right after a
                    # pause (SIGSTOP) the loop stops before the background task has set term.lost.
                    while term.is_leader:
                        t_check = time.monotonic()
                        if await fenced_write(store, term, args.record, log, "write", t_check) is False:
                            break  # refused: someone else was granted since
                        await asyncio.sleep(args.write_interval)
                    log.emit("lost", token=term.fencing_token, lost_event=term.lost.is_set())
                    await fenced_write(store, term, args.record, log, "probe")
            except BackendError as exc:  # resigning failed (partitioned): the lease frees itself
                log.emit("resign_failed", err=repr(exc))


def main() -> None:
    args = parse_args()
    with open(args.log, "a", encoding="utf-8") as out:
        log = EventLog(out, args.id)
        log.emit("start")
        asyncio.run(run(args, log))


if __name__ == "__main__":
    main()
