"""Pure key arithmetic and item conversion: no I/O."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import Entry, InvalidKey, InvalidValue
from kvstore.dynamodb.records import entry_from_item, pointer_items, record_item
from kvstore.keys import folder_of, lock_key, prefixes, split, validate_key, validate_prefix


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
    items = pointer_items("a/b/c")
    assert [(i["Path"]["S"], i["Key"]["S"]) for i in items] == [(" ", "a/"), ("a", "b/")]


def test_lock_key_prefixes_the_last_segment() -> None:
    assert lock_key("svc/leader") == "svc/_leader"
    assert lock_key("leader") == "_leader"


@pytest.mark.parametrize(
    ("key", "reason"),
    [("", "empty"), ("/a", "leading"), ("a/", "trailing"), ("a//b", "empty segment"), ("a\x00", "NUL"),
     ("k" * 1025, "last segment"), ("/".join(["p" * 1024] * 3) + "/k", "folder")],
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
