"""Pure key arithmetic: validation, the Path/Key split of the DynamoDB layout, and prefixes.

Keys are ``/``-separated segments. Key ``a/b/c`` lives in folder ``a/b`` under the name ``c``; its
prefixes (folders) are ``a/`` and ``a/b/``. Nothing here does I/O, so all of it is tested directly.

One namespace, checked here and nowhere else, so that both backends accept and refuse the same
names. The DynamoDB layout (Vault's, kept so Vault's tables stay readable) maps three kinds of item
into one ``(Path, Key)`` space:

- the record of key ``a/b/c``: ``Path="a/b", Key="c"`` (a top-level key has ``Path=" "``);
- a folder pointer per prefix: ``Path="a", Key="b/"`` and ``Path=" ", Key="a/"``;
- the lock record of lock ``a/x``: ``Path="a", Key="_x"``.

The rules below are exactly what keeps those apart and within DynamoDB's key limits:

- a key of two or more segments may not start with the segment ``" "``: its items would land in
  the root's partition (``" /c"`` would be top-level ``c``);
- a key's last segment may not start with ``_``: that name is a lock record's;
- a folder segment is at most 1023 bytes (its pointer's sort key is ``segment + "/"``), a last
  segment at most 1024 (a lock name's at most 1023: its record's sort key is ``"_" + segment``), and
  a folder (``Path``) at most 2048 bytes.

Folders are data, so a folder segment may start with ``_`` (``a/_x/b`` is a normal key, and ``list``
shows ``_x/``): only names without a trailing ``/`` can be lock records.
"""

from __future__ import annotations

from kvstore.errors import InvalidKey, InvalidValue

__all__ = [
    "LOCK_PREFIX",
    "MAX_FOLDER_SEGMENT_BYTES",
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
    "validate_lock_name",
    "validate_prefix",
]

#: DynamoDB once refused empty strings in key attributes, so Vault stores top-level keys under a
#: single space; we keep that so tables Vault wrote stay readable. A folder of that name would share
#: the root's partition, so no key or prefix may start with the segment ``" "``.
ROOT_PATH = " "

#: A last segment starting with this marks a lock record. ``list`` skips such names, which is the
#: whole point of the prefix: lock records share folders with data but never show up as data. Data
#: keys may therefore not end in such a name (folders may: a folder name ends in ``/``).
LOCK_PREFIX = "_"

#: DynamoDB's limit on a range (sort) key attribute value: the ``Key`` of every item.
MAX_KEY_BYTES = 1024
#: DynamoDB's limit on a hash (partition) key attribute value: the ``Path`` of every item.
MAX_PATH_BYTES = 2048
#: A folder segment's pointer item has sort key ``segment + "/"``, one byte more than the segment.
MAX_FOLDER_SEGMENT_BYTES = MAX_KEY_BYTES - 1

_ROOT_REASON = (
    f"first segment {ROOT_PATH!r} is reserved: it is the root marker of the DynamoDB layout"
)
_RESERVED_REASON = f"names whose last segment starts with {LOCK_PREFIX!r} are reserved for lock records"


def _check_type(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidValue(f"key must be str, not {type(key).__name__}")
    return key


def _size(text: str, whole: str) -> int:
    """The UTF-8 size of ``text`` (a part of ``whole``, which is named in the error)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(whole, "not encodable as UTF-8") from exc


def _segments(k: str, *, folder: bool) -> list[str]:
    """Split ``k`` into segments after the checks keys and prefixes share.

    ``k`` is a key, or (``folder=True``) a prefix already stripped of its one optional trailing
    ``/``. Checks, in order: non-empty, no NUL, no empty segment, UTF-8, not under the root marker,
    and every folder segment (all of a prefix's; all but a key's last) within
    :data:`MAX_FOLDER_SEGMENT_BYTES`, and the folder within :data:`MAX_PATH_BYTES`.
    """
    if not k:
        raise InvalidKey(k, "empty key")
    if "\x00" in k:
        raise InvalidKey(k, "contains NUL")
    parts = k.split("/")
    if any(p == "" for p in parts):
        if k.startswith("/"):
            raise InvalidKey(k, "leading '/'")
        if k.endswith("/") and not folder:
            raise InvalidKey(k, "trailing '/' (that names a folder, not a key)")
        raise InvalidKey(k, "empty segment ('//')")
    _size(k, k)  # refuses lone surrogates before any rule reads the segments
    if parts[0] == ROOT_PATH and (folder or len(parts) > 1):
        raise InvalidKey(k, _ROOT_REASON)
    folders = parts if folder else parts[:-1]
    for i, seg in enumerate(folders):
        n = _size(seg, k)
        if n > MAX_FOLDER_SEGMENT_BYTES:
            raise InvalidKey(k, (
                f"folder segment {i + 1} is {n} bytes, over {MAX_FOLDER_SEGMENT_BYTES} "
                "(its folder pointer's sort key is the segment plus '/')"))
    path = _size("/".join(folders), k)
    if path > MAX_PATH_BYTES:
        raise InvalidKey(k, f"folder is {path} bytes, over {MAX_PATH_BYTES}")
    return parts


def validate_key(key: object) -> str:
    """Return ``key`` if it can be stored as data, else raise :class:`InvalidKey` saying why.

    THE validator of data keys: both backends run it on every put, get, delete, transaction step,
    versioned read and commit, so they accept and refuse the same keys. A key is a non-empty
    ``/``-separated path with no empty segment (so no leading, trailing or doubled ``/``) and no NUL,
    that is valid UTF-8, whose first segment is not :data:`ROOT_PATH` unless it is the only one,
    whose last segment does not start with :data:`LOCK_PREFIX` and fits DynamoDB's 1024-byte sort
    key, whose folder segments fit in 1023 bytes each and whose folder fits the 2048-byte partition
    key.

    :raises InvalidValue: ``key`` is not a ``str``.
    :raises InvalidKey: ``key`` is malformed, reserved or too long.
    """
    k = _check_type(key)
    parts = _segments(k, folder=False)
    last = parts[-1]
    if last.startswith(LOCK_PREFIX):
        raise InvalidKey(k, _RESERVED_REASON)
    n = _size(last, k)
    if n > MAX_KEY_BYTES:
        raise InvalidKey(k, f"last segment is {n} bytes, over {MAX_KEY_BYTES}")
    return k


def validate_lock_name(name: object) -> str:
    """Return ``name`` if it can name a lock, else raise :class:`InvalidKey` saying why.

    A lock name follows the data-key rules (:func:`validate_key`: it is a name in the same
    namespace, and may not itself look like a lock record), and its last segment is at most 1023
    bytes because the record's sort key is ``"_" + last segment`` (see :func:`lock_key`).

    :raises InvalidValue: ``name`` is not a ``str``.
    :raises InvalidKey: ``name`` is malformed, reserved or too long.
    """
    k = validate_key(name)
    n = _size(base(k), k)
    if n > MAX_KEY_BYTES - len(LOCK_PREFIX):
        raise InvalidKey(k, (
            f"last segment is {n} bytes, over {MAX_KEY_BYTES - len(LOCK_PREFIX)} for a lock name "
            f"(its record's sort key is {LOCK_PREFIX!r} plus the segment)"))
    return k


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` (``""`` or a folder such as ``"a/b/"``, trailing ``/`` optional) if valid.

    Every segment of a prefix is a folder segment: at most 1023 bytes, and the whole folder at most
    2048 bytes (it is the ``Path`` that ``list`` queries). The folder ``" "`` (or any folder under
    it) is refused: its partition is the root's. A segment may start with ``_``: folders are data.

    :raises InvalidValue: ``prefix`` is not a ``str``.
    :raises InvalidKey: ``prefix`` is malformed, reserved or too long.
    """
    p = _check_type(prefix)
    if p == "":
        return p
    if p == "/":
        raise InvalidKey(p, "'/' alone is not a folder (the root is '')")
    try:
        _segments(p[:-1] if p.endswith("/") else p, folder=True)
    except InvalidKey as exc:
        raise InvalidKey(p, exc.reason) from None
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
    """True for a child name that ``list`` must not show: a lock record.

    A lock record's name starts with :data:`LOCK_PREFIX` and never ends in ``/``; a child ending in
    ``/`` is a folder, which is data and always shown (``_x/`` included).
    """
    return name.startswith(LOCK_PREFIX) and not name.endswith("/")


def lock_key(key: str) -> str:
    """The key of the lock record for lock name ``key``: ``"a/leader"`` -> ``"a/_leader"``."""
    folder, sep, name = key.rpartition("/")
    return f"{folder}{sep}{LOCK_PREFIX}{name}"
