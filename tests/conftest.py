"""Shared fixtures: the fake LLM backend (tests/fake_backend.py) on a real socket, and
process-wide logging state put back after tests that configure it."""

import logging
from collections.abc import Iterator

import pytest
import trio

from tests.fake_backend import FakeBackend


@pytest.fixture
async def fake_backend(nursery: trio.Nursery) -> FakeBackend:
    """A `FakeBackend` serving on 127.0.0.1 (``fake_backend.url``) for the test's duration."""
    backend = FakeBackend()
    await nursery.start(backend.run)
    return backend


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root handlers and every logger's level back after the test.

    Both daemons' `configure_logging` change process-wide state (handlers on
    the root logger, levels on named loggers), which would leak into later tests.
    """
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(params=["direct", "portable"])
def direct_io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with direct socket I/O (Linux) and without it (trio only).

    ``portable`` is the branch every platform without `os.write` on a socket
    takes (`mrcommon.sockio.DIRECT_IO` off); on Linux it would otherwise never run.
    """
    from mrcommon import sockio

    on = request.param == "direct"
    if on and not sockio.DIRECT_IO:
        pytest.skip("no direct socket I/O on this platform")
    monkeypatch.setattr(sockio, "DIRECT_IO", on)
    return on
