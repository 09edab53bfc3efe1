"""Unit tests of kvstore.testing.faults.rewrites: the proxy's DynamoDB JSON rewrites, without sockets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvstore.testing.faults.rewrites import (
    THROTTLE_MESSAGES,
    asks_all_old,
    conflict_error,
    dumps,
    error_type,
    everything_unprocessed,
    kept_count,
    loads_object,
    merge_unprocessed,
    split_batch,
    strip_items,
    throttle_error,
)


def _put(pk: str) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": pk}}}}


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


def _write_doc() -> dict[str, Any]:
    return {
        "RequestItems": {"t1": [_put("a"), _put("b")], "t2": [_put("c")]},
        "ReturnConsumedCapacity": "TOTAL",
    }


def _get_doc() -> dict[str, Any]:
    return {
        "RequestItems": {
            "t1": {"Keys": [_key("a"), _key("b")], "ConsistentRead": True},
            "t2": {"Keys": [_key("c")], "ProjectionExpression": "pk"},
        }
    }


# ------------------------------------------------------------------------------ kept_count


@pytest.mark.parametrize(
    ("total", "keep", "fraction", "expected"),
    [
        (5, 2, None, 2),
        (5, 9, None, 5),
        (5, 0, None, 0),
        (10, None, 0.5, 5),
        (3, None, 0.1, 1),  # a positive fraction keeps at least one
        (3, None, 0.0, 0),
        (0, None, 0.5, 0),
        (4, None, None, 0),
    ],
)
def test_kept_count(total: int, keep: int | None, fraction: float | None, expected: int) -> None:
    assert kept_count(total, keep=keep, fraction=fraction) == expected


# ------------------------------------------------------------------------------ split_batch


def test_split_batch_write_keeps_the_first_requests_in_table_order() -> None:
    doc = _write_doc()
    before = copy.deepcopy(doc)
    split = split_batch("BatchWriteItem", doc, keep=1, fraction=None)
    assert split is not None
    assert split.forwarded == {"RequestItems": {"t1": [_put("a")]}, "ReturnConsumedCapacity": "TOTAL"}
    assert split.withheld == {"t1": [_put("b")], "t2": [_put("c")]}
    assert split.tables == ["t1", "t2"]
    assert doc == before, "the request is not changed in place"


def test_split_batch_write_across_tables() -> None:
    split = split_batch("BatchWriteItem", _write_doc(), keep=2, fraction=None)
    assert split is not None and split.forwarded is not None
    assert split.forwarded["RequestItems"] == {"t1": [_put("a"), _put("b")]}
    assert split.withheld == {"t2": [_put("c")]}


def test_split_batch_get_keeps_each_tables_settings_on_both_sides() -> None:
    split = split_batch("BatchGetItem", _get_doc(), keep=1, fraction=None)
    assert split is not None and split.forwarded is not None
    assert split.forwarded["RequestItems"] == {"t1": {"Keys": [_key("a")], "ConsistentRead": True}}
    assert split.withheld == {
        "t1": {"Keys": [_key("b")], "ConsistentRead": True},
        "t2": {"Keys": [_key("c")], "ProjectionExpression": "pk"},
    }
    assert split.tables == ["t1", "t2"]


def test_split_batch_keep_zero_forwards_nothing() -> None:
    split = split_batch("BatchWriteItem", _write_doc(), keep=0, fraction=None)
    assert split is not None
    assert split.forwarded is None
    assert split.withheld == _write_doc()["RequestItems"]


@pytest.mark.parametrize("operation", ["BatchWriteItem", "BatchGetItem"])
def test_split_batch_nothing_to_cut(operation: str) -> None:
    doc = _write_doc() if operation == "BatchWriteItem" else _get_doc()
    assert split_batch(operation, doc, keep=3, fraction=None) is None  # every request kept
    assert split_batch(operation, {"RequestItems": "junk"}, keep=0, fraction=None) is None
    assert split_batch(operation, {}, keep=0, fraction=None) is None


def test_split_batch_other_operations_are_not_split() -> None:
    assert split_batch("PutItem", _write_doc(), keep=0, fraction=None) is None


def test_split_batch_skips_malformed_tables() -> None:
    doc = {"RequestItems": {"bad": "x", "t": [_put("a"), _put("b")]}}
    split = split_batch("BatchWriteItem", doc, keep=1, fraction=None)
    assert split is not None and split.forwarded is not None
    assert split.forwarded["RequestItems"] == {"t": [_put("a")]}
    assert split.withheld == {"t": [_put("b")]}
    assert split.tables == ["bad", "t"]


# ------------------------------------------------------------------------------ unprocessed


def test_merge_unprocessed_write_appends_after_the_engines_own() -> None:
    answer = {"UnprocessedItems": {"t1": [_put("x")]}, "ConsumedCapacity": []}
    before = copy.deepcopy(answer)
    merged = merge_unprocessed("BatchWriteItem", answer, {"t1": [_put("b")], "t2": [_put("c")]})
    assert merged == {"UnprocessedItems": {"t1": [_put("x"), _put("b")], "t2": [_put("c")]}, "ConsumedCapacity": []}
    assert answer == before


def test_merge_unprocessed_write_into_an_answer_without_any() -> None:
    merged = merge_unprocessed("BatchWriteItem", {}, {"t": [_put("b")]})
    assert merged == {"UnprocessedItems": {"t": [_put("b")]}}


def test_merge_unprocessed_get_appends_keys_and_keeps_settings() -> None:
    answer = {
        "Responses": {"t1": []},
        "UnprocessedKeys": {"t1": {"Keys": [_key("x")], "ConsistentRead": True}},
    }
    before = copy.deepcopy(answer)
    withheld = {"t1": {"Keys": [_key("b")], "ConsistentRead": True}, "t2": {"Keys": [_key("c")]}}
    merged = merge_unprocessed("BatchGetItem", answer, withheld)
    assert merged["UnprocessedKeys"] == {
        "t1": {"Keys": [_key("x"), _key("b")], "ConsistentRead": True},
        "t2": {"Keys": [_key("c")]},
    }
    assert merged["Responses"] == {"t1": []}
    assert answer == before


def test_everything_unprocessed() -> None:
    write = split_batch("BatchWriteItem", _write_doc(), keep=0, fraction=None)
    get = split_batch("BatchGetItem", _get_doc(), keep=0, fraction=None)
    assert write is not None and get is not None
    assert everything_unprocessed("BatchWriteItem", write) == {"UnprocessedItems": _write_doc()["RequestItems"]}
    assert everything_unprocessed("BatchGetItem", get) == {
        "Responses": {"t1": [], "t2": []},
        "UnprocessedKeys": _get_doc()["RequestItems"],
    }


def test_split_then_merge_loses_nothing() -> None:
    for operation, doc in (("BatchWriteItem", _write_doc()), ("BatchGetItem", _get_doc())):
        split = split_batch(operation, doc, keep=1, fraction=None)
        assert split is not None
        merged = merge_unprocessed(operation, {}, split.withheld)
        field = "UnprocessedItems" if operation == "BatchWriteItem" else "UnprocessedKeys"
        assert merged[field] == split.withheld


# ------------------------------------------------------------------------------ errors


def test_throttle_error() -> None:
    doc = throttle_error("ThrottlingException")
    assert doc == {
        "__type": "com.amazon.coral.availability#ThrottlingException",
        "message": THROTTLE_MESSAGES["ThrottlingException"],
    }
    assert error_type(doc) == "ThrottlingException"
    custom = throttle_error("RequestLimitExceeded", "slow down")
    assert custom["message"] == "slow down"
    assert error_type(custom) == "RequestLimitExceeded"
    with pytest.raises(KeyError):
        throttle_error("NotAThrottle")


def test_conflict_error_one_reason_per_item() -> None:
    request = {"TransactItems": [{"Put": {}}, {"Put": {}}, {"Delete": {}}]}
    doc = conflict_error(request, frozenset({1}))
    assert error_type(doc) == "TransactionCanceledException"
    assert [r["Code"] for r in doc["CancellationReasons"]] == ["None", "TransactionConflict", "None"]
    assert doc["Message"].endswith("[None, TransactionConflict, None]")
    every = conflict_error(request, None)
    assert [r["Code"] for r in every["CancellationReasons"]] == ["TransactionConflict"] * 3


def test_conflict_error_without_items_gives_one_reason() -> None:
    doc = conflict_error({}, None)
    assert [r["Code"] for r in doc["CancellationReasons"]] == ["TransactionConflict"]


def test_asks_all_old() -> None:
    assert asks_all_old("PutItem", {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"})
    assert not asks_all_old("PutItem", {"ReturnValuesOnConditionCheckFailure": "NONE"})
    assert not asks_all_old("PutItem", {})
    txn = {"TransactItems": [{"Put": {}}, {"ConditionCheck": {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}]}
    assert asks_all_old("TransactWriteItems", txn)
    assert not asks_all_old("TransactWriteItems", {"TransactItems": [{"Put": {}}, "junk"]})
    assert not asks_all_old("TransactWriteItems", {"TransactItems": "junk"})
    # A top-level flag is not how a transaction asks.
    assert not asks_all_old("TransactWriteItems", {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"})


def test_strip_items_condition_failure() -> None:
    doc = {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "Item": {"a": 1}}
    stripped = strip_items(doc)
    assert stripped == {"__type": doc["__type"]}
    assert "Item" in doc, "the input is not changed in place"
    assert strip_items(stripped) is None, "nothing left to strip"


def test_strip_items_cancellation_reasons() -> None:
    doc = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "CancellationReasons": [{"Code": "ConditionalCheckFailed", "Item": {"a": 1}}, {"Code": "None"}],
        "Message": "m",
    }
    before = copy.deepcopy(doc)
    stripped = strip_items(doc)
    assert stripped == {**doc, "CancellationReasons": [{"Code": "ConditionalCheckFailed"}, {"Code": "None"}]}
    assert doc == before
    assert strip_items(stripped) is None


def test_strip_items_other_errors_untouched() -> None:
    assert strip_items({"__type": "x#ValidationException", "Item": {}}) is None
    assert strip_items({"Item": {}}) is None


# ------------------------------------------------------------------------------ JSON


def test_loads_object_and_dumps() -> None:
    assert loads_object(dumps({"a": [1, 2]})) == {"a": [1, 2]}
    assert dumps({"a": 1, "b": "x"}) == b'{"a":1,"b":"x"}'
    assert loads_object(b"[1]") is None
    assert loads_object(b"not json") is None
    assert loads_object(b"\xff\xfe") is None
    assert error_type({}) == ""
