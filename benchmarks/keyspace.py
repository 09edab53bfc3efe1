"""The keys a scenario writes: a small tree with a chosen depth and folder size.

Key ``i`` of a key space at depth ``d`` has ``d`` segments. Keys are grouped ``fanout`` to a leaf
folder, and leaf folders are grouped ``BRANCH`` to a parent folder, so intermediate levels have
several children too (a delete that empties a leaf folder usually stops one level up, as it would
in a real tree). Every key space lives under its own namespace, so scenarios never share folders
(except the root folder at depth 1, which is what depth 1 means).

Nothing here does I/O; both targets get exactly the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BRANCH", "KeySpace"]

#: Children per intermediate folder.
BRANCH = 4


@dataclass(frozen=True, slots=True)
class KeySpace:
    """``keys`` keys of ``depth`` segments under ``namespace``, ``fanout`` per leaf folder."""

    namespace: str
    depth: int
    keys: int
    fanout: int

    def folder(self, i: int) -> str:
        """The folder that holds key ``i``, with its trailing ``/`` (``""`` for the root)."""
        if self.depth == 1:
            return ""
        leaf = i // self.fanout
        segments = [self.namespace]
        # Levels below the namespace, top-down; the deepest one is unique per leaf folder.
        levels = self.depth - 2
        for level in range(1, levels + 1):
            segments.append(f"n{leaf // BRANCH ** (levels - level)}")
        return "/".join(segments) + "/"

    def key(self, i: int) -> str:
        """The full key number ``i``."""
        if self.depth == 1:
            return f"{self.namespace}-k{i}"
        return f"{self.folder(i)}k{i}"

    def all_keys(self) -> list[str]:
        """Every key, in index order."""
        return [self.key(i) for i in range(self.keys)]

    def leaf_folders(self) -> list[str]:
        """Every folder that directly holds keys (what the list workload reads)."""
        seen: dict[str, None] = {}
        for i in range(0, self.keys, self.fanout):
            seen[self.folder(i)] = None
        return list(seen)

    def extra_key(self, folder: str, tag: str) -> str:
        """A key outside the index range, placed in ``folder`` (the mix workload's churn)."""
        if not folder:
            return f"{self.namespace}-{tag}"
        return f"{folder}{tag}"
