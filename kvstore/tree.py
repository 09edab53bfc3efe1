"""A folder and everything below it, read with ``iter_list`` and drawn like tree(1).

Used by ``kvstore tree`` and the demo::

    from kvstore.tree import draw_tree, iter_tree_lines, read_tree

    for line in draw_tree("apps/", await read_tree(store, "apps/", depth=2)):
        print(line)

    async for line in iter_tree_lines(store, "apps/", depth=2):   # the same lines, streamed
        print(line)

:func:`read_tree` holds the whole tree (and reads each level's folders concurrently);
:func:`iter_tree_lines` holds one page of names per level being drawn, so a folder of any size
draws in bounded memory (its folders are read one after another, depth first).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from kvstore.backend import Backend

__all__ = ["TreeNode", "draw_tree", "iter_tree_lines", "read_tree"]


@dataclass
class TreeNode:
    """A child in a tree: its name as ``list`` gives it, and its children if it is an expanded folder."""

    name: str
    children: list[TreeNode] | None = None


def _label(prefix: str) -> str:
    """How a folder is shown: ``.`` for the root, else with its trailing ``/``."""
    return "." if prefix == "" else (prefix if prefix.endswith("/") else prefix + "/")


async def read_tree(backend: Backend, prefix: str = "", *, depth: int | None = None) -> list[TreeNode]:
    """The children of folder ``prefix``, sub-folders read recursively (all of one level at once).

    ``depth`` bounds how many levels are read (1: only ``prefix``'s own children); folders past
    it are returned unexpanded (``children`` is ``None``).
    """
    folder = "" if prefix == "" else _label(prefix)
    nodes = [TreeNode(n) async for n in backend.iter_list(folder)]
    if depth is None or depth > 1:
        below = None if depth is None else depth - 1
        subs = [n for n in nodes if n.name.endswith("/")]
        results = await asyncio.gather(*(read_tree(backend, folder + n.name, depth=below) for n in subs))
        for node, children in zip(subs, results, strict=True):
            node.children = children
    return nodes


def draw_tree(prefix: str, nodes: Sequence[TreeNode]) -> list[str]:
    """The lines of ``nodes`` drawn under a root labelled ``prefix`` (``.`` for the root), like tree(1)."""
    lines = [_label(prefix)]
    counts = [0, 0]  # folders, keys

    def walk(children: Sequence[TreeNode], indent: str) -> None:
        for i, node in enumerate(children):
            last = i == len(children) - 1
            lines.append(f"{indent}{'└── ' if last else '├── '}{node.name}")
            counts[0 if node.name.endswith("/") else 1] += 1
            if node.children:
                walk(node.children, indent + ("    " if last else "│   "))

    walk(nodes, "")
    folders, keys = counts
    lines.append("")
    lines.append(f"{folders} folder{'' if folders == 1 else 's'}, {keys} key{'' if keys == 1 else 's'}")
    return lines


async def iter_tree_lines(backend: Backend, prefix: str = "", *, depth: int | None = None) -> AsyncIterator[str]:
    """The lines ``draw_tree(prefix, await read_tree(backend, prefix, depth=depth))`` returns, streamed.

    Memory is one page of names (and one name of lookahead) per level being drawn, never a whole
    folder; the folders are read depth first, one at a time.
    """
    yield _label(prefix)
    counts = [0, 0]  # folders, keys
    folder = "" if prefix == "" else _label(prefix)
    async for line in _walk(backend, folder, "", depth, counts):
        yield line
    folders, keys = counts
    yield ""
    yield f"{folders} folder{'' if folders == 1 else 's'}, {keys} key{'' if keys == 1 else 's'}"


async def _walk(backend: Backend, folder: str, indent: str, depth: int | None, counts: list[int]) -> AsyncIterator[str]:
    names = backend.iter_list(folder)
    try:
        name = await anext(names, None)
        while name is not None:
            following = await anext(names, None)  # one name of lookahead: is this the last child?
            last = following is None
            yield f"{indent}{'└── ' if last else '├── '}{name}"
            is_folder = name.endswith("/")
            counts[0 if is_folder else 1] += 1
            if is_folder and (depth is None or depth > 1):
                below = None if depth is None else depth - 1
                async for line in _walk(backend, folder + name, indent + ("    " if last else "│   "), below, counts):
                    yield line
            name = following
    finally:
        close = getattr(names, "aclose", None)
        if close is not None:
            await close()
