"""The workloads: each turns a key space into a list of operations, the same for every target.

Plans are drawn from a seeded generator, so kvstore and raw receive the identical sequence of
operations (only their interleaving under concurrency can differ):

- **put**: every key once, in shuffled order (each put writes its record and folder pointers);
- **get**: ``keys`` gets of uniformly chosen existing keys;
- **list**: ``keys`` lists of uniformly chosen leaf folders (each holds ``fanout`` keys);
- **mix**: ``keys`` operations, 70 % get / 20 % put / 5 % list / 5 % delete. A quarter of the puts
  write new keys into existing folders, and the deletes remove those again (newest first), so the
  key space is about the same size afterwards; the other puts overwrite existing keys;
- **delete**: every key once, in shuffled order (about one delete in ``fanout`` empties a folder
  and has to remove pointers).

put needs nothing; get, list, mix and delete need the key space written, and delete leaves it
empty. :data:`NEEDS_LOADED` and :data:`LEAVES_LOADED` let the worker preload (untimed) when a run
leaves out ``put``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.keyspace import KeySpace

__all__ = ["LEAVES_LOADED", "MIX", "NEEDS_LOADED", "Op", "plan"]

#: The mix workload's shares of operation kinds (they sum to 1).
MIX: dict[str, float] = {"get": 0.70, "put": 0.20, "list": 0.05, "delete": 0.05}
#: Share of mix puts that create a new key rather than overwrite one.
_MIX_NEW_KEY_SHARE = 0.25

#: Workload -> whether its key space must be written beforehand.
NEEDS_LOADED: dict[str, bool] = {"put": False, "get": True, "list": True, "mix": True, "delete": True}
#: Workload -> whether the key space is written afterwards.
LEAVES_LOADED: dict[str, bool] = {"put": True, "get": True, "list": True, "mix": True, "delete": False}


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: ``kind`` is put/get/list/delete; ``arg`` is a key, or a prefix for list."""

    kind: str
    arg: str


def plan(workload: str, space: KeySpace, seed: int) -> list[Op]:
    """The operations of ``workload`` on ``space``; identical for identical arguments."""
    rng = random.Random(f"{seed}:{workload}:{space.namespace}")
    keys = space.all_keys()
    if workload in ("put", "delete"):
        rng.shuffle(keys)
        return [Op(workload, k) for k in keys]
    if workload == "get":
        return [Op("get", rng.choice(keys)) for _ in range(space.keys)]
    folders = space.leaf_folders()
    if workload == "list":
        return [Op("list", rng.choice(folders)) for _ in range(space.keys)]
    if workload == "mix":
        return _mix(space, keys, folders, rng)
    raise ValueError(f"unknown workload {workload!r}")


def _mix(space: KeySpace, keys: list[str], folders: list[str], rng: random.Random) -> list[Op]:
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    churn: list[str] = []
    ops: list[Op] = []
    for i in range(space.keys):
        kind = rng.choices(kinds, weights)[0]
        if kind == "get":
            ops.append(Op("get", rng.choice(keys)))
        elif kind == "list":
            ops.append(Op("list", rng.choice(folders)))
        elif kind == "put":
            if rng.random() < _MIX_NEW_KEY_SHARE:
                new = space.extra_key(rng.choice(folders), f"m{i}")
                churn.append(new)
                ops.append(Op("put", new))
            else:
                ops.append(Op("put", rng.choice(keys)))
        else:
            # Delete the newest churn key; with none left, a key that was never written (delete is
            # idempotent and sends the same record delete and first-level query).
            victim = churn.pop() if churn else space.extra_key(rng.choice(folders), f"gone{i}")
            ops.append(Op("delete", victim))
    return ops
