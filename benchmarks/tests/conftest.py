"""Fixtures of the harness's own tests: an engine (given, or started for the session)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """``AWS_DYNAMODB_ENDPOINT`` if set, else a DynamoDB Local started for the session."""
    given = os.environ.get("AWS_DYNAMODB_ENDPOINT")
    if given:
        yield given
        return
    from kvstore.engine import LocalEngine

    with LocalEngine.start() as engine:
        yield engine.endpoint
