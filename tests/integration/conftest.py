"""Fixtures: a fake backend in this process, relay and agent as real processes.

Every test runs once per relay front (`--http-front builtin` and
`hypercorn`), except those marked ``one_front``: what they check does not
go through the HTTP front, and they are the slow ones.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest

from tests.fake_backend import FakeBackend
from tests.integration import procs
from tests.integration.procs import HTTP_FRONTS, Proc, agent_process, relay_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    import trio


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "one_front: run on the builtin front only (the front is not what it checks)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "http_front" in metafunc.fixturenames:
        one = metafunc.definition.get_closest_marker("one_front") is not None
        metafunc.parametrize("http_front", HTTP_FRONTS[:1] if one else HTTP_FRONTS, indirect=True)


@pytest.fixture(autouse=True)
def http_front(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The `--http-front` of every relay process this test starts."""
    front: str = request.param
    monkeypatch.setattr(procs, "HTTP_FRONT", front)
    return front


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


OpenStack = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def open_stack(backend: FakeBackend) -> OpenStack:
    """``open_stack(*relay_args, agent_args=...)``: a relay and an agent in front of
    `backend`, and a client of the relay, for the block (flags of the test's own)."""

    @asynccontextmanager
    async def open_(
        *relay_args: str, agent_args: Sequence[str] = ("--max-concurrency", "4")
    ) -> AsyncIterator[Stack]:
        async with (
            relay_process(*relay_args) as (relay, url),
            agent_process(relay, backend.url, *agent_args) as agent,
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            yield Stack(relay, url, client, backend, agent)

    return open_


@pytest.fixture
async def stack(open_stack: OpenStack) -> AsyncIterator[Stack]:
    async with open_stack() as opened:
        yield opened
