"""Fixtures of the fault suite: process spawning with guaranteed teardown, a private PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fault.harness import Brokers
from tests.fault.pg import PrivatePostgres


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    spawned = Brokers(tmp_path)
    try:
        yield spawned
    finally:
        spawned.kill_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
