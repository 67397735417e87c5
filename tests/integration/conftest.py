"""Fixtures: a fake backend in this process, relay and agent as real processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import httpx
import pytest

from tests.fake_backend import FakeBackend
from tests.integration.procs import Proc, agent_process, relay_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import trio


@attrs.define
class Stack:
    relay: Proc
    url: str
    client: httpx.AsyncClient
    backend: FakeBackend
    agent: Proc


@pytest.fixture
async def backend(nursery: trio.Nursery) -> FakeBackend:
    fake = FakeBackend(models=["fake-model"])
    await nursery.start(fake.run)
    return fake


@pytest.fixture
async def stack(backend: FakeBackend) -> AsyncIterator[Stack]:
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--max-concurrency", "4") as agent,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        yield Stack(relay, url, client, backend, agent)
