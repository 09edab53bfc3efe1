"""What a benchmark run measures: the parameter grid, expanded into scenarios.

A *scenario* is one point of the grid (key depth, value size, concurrency, key count). Each
scenario is run once per workload and once per target; that triple is a *cell*. Three sweeps make
up the standard set:

- the **concurrency** sweep runs every workload at the base depth and value size, one scenario per
  concurrency level (these feed the throughput and p95 plots);
- the **depth** sweep varies the key depth at one concurrency (depth decides how many folder
  pointers a put writes and how many levels a delete may have to clean up);
- the **value size** sweep varies the value size at one concurrency (only put and get move values).

Sizes are chosen so that the standard set finishes in a few minutes on two cores shared with the
engine, and ``--quick`` well under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "SWEEP_WORKLOADS",
    "TARGETS",
    "WORKLOADS",
    "BenchConfig",
    "Scenario",
    "quick_config",
    "standard_config",
]

#: Every workload, in the order a scenario runs them. The order matters: ``put`` fills the key
#: space that ``get``, ``list`` and ``mix`` read, and ``delete`` empties it last, so a full
#: scenario never needs an untimed preload.
WORKLOADS: tuple[str, ...] = ("put", "get", "list", "mix", "delete")

#: The targets compared in one run: kvstore's DynamoDBBackend and the same requests sent raw.
TARGETS: tuple[str, ...] = ("kvstore", "raw")

#: Workloads worth sweeping over depth: depth changes put's batch size, delete's cleanup queries
#: and the folders list reads. Value size does not touch list or delete (they never carry values).
_DEPTH_SWEEP_WORKLOADS = ("put", "get", "list", "delete")
_VALUE_SWEEP_WORKLOADS = ("put", "get")

#: Sweep name -> the workloads it runs (before ``--workloads`` narrows them).
SWEEP_WORKLOADS: dict[str, tuple[str, ...]] = {
    "concurrency": WORKLOADS,
    "depth": _DEPTH_SWEEP_WORKLOADS,
    "value_size": _VALUE_SWEEP_WORKLOADS,
}

#: Key depth and value size bounds the harness accepts. Depth 8 writes 8 items in one
#: BatchWriteItem (limit 25); 400 KB is DynamoDB's item limit, and 100 KB leaves room for the keys.
MAX_DEPTH = 8
MAX_VALUE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class Scenario:
    """One point of the grid; every workload listed in ``workloads`` is run on it per target."""

    depth: int
    value_size: int
    concurrency: int
    keys: int
    workloads: tuple[str, ...]
    sweeps: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """A short stable name, also the key space's namespace inside each table."""
        return f"d{self.depth}-v{self.value_size}-c{self.concurrency}-n{self.keys}"

    def params(self) -> dict[str, int]:
        """The numeric parameters, as written into the results."""
        return {
            "depth": self.depth,
            "value_size": self.value_size,
            "concurrency": self.concurrency,
            "keys": self.keys,
        }


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything that decides what a run measures. Frozen so a report can carry it verbatim.

    ``keys`` is both the size of a scenario's key space and the number of timed operations per
    cell: put writes each key once, delete removes each once, and get/list/mix issue that many
    operations. Sweep scenarios use ``sweep_keys``.
    """

    workloads: tuple[str, ...] = WORKLOADS
    targets: tuple[str, ...] = TARGETS
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    depths: tuple[int, ...] = (1, 3, 8)
    value_sizes: tuple[int, ...] = (100, 10_000, 100_000)
    base_depth: int = 3
    base_value_size: int = 1024
    sweep_concurrency: int = 16
    keys: int = 1000
    sweep_keys: int = 500
    #: Keys per leaf folder: list reads a folder of this many keys, and on average one delete in
    #: ``fanout`` empties its folder and has to clean up pointers.
    fanout: int = 10
    #: Untimed operations per target before the first cell: JIT-warms the engine and fills the
    #: connection pool, so the first measured cell is not penalised.
    warmup_ops: int = 300
    #: Each cell is cut into this many rounds and the targets take turns round by round (the first
    #: target alternating), so a burst of load on a shared machine hits both, and the report can
    #: pair each kvstore round with the raw round next to it.
    rounds: int = 5
    max_parallel: int = 128
    #: Added network latency per request, through kvstore.testing.faults.FaultProxy (0 = direct).
    latency_ms: float = 0.0
    seed: int = 1
    quick: bool = False
    label: str = field(default="standard")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first parameter out of range."""
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown or not self.workloads:
            raise ValueError(f"workloads must be among {', '.join(WORKLOADS)}; got {sorted(unknown)}")
        bad_targets = set(self.targets) - set(TARGETS)
        if bad_targets or not self.targets:
            raise ValueError(f"targets must be among {', '.join(TARGETS)}; got {sorted(bad_targets)}")
        for depth in (*self.depths, self.base_depth):
            if not 1 <= depth <= MAX_DEPTH:
                raise ValueError(f"key depth must be 1..{MAX_DEPTH}, got {depth}")
        for size in (*self.value_sizes, self.base_value_size):
            if not 1 <= size <= MAX_VALUE_SIZE:
                raise ValueError(f"value size must be 1..{MAX_VALUE_SIZE} bytes, got {size}")
        for c in (*self.concurrency, self.sweep_concurrency):
            if c < 1:
                raise ValueError(f"concurrency must be >= 1, got {c}")
        if self.keys < 1 or self.sweep_keys < 1 or self.fanout < 1 or self.rounds < 1:
            raise ValueError("keys, sweep_keys, fanout and rounds must be >= 1")
        if self.rounds > min(self.keys, self.sweep_keys):
            raise ValueError("rounds cannot exceed the keys per cell")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def scenarios(self) -> list[Scenario]:
        """Expand the sweeps into scenarios, merging points that two sweeps share."""
        points: dict[tuple[int, int, int], Scenario] = {}

        def add(depth: int, size: int, conc: int, keys: int, workloads: tuple[str, ...], sweep: str) -> None:
            chosen = tuple(w for w in WORKLOADS if w in workloads and w in self.workloads)
            if not chosen:
                return
            key = (depth, size, conc)
            old = points.get(key)
            if old is None:
                points[key] = Scenario(depth, size, conc, keys, chosen, (sweep,))
            else:
                merged = tuple(w for w in WORKLOADS if w in old.workloads or w in chosen)
                points[key] = replace(old, workloads=merged, sweeps=(*old.sweeps, sweep))

        for conc in self.concurrency:
            add(self.base_depth, self.base_value_size, conc, self.keys, WORKLOADS, "concurrency")
        for depth in self.depths:
            add(depth, self.base_value_size, self.sweep_concurrency, self.sweep_keys, _DEPTH_SWEEP_WORKLOADS, "depth")
        for size in self.value_sizes:
            add(self.base_depth, size, self.sweep_concurrency, self.sweep_keys, _VALUE_SWEEP_WORKLOADS, "value_size")
        return list(points.values())

    def total_ops(self) -> int:
        """Timed operations per target over the whole run (what the progress bar counts)."""
        return sum(s.keys * len(s.workloads) for s in self.scenarios())


def standard_config(**overrides: object) -> BenchConfig:
    """The standard set: a few minutes on two cores."""
    return replace(BenchConfig(), **overrides)  # type: ignore[arg-type]


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
