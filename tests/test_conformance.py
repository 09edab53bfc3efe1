"""The public conformance suite (kvstore.testing), run unchanged against both backends."""

from __future__ import annotations

from kvstore.dynamodb import DynamoDBBackend
from kvstore.inmem import InmemBackend
from kvstore.testing import (
    exercise_backend,
    exercise_backend_list_prefix,
    exercise_bad_input,
    exercise_conditional_backend,
    exercise_ha_backend,
    exercise_key_namespace,
    exercise_list_pages,
    exercise_same_name_key_and_folder,
    exercise_transactional_backend,
)

Backends = InmemBackend | DynamoDBBackend


async def test_backend(backend: Backends) -> None:
    await exercise_backend(backend)


async def test_list_prefix(backend: Backends) -> None:
    await exercise_backend_list_prefix(backend)


async def test_same_name_key_and_folder(backend: Backends) -> None:
    await exercise_same_name_key_and_folder(backend)


async def test_transactions(backend: Backends) -> None:
    await exercise_transactional_backend(backend)


async def test_bad_input(backend: Backends) -> None:
    await exercise_bad_input(backend)


async def test_key_namespace(backend: Backends) -> None:
    await exercise_key_namespace(backend)


async def test_ha_one_backend_two_locks(backend: Backends) -> None:
    await exercise_ha_backend(backend, backend)


async def test_ha_two_dynamodb_clients(dynamo: DynamoDBBackend, dynamodb_conf: dict[str, str]) -> None:
    # Two separate clients on one table behave like two nodes.
    async with await DynamoDBBackend.create(dynamodb_conf) as other:
        await exercise_ha_backend(dynamo, other)


async def test_conditional_backend(backend: Backends) -> None:
    await exercise_conditional_backend(backend)


async def test_list_pages(backend: Backends) -> None:
    await exercise_list_pages(backend)
