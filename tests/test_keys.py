"""Pure key arithmetic and item conversion: no I/O."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import Entry, InvalidKey, InvalidValue
from kvstore.dynamodb.records import entry_from_item, pointer_items, record_item
from kvstore.keys import (
    LOCK_PREFIX,
    MAX_FOLDER_SEGMENT_BYTES,
    MAX_KEY_BYTES,
    MAX_PATH_BYTES,
    ROOT_PATH,
    base,
    folder_of,
    is_hidden,
    lock_key,
    prefixes,
    split,
    validate_key,
    validate_lock_name,
    validate_prefix,
)


def test_split_follows_vaults_layout() -> None:
    assert split("a/b/c") == ("a/b", "c")
    assert split("c") == (" ", "c")  # top-level keys live under Path " "


def test_prefixes_and_folders() -> None:
    assert prefixes("a/b/c") == ["a", "a/b"]
    assert prefixes("a") == []
    assert folder_of("") == " "
    assert folder_of("a/b/") == "a/b"
    assert folder_of("a/b") == "a/b"


def test_pointer_items_for_every_prefix() -> None:
    items = pointer_items("a/b/c", "t1")
    assert [(i["Path"]["S"], i["Key"]["S"]) for i in items] == [(" ", "a/"), ("a", "b/")]


def test_lock_key_prefixes_the_last_segment() -> None:
    assert lock_key("svc/leader") == "svc/_leader"
    assert lock_key("leader") == "_leader"


@pytest.mark.parametrize(
    ("key", "reason"),
    [("", "empty"), ("/a", "leading"), ("a/", "trailing"), ("a//b", "empty segment"), ("a\x00", "NUL"),
     ("k" * 1025, "last segment"), ("/".join(["p" * 1024] * 3) + "/k", "folder"),
     ("a/\ud800", "UTF-8"),
     (" /collide", "first segment ' ' is reserved: it is the root marker"),
     (" /a/b", "root marker"),
     ("_x", "reserved for lock records"), ("a/_x", "reserved for lock records"), ("a/b/_", "lock records"),
     ("f" * 1024 + "/k", "folder segment 1 is 1024 bytes, over 1023"),
     ("a/" + "f" * 1024 + "/k", "folder segment 2 is 1024 bytes"),
     ("/".join(["p" * 1000] * 3) + "/k", "folder is 3002 bytes, over 2048")],
)
def test_invalid_keys_say_why(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        validate_key(key)


def test_limits_are_bytes_not_characters() -> None:
    validate_key("é" * 512)  # 1024 bytes: fits exactly
    with pytest.raises(InvalidKey):
        validate_key("é" * 513)


@pytest.mark.parametrize("wrong", [None, 1, b"a", ["a"]])
def test_non_str_keys_are_type_errors(wrong: object) -> None:
    with pytest.raises(InvalidValue):
        validate_key(wrong)
    with pytest.raises(TypeError):  # InvalidValue is also a TypeError
        validate_prefix(wrong)


def test_legacy_base64_string_values_are_decoded() -> None:
    item = {"Path": {"S": "a"}, "Key": {"S": "b"}, "Value": {"S": base64.b64encode(b"\x00legacy").decode()}}
    assert entry_from_item(item) == Entry("a/b", b"\x00legacy")


segment = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                  min_size=1, max_size=8)


@given(st.lists(segment, min_size=1, max_size=6), st.binary(max_size=64))
def test_items_round_trip(parts: list[str], value: bytes) -> None:
    key = "/".join(parts)
    assert entry_from_item(record_item(Entry(key, value), "v1")) == Entry(key, value)


def test_the_layout_constants() -> None:
    # Vault's layout and DynamoDB's limits: changing these would make Vault's tables unreadable.
    assert (ROOT_PATH, LOCK_PREFIX, MAX_KEY_BYTES, MAX_PATH_BYTES) == (" ", "_", 1024, 2048)
    assert MAX_FOLDER_SEGMENT_BYTES == 1023


@pytest.mark.parametrize(
    "key",
    [" ",                    # a lone " " is a top-level key (Path " ", Key " "), not the root folder
     "a/ /b", "a/ ",         # " " is reserved only as the first of several segments
     "_x/k", "a/_x/b",       # folders may start with "_": folders are data
     "x_", "a/b_c",          # only a leading "_" is reserved
     "k" * 1024,             # the last segment may fill the sort key
     "f" * 1023 + "/k",      # a folder segment's pointer "f...f/" fills it too
     "/".join(["p" * 1023, "p" * 1023]) + "/k"],  # folder 2047 bytes
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


def test_folder_limit_is_the_whole_path() -> None:
    folder = "/".join(["p" * 1000, "p" * 1000, "p" * 46])  # 2048 bytes exactly
    assert validate_key(folder + "/k") == folder + "/k"
    with pytest.raises(InvalidKey, match="folder is 2049 bytes"):
        validate_key(folder + "p/k")


def test_folder_segment_limit_is_bytes() -> None:
    validate_key("é" * 511 + "x/k")  # 1023 bytes
    with pytest.raises(InvalidKey, match="folder segment 1 is 1024 bytes"):
        validate_key("é" * 512 + "/k")


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b/", "_x/", "a/_x/", "a/_x", " a/", "a/ /",
                                    "f" * 1023 + "/", "/".join(["p" * 1000, "p" * 1000, "p" * 46]) + "/"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [("/", "not a folder"), ("/a/", "leading"), ("a//", "empty segment"), ("a//b/", "empty segment"),
     ("a\x00/", "NUL"), ("a/\ud800/", "UTF-8"),
     (" ", "root marker"), (" /", "root marker"), (" /a/", "root marker"),
     ("f" * 1024 + "/", "folder segment 1 is 1024 bytes"), ("f" * 1024, "folder segment 1"),
     ("a/" + "f" * 1024 + "/", "folder segment 2"),
     ("/".join(["p" * 1000, "p" * 1000, "p" * 47]) + "/", "folder is 2049 bytes")],
)
def test_invalid_prefixes_say_why(prefix: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason) as info:
        validate_prefix(prefix)
    assert info.value.key == prefix  # the error names what the caller passed


def test_prefixes_never_apply_the_lock_record_rule() -> None:
    # The last segment of a folder is a folder name ("_x/"), never a lock record's name.
    assert validate_prefix("_locks") == "_locks"
    assert validate_prefix("a/_") == "a/_"


def test_lock_names_follow_the_key_rules() -> None:
    assert validate_lock_name("svc/leader") == "svc/leader"
    assert validate_lock_name("k" * 1023) == "k" * 1023  # its record "_k...k" is 1024 bytes
    assert validate_lock_name("_jobs/leader") == "_jobs/leader"
    for bad, reason in [("svc/_leader", "reserved for lock records"), (" /leader", "root marker"),
                        ("", "empty"), ("svc/", "trailing"), ("f" * 1024 + "/l", "folder segment")]:
        with pytest.raises(InvalidKey, match=reason):
            validate_lock_name(bad)
    with pytest.raises(InvalidValue):
        validate_lock_name(7)


def test_lock_name_last_segment_leaves_room_for_the_prefix() -> None:
    validate_key("a/" + "k" * 1024)  # a fine data key ...
    with pytest.raises(InvalidKey, match="1024 bytes, over 1023 for a lock name"):
        validate_lock_name("a/" + "k" * 1024)  # ... but its lock record's Key would be 1025 bytes
    with pytest.raises(InvalidKey, match="over 1023 for a lock name"):
        validate_lock_name("é" * 512)


def test_a_valid_lock_names_record_fits_and_is_hidden() -> None:
    name = "a/" + "k" * 1023
    record = lock_key(validate_lock_name(name))
    _, sort_key = split(record)
    assert len(sort_key.encode()) == MAX_KEY_BYTES
    assert is_hidden(base(record))
    with pytest.raises(InvalidKey, match="lock records"):
        validate_key(record)  # the data API can never reach it


@pytest.mark.parametrize(
    ("name", "hidden"),
    [("_x", True), ("_", True), ("_core-lock", True),  # lock records (Vault's core lock included)
     ("_x/", False), ("_/", False),                    # folders are data
     ("x", False), ("x/", False), ("x_", False), (" ", False)],
)
def test_is_hidden_only_for_lock_records(name: str, hidden: bool) -> None:
    assert is_hidden(name) is hidden


def test_no_valid_key_aliases_another_item() -> None:
    # The record of a valid key never shares (Path, Key) with a folder pointer or a lock record,
    # and a key under " " would (" /collide" -> the item of top-level "collide").
    assert split(" /collide") == split("collide")
    with pytest.raises(InvalidKey):
        validate_key(" /collide")
    pointer_of_folder = [(split(f)[0], base(f) + "/") for f in prefixes(" /a/b")]
    assert pointer_of_folder[1] == (ROOT_PATH, "a/")  # it would forge the root's pointer to a/
    with pytest.raises(InvalidKey):
        validate_key(" /a/b")
    assert split(lock_key("a/x")) == split("a/_x")
    with pytest.raises(InvalidKey):
        validate_key("a/_x")


@given(st.lists(segment, min_size=1, max_size=6))
def test_valid_keys_map_to_distinct_non_reserved_items(parts: list[str]) -> None:
    key = "/".join(parts)
    try:
        validate_key(key)
    except InvalidKey:
        assert parts[-1].startswith("_") or (len(parts) > 1 and parts[0] == " ")
        return
    path, name = split(key)
    assert not name.endswith("/") and not is_hidden(name)  # neither a pointer nor a lock record
    assert path == ROOT_PATH if len(parts) == 1 else path != ROOT_PATH
