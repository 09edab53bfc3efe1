"""Fixtures of the harness's own tests: an engine (given, or started for the session)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from benchmarks.engine import endpoint_or_local


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """``AWS_DYNAMODB_ENDPOINT`` if set, else a DynamoDB Local started for the session."""
    with endpoint_or_local(os.environ.get("AWS_DYNAMODB_ENDPOINT")) as url:
        yield url
