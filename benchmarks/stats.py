"""Latency percentiles and kvstore/raw ratios: the arithmetic of the results, kept pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["latency_summary", "percentile", "ratio"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of values sorted ascending; NaN when empty.

    Nearest-rank reports a latency that was actually observed, which is what a p99 should be.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds."""
    ms = sorted(v / 1e6 for v in latencies_ns)
    if not ms:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan, "max": math.nan}
    return {
        "p50": round(percentile(ms, 50), 3),
        "p95": round(percentile(ms, 95), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(sum(ms) / len(ms), 3),
        "max": round(ms[-1], 3),
    }


def ratio(kvstore: float | None, raw: float | None) -> float | None:
    """kvstore / raw rounded to 3 places; None when either side is missing or raw is zero."""
    if kvstore is None or raw is None or raw == 0 or math.isnan(kvstore) or math.isnan(raw):
        return None
    return round(kvstore / raw, 3)
