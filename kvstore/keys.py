"""Pure key arithmetic: validation, the Path/Key split of the DynamoDB layout, and prefixes.

Keys are ``/``-separated segments. Key ``a/b/c`` lives in folder ``a/b`` under the name ``c``; its
prefixes (folders) are ``a/`` and ``a/b/``. Nothing here does I/O, so all of it is tested directly.
"""

from __future__ import annotations

from kvstore.errors import InvalidKey, InvalidValue

__all__ = [
    "LOCK_PREFIX",
    "MAX_KEY_BYTES",
    "MAX_PATH_BYTES",
    "ROOT_PATH",
    "base",
    "folder_of",
    "is_hidden",
    "lock_key",
    "prefixes",
    "split",
    "validate_key",
    "validate_prefix",
]

#: DynamoDB once refused empty strings in key attributes, so Vault stores top-level keys under a
#: single space; we keep that so tables Vault wrote stay readable.
ROOT_PATH = " "

#: A last segment starting with this marks a lock record. ``list`` skips such names, which is the
#: whole point of the prefix: lock records share folders with data but never show up as data.
LOCK_PREFIX = "_"

#: DynamoDB's limit on a range (sort) key attribute value.
MAX_KEY_BYTES = 1024
#: DynamoDB's limit on a hash (partition) key attribute value.
MAX_PATH_BYTES = 2048


def _check_type(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidValue(f"key must be str, not {type(key).__name__}")
    return key


def validate_key(key: object) -> str:
    """Return ``key`` if it can be stored, else raise :class:`InvalidKey` saying why.

    A key is a non-empty ``/``-separated path with no empty segment (so no leading, trailing or
    doubled ``/``), no NUL, whose last segment fits DynamoDB's 1024-byte sort key and whose folder
    fits the 2048-byte partition key.

    :raises InvalidValue: ``key`` is not a ``str``.
    :raises InvalidKey: ``key`` is malformed or too long.
    """
    k = _check_type(key)
    if not k:
        raise InvalidKey(k, "empty key")
    if "\x00" in k:
        raise InvalidKey(k, "contains NUL")
    parts = k.split("/")
    if any(p == "" for p in parts):
        if k.startswith("/"):
            raise InvalidKey(k, "leading '/'")
        if k.endswith("/"):
            raise InvalidKey(k, "trailing '/' (that names a folder, not a key)")
        raise InvalidKey(k, "empty segment ('//')")
    try:
        last = len(parts[-1].encode("utf-8"))
        path = len("/".join(parts[:-1]).encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(k, "not encodable as UTF-8") from exc
    if last > MAX_KEY_BYTES:
        raise InvalidKey(k, f"last segment is {last} bytes, over {MAX_KEY_BYTES}")
    if path > MAX_PATH_BYTES:
        raise InvalidKey(k, f"folder is {path} bytes, over {MAX_PATH_BYTES}")
    return k


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` (``""`` or a folder such as ``"a/b/"``, trailing ``/`` optional) if valid.

    :raises InvalidValue: ``prefix`` is not a ``str``.
    :raises InvalidKey: ``prefix`` is malformed.
    """
    p = _check_type(prefix)
    if p == "":
        return p
    validate_key(p[:-1] if p.endswith("/") else p)
    return p


def split(key: str) -> tuple[str, str]:
    """The DynamoDB ``(Path, Key)`` of ``key``: ``"a/b/c"`` -> ``("a/b", "c")``, ``"c"`` -> ``(" ", "c")``."""
    folder, sep, name = key.rpartition("/")
    return (folder if sep else ROOT_PATH), name


def folder_of(prefix: str) -> str:
    """The ``Path`` whose items are the children of folder ``prefix`` (``"a/"`` -> ``"a"``, ``""`` -> ``" "``)."""
    p = prefix[:-1] if prefix.endswith("/") else prefix
    return p or ROOT_PATH


def prefixes(key: str) -> list[str]:
    """The folders above ``key``, shallowest first: ``"a/b/c"`` -> ``["a", "a/b"]`` (no trailing ``/``)."""
    parts = key.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]


def base(key: str) -> str:
    """The last segment of ``key``."""
    return key.rpartition("/")[2]


def is_hidden(name: str) -> bool:
    """True for a child name that ``list`` must not show (lock and other internal records)."""
    return name.startswith(LOCK_PREFIX)


def lock_key(key: str) -> str:
    """The key of the lock record for lock name ``key``: ``"a/leader"`` -> ``"a/_leader"``."""
    folder, sep, name = key.rpartition("/")
    return f"{folder}{sep}{LOCK_PREFIX}{name}"
