"""The agent thread and its bridge, without Qt: a real relay, the fake backend, real events.

Events arrive on the agent thread; the test collects them in a thread-safe
list and waits on a condition for the one it needs.
"""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.desktop.runner import AgentRunner, Finished, LogBuffer, Paused, RunnerEvent
from agent.events import Connected, Connecting, LoadChanged, ModelsChanged, Stopped
from tests.agent.desktop.conftest import SECRET, WAIT, ChatRequest, Child


class Events:
    """Everything the runner reported, in order."""

    def __init__(self) -> None:
        self.items: list[RunnerEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: RunnerEvent) -> None:  # called on the agent thread
        with self._changed:
            self.items.append(event)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[RunnerEvent], bool], after: int = 0) -> int:
        """Index of the first event from `after` on that `predicate` accepts."""
        with self._changed:
            found: list[int] = []

            def ready() -> bool:
                found[:] = [i for i in range(after, len(self.items)) if predicate(self.items[i])]
                return bool(found)

            assert self._changed.wait_for(ready, WAIT), self.items
            return found[0]


@pytest.fixture
def backend() -> Iterator[Child]:
    child = Child(["-m", "tests.fake_backend", "--models", "m1"])
    try:
        yield child
    finally:
        child.stop()


def test_runner_reports_pauses_and_quits(relay, backend: Child, tmp_path: Path) -> None:
    _relay, relay_url = relay
    backend_url = backend.wait_stdout("FAKE_BACKEND_URL=")
    config = AgentConfig.create(
        worker_secret=SECRET,
        proxy_url=relay_url,
        backend_url=backend_url,
        models_poll_interval=0.2,
        drain_timeout=10,
    )
    events = Events()
    runner = AgentRunner(config, events)
    runner.start()
    try:
        i = events.wait(lambda e: isinstance(e, Connected))
        assert any(isinstance(e, Connecting) for e in events.items[:i])
        events.wait(lambda e: isinstance(e, ModelsChanged) and e.models == ("m1",))
        request = ChatRequest(relay_url, {"chunks": 4, "delay": 0.2})
        request.start()
        i = events.wait(lambda e: e == LoadChanged(1), i)
        i = events.wait(lambda e: e == LoadChanged(0), i)
        request.join(WAIT)
        assert request.status == 200
        # The backend goes away: discovery says so (the tray turns red).
        backend.stop()
        i = events.wait(lambda e: isinstance(e, ModelsChanged) and not e.backend_reachable, i)
        # Pause: the agent drains and stops, then waits; resume connects again.
        runner.pause()
        i = events.wait(lambda e: isinstance(e, Paused), i)
        assert any(isinstance(e, Stopped) for e in events.items[:i])
        runner.resume()
        i = events.wait(lambda e: isinstance(e, Connected), i)
        runner.quit()
        events.wait(lambda e: isinstance(e, Finished), i)
        assert runner.join(WAIT)
    finally:
        runner.quit()
        runner.join(WAIT)


def test_log_buffer_is_bounded_and_keeps_problems() -> None:
    import logging

    buffer = LogBuffer(capacity=3)
    seen: list[str] = []
    buffer.on_line = seen.append
    logger = logging.getLogger("test.desktop.buffer")
    logger.addHandler(buffer)
    logger.setLevel(logging.INFO)
    try:
        for n in range(5):
            logger.info("line %d", n)
        logger.warning("trouble")
    finally:
        logger.removeHandler(buffer)
    assert [line.split(" ", 3)[-1] for line in buffer.lines] == ["line 3", "line 4", "trouble"]
    assert len(seen) == 6
    assert len(buffer.problems) == 1
