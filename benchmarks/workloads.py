"""What a run measures: the parameter grid (:class:`BenchConfig`), the keys, the operation plans.

A *scenario* is one point of the grid (key depth, value size, concurrency, keys); each scenario
runs its workloads on every target, and one (scenario, workload, target) is a *cell*. Three sweeps
make up the standard set: **concurrency** (every workload at the base depth and value size),
**depth** and **value size** (at one concurrency). Plans are drawn from a seeded generator, so
every target receives the identical sequence of operations. Nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

__all__ = [
    "MIX",
    "SWEEP_WORKLOADS",
    "TARGETS",
    "WORKLOADS",
    "BenchConfig",
    "KeySpace",
    "Op",
    "Scenario",
    "plan",
    "coalesce_config",
    "quick_config",
    "standard_config",
]

#: Every workload, in the order a scenario runs them: put fills the key space that get, list and
#: mix read, and delete empties it last, so a full scenario needs no untimed preload.
WORKLOADS: tuple[str, ...] = ("put", "get", "list", "mix", "delete")
#: kvstore's DynamoDBBackend (coalescing on, the default), the same with ``coalesce=false``, and
#: the same requests sent raw (one aiobotocore call per request).
TARGETS: tuple[str, ...] = ("kvstore", "kvstore-plain", "raw")
#: Sweep -> the workloads it runs. Depth changes put's batch, delete's cleanup and list's folders;
#: value size touches only put and get.
SWEEP_WORKLOADS: dict[str, tuple[str, ...]] = {
    "concurrency": WORKLOADS,
    "depth": ("put", "get", "list", "delete"),
    "value_size": ("put", "get"),
    "folders": ("put",),
}
#: Depth 8 writes 8 items in one BatchWriteItem (limit 25); 100 KB leaves room under the 400 KB item.
MAX_DEPTH = 8
MAX_VALUE_SIZE = 100_000
#: Shares of the mix workload, and how many of its puts create a key (the rest overwrite).
MIX: dict[str, float] = {"get": 0.70, "put": 0.20, "list": 0.05, "delete": 0.05}
_MIX_NEW_KEY_SHARE = 0.25
#: Children per intermediate folder of a key space.
BRANCH = 4


@dataclass(frozen=True, slots=True)
class Scenario:
    """One point of the grid; ``workloads`` run on it per target."""

    depth: int
    value_size: int
    concurrency: int
    keys: int
    workloads: tuple[str, ...]
    sweeps: tuple[str, ...] = ()
    folders: int = 0  # leaf folders the keys are spread over; 0: ``fanout`` keys per leaf folder

    @property
    def id(self) -> str:
        """A short stable name, also the key space's namespace."""
        base = f"d{self.depth}-v{self.value_size}-c{self.concurrency}-n{self.keys}"
        return f"{base}-f{self.folders}" if self.folders else base

    def params(self) -> dict[str, int]:
        return {"depth": self.depth, "value_size": self.value_size, "concurrency": self.concurrency,
                "keys": self.keys, "folders": self.folders}

    def fanout(self, default: int) -> int:
        """Keys per leaf folder: ``default``, or as many as put the keys in ``folders`` folders."""
        return -(-self.keys // self.folders) if self.folders else default


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything that decides what a run measures (frozen: the report carries it verbatim).

    ``keys`` is both a scenario's key space and its timed operations per cell; sweep scenarios use
    ``sweep_keys``. Each cell is cut into ``rounds`` slices and the targets take turns slice by
    slice, so load bursts on a shared machine hit both.
    """

    workloads: tuple[str, ...] = WORKLOADS
    targets: tuple[str, ...] = TARGETS
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    depths: tuple[int, ...] = (1, 3, 8)
    value_sizes: tuple[int, ...] = (100, 10_000, 100_000)
    #: The folders sweep: put with ``folders_concurrency`` writers, the keys spread over this many
    #: leaf folders (hot folders: concurrent puts share pointer items); empty skips it.
    folders: tuple[int, ...] = ()
    folders_concurrency: int = 64
    base_depth: int = 3
    base_value_size: int = 1024
    sweep_concurrency: int = 16
    keys: int = 1000
    sweep_keys: int = 500
    fanout: int = 10  # keys per leaf folder: one delete in ``fanout`` empties its folder
    warmup_ops: int = 300  # untimed, per target, before the first cell
    rounds: int = 5
    max_parallel: int = 128  # kvstore's max_parallel and raw's connection pool
    latency_ms: float = 0.0  # added per request through kvstore.testing.faults.FaultProxy
    seed: int = 1
    quick: bool = False
    label: str = field(default="standard")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first parameter out of range."""
        if not self.workloads or set(self.workloads) - set(WORKLOADS):
            raise ValueError(f"workloads must be among {', '.join(WORKLOADS)}; got {list(self.workloads)}")
        if not self.targets or set(self.targets) - set(TARGETS):
            raise ValueError(f"targets must be among {', '.join(TARGETS)}; got {list(self.targets)}")
        for depth in (*self.depths, self.base_depth):
            if not 1 <= depth <= MAX_DEPTH:
                raise ValueError(f"key depth must be 1..{MAX_DEPTH}, got {depth}")
        for size in (*self.value_sizes, self.base_value_size):
            if not 1 <= size <= MAX_VALUE_SIZE:
                raise ValueError(f"value size must be 1..{MAX_VALUE_SIZE} bytes, got {size}")
        if self.folders and (self.base_depth < 2 or min(self.folders) < 1):
            raise ValueError("folders must be >= 1, with a base depth of at least 2 (depth 1 has no folders)")
        if min((*self.concurrency, self.sweep_concurrency, self.folders_concurrency)) < 1:
            raise ValueError("concurrency must be >= 1")
        if min(self.keys, self.sweep_keys, self.fanout, self.rounds) < 1:
            raise ValueError("keys, sweep_keys, fanout and rounds must be >= 1")
        if self.rounds > min(self.keys, self.sweep_keys):
            raise ValueError("rounds cannot exceed the keys per cell")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def scenarios(self) -> list[Scenario]:
        """Expand the sweeps into scenarios, merging points that two sweeps share."""
        points: dict[tuple[int, int, int, int], Scenario] = {}

        def add(depth: int, size: int, conc: int, keys: int, sweep: str, folders: int = 0) -> None:
            chosen = tuple(w for w in WORKLOADS if w in SWEEP_WORKLOADS[sweep] and w in self.workloads)
            if not chosen:
                return
            old = points.get((depth, size, conc, folders))
            if old is None:
                points[(depth, size, conc, folders)] = Scenario(depth, size, conc, keys, chosen, (sweep,), folders)
            else:
                merged = tuple(w for w in WORKLOADS if w in old.workloads or w in chosen)
                points[(depth, size, conc, folders)] = replace(old, workloads=merged, sweeps=(*old.sweeps, sweep))

        for conc in self.concurrency:
            add(self.base_depth, self.base_value_size, conc, self.keys, "concurrency")
        for depth in self.depths:
            add(depth, self.base_value_size, self.sweep_concurrency, self.sweep_keys, "depth")
        for size in self.value_sizes:
            add(self.base_depth, size, self.sweep_concurrency, self.sweep_keys, "value_size")
        for folders in self.folders:
            add(self.base_depth, self.base_value_size, self.folders_concurrency, self.keys, "folders", folders)
        return list(points.values())

    def total_ops(self) -> int:
        """Timed operations per target over the whole run (what the progress bar counts)."""
        return sum(s.keys * len(s.workloads) for s in self.scenarios())


def standard_config(**overrides: object) -> BenchConfig:
    """The standard set: a few minutes on two cores."""
    return replace(BenchConfig(), **overrides)  # type: ignore[arg-type]


def coalesce_config(**overrides: object) -> BenchConfig:
    """Issue 11's set: put/get/mix at concurrency 1/16/64/256 (depth 3, 1 KiB) on all three targets,
    and put by 64 writers into 10 folders (write units per put). A minute or two on two cores."""
    coalesce = BenchConfig(
        workloads=("put", "get", "mix"),
        concurrency=(1, 16, 64, 256),
        depths=(),
        value_sizes=(),
        folders=(10,),
        keys=1000,
        label="coalesce",
    )
    return replace(coalesce, **overrides)  # type: ignore[arg-type]


def quick_config(**overrides: object) -> BenchConfig:
    """A smoke-sized set (well under a minute): every workload and sweep, few operations."""
    quick = BenchConfig(
        concurrency=(1, 16),
        depths=(1, 8),
        value_sizes=(100, 100_000),
        keys=150,
        sweep_keys=80,
        warmup_ops=60,
        rounds=3,
        quick=True,
        label="quick",
    )
    return replace(quick, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class KeySpace:
    """``keys`` keys of ``depth`` segments under ``namespace``, ``fanout`` to a leaf folder.

    Leaf folders are grouped ``BRANCH`` to a parent, so intermediate levels have several children
    too (a delete that empties a leaf folder usually stops one level up, as in a real tree).
    """

    namespace: str
    depth: int
    keys: int
    fanout: int

    def folder(self, i: int) -> str:
        """The folder that holds key ``i``, with its trailing ``/`` (``""`` for the root)."""
        if self.depth == 1:
            return ""
        leaf, levels = i // self.fanout, self.depth - 2
        segments = [self.namespace] + [f"n{leaf // BRANCH ** (levels - lv)}" for lv in range(1, levels + 1)]
        return "/".join(segments) + "/"

    def key(self, i: int) -> str:
        return f"{self.namespace}-k{i}" if self.depth == 1 else f"{self.folder(i)}k{i}"

    def all_keys(self) -> list[str]:
        return [self.key(i) for i in range(self.keys)]

    def leaf_folders(self) -> list[str]:
        """Every folder that directly holds keys (what the list workload reads)."""
        return list(dict.fromkeys(self.folder(i) for i in range(0, self.keys, self.fanout)))

    def extra_key(self, folder: str, tag: str) -> str:
        """A key outside the index range, placed in ``folder`` (the mix workload's churn)."""
        return f"{folder}{tag}" if folder else f"{self.namespace}-{tag}"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: ``kind`` is put/get/list/delete; ``arg`` is a key, or a prefix for list."""

    kind: str
    arg: str


def plan(workload: str, space: KeySpace, seed: int) -> list[Op]:
    """The operations of ``workload`` on ``space``; identical for identical arguments.

    put and delete touch every key once, shuffled; get and list draw ``keys`` uniform keys or leaf
    folders; mix draws ``keys`` operations by :data:`MIX`, a quarter of its puts creating keys that
    its deletes remove again (newest first), so the key space keeps its size.
    """
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
    if workload != "mix":
        raise ValueError(f"unknown workload {workload!r}")
    churn: list[str] = []
    ops: list[Op] = []
    for i in range(space.keys):
        kind = rng.choices(list(MIX), list(MIX.values()))[0]
        if kind == "put" and rng.random() < _MIX_NEW_KEY_SHARE:
            churn.append(space.extra_key(rng.choice(folders), f"m{i}"))
            ops.append(Op("put", churn[-1]))
        elif kind in ("get", "put"):
            ops.append(Op(kind, rng.choice(keys)))
        elif kind == "list":
            ops.append(Op("list", rng.choice(folders)))
        else:  # the newest churn key, or one never written (delete is idempotent)
            ops.append(Op("delete", churn.pop() if churn else space.extra_key(rng.choice(folders), f"gone{i}")))
    return ops
