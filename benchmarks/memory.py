"""Peak resident memory of the current process, per cell where the OS allows it.

``getrusage().ru_maxrss`` is what one reaches for first, but on Linux it survives ``execve``: a
worker process spawned by the harness starts with the *parent's* high-water mark and reports it
until it outgrows it, so kvstore and raw would read the same number. ``VmHWM`` in
``/proc/self/status`` belongs to the process's own address space, and writing ``5`` to
``/proc/self/clear_refs`` resets it (Linux 4.0+), which gives a peak per cell rather than per run.
Elsewhere (macOS) the harness falls back to ``ru_maxrss`` and says so in :func:`method`.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

__all__ = ["current_rss_mb", "method", "peak_rss_mb", "reset_peak"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_can_reset: bool | None = None


def _status_mb(field: str) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    return None


def reset_peak() -> bool:
    """Restart the peak at the current RSS; False where the OS does not allow it."""
    global _can_reset
    if _can_reset is False:
        return False
    try:
        _CLEAR_REFS.write_text("5")
        _can_reset = True
    except OSError:
        _can_reset = False
    return _can_reset


def peak_rss_mb() -> float:
    """The peak RSS in MiB: since the last :func:`reset_peak` if that worked, else since start."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def current_rss_mb() -> float | None:
    """The RSS right now, in MiB (None where /proc is missing)."""
    return _status_mb("VmRSS")


def method() -> str:
    """How :func:`peak_rss_mb` is measured here, for the results file."""
    if _status_mb("VmHWM") is None:
        return "getrusage ru_maxrss (process lifetime, may include the parent's before exec)"
    if _can_reset:
        return "VmHWM, reset before each cell (peak of that cell)"
    return "VmHWM (process lifetime peak)"
