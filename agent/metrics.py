"""The agent's own `/metrics` (`--metrics-listen HOST:PORT`): its backend, seen from the box.

The relay's metrics show every worker from the relay's side; these show one
agent's backend from the agent's side: how long backend calls take, how many
fail, how many run now, plus the standard `process_*` figures. Served by a
minimal HTTP/1.1 responder on trio (GET /metrics, one response per
connection): the agent has no web framework and needs none for this.

The jobs report through `job_started` / `job_finished`, which find the
process's `AgentMetrics` in a context variable set by `run_with_metrics`
before the agent starts (trio copies the context into every task it spawns);
without it they do nothing, so tests and embedders pay nothing.
"""

from __future__ import annotations

import contextvars
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from mrcommon.meta import distribution_version

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = [
    "AgentMetrics",
    "job_finished",
    "job_started",
    "parse_metrics_listen",
    "run_with_metrics",
    "serve_metrics",
]

log = logging.getLogger("agent.metrics")

_NS = "modelrelay_agent_"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 300, 600)
_MAX_HEAD = 8192
_READ_TIMEOUT = 10.0
# Bounded label values: a backend's model names, but never more than this many.
_MAX_MODELS = 256


def parse_metrics_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9464` or `[::1]:9464` -> (host, port).

    Raises:
        ValueError: not HOST:PORT.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


@attrs.define(eq=False, slots=False)  # instruments are set in __attrs_post_init__
class AgentMetrics:
    """The agent's registry and its instruments."""

    registry: CollectorRegistry = attrs.field(factory=lambda: CollectorRegistry(auto_describe=True))
    models: set[str] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.duration = Histogram(
            _NS + "backend_request_duration_seconds",
            "Time a request spent at the backend (to its last byte), by model.",
            ["model"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.responses = Counter(
            _NS + "requests",
            "Requests this agent answered, by model and status code (499: cancelled).",
            ["model", "code"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            _NS + "backend_errors",
            "Requests the backend failed (unreachable, broken answer or a 5xx), by model.",
            ["model"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            _NS + "in_flight", "Requests running on the backend now.", registry=r
        )
        info = Gauge(_NS + "build_info", "The agent's version.", ["version"], registry=r)
        info.labels(distribution_version()).set(1)
        ProcessCollector(namespace="", registry=r)  # process_cpu_seconds_total, ...

    def model_label(self, model: str) -> str:
        if model in self.models or len(self.models) < _MAX_MODELS:
            self.models.add(model)
            return model
        return "(other)"


_current: contextvars.ContextVar[AgentMetrics | None] = contextvars.ContextVar(
    "modelrelay_agent_metrics", default=None
)


def job_started() -> None:
    """A request began on the backend (agent/jobs.py calls this)."""
    metrics = _current.get()
    if metrics is not None:
        metrics.in_flight.inc()


def job_finished(model: str, status: int | None, error: str | None, seconds: float) -> None:
    """A request ended, however it ended (agent/jobs.py calls this once per request)."""
    metrics = _current.get()
    if metrics is None:
        return
    label = metrics.model_label(model)
    metrics.in_flight.dec()
    metrics.duration.labels(label).observe(seconds)
    metrics.responses.labels(label, str(status or 0)).inc()
    if error is not None or (status or 0) >= 500:
        metrics.errors.labels(label).inc()


async def _answer(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    head = b""
    with trio.move_on_after(_READ_TIMEOUT):
        while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < _MAX_HEAD:
            data = await stream.receive_some(_MAX_HEAD)
            if not data:
                return
            head += data
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2:
        status, body, ctype = b"400 Bad Request", b"bad request\n", b"text/plain"
    elif parts[0] not in (b"GET", b"HEAD"):
        status, body, ctype = b"405 Method Not Allowed", b"GET /metrics\n", b"text/plain"
    elif parts[1].split(b"?", 1)[0] != b"/metrics":
        status, body, ctype = b"404 Not Found", b"GET /metrics\n", b"text/plain"
    else:
        status, body = b"200 OK", generate_latest(registry)
        ctype = CONTENT_TYPE_LATEST.encode()
    response = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )  # fmt: skip
    if parts[:1] != [b"HEAD"]:
        response += body
    with trio.move_on_after(_READ_TIMEOUT):
        await stream.send_all(response)


async def _handle(registry: CollectorRegistry, stream: trio.SocketStream) -> None:
    try:
        await _answer(stream, registry)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper left
    finally:
        await trio.aclose_forcefully(stream)


async def serve_metrics(
    host: str,
    port: int,
    metrics: AgentMetrics,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics` on host:port until cancelled; started with the bound URL."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    url = f"http://{shown}:{sockname[1]}/metrics"
    log.info("metrics listening", extra={"url": url})
    async with trio.open_nursery() as nursery:
        task_status.started(url)
        await trio.serve_listeners(
            partial(_handle, metrics.registry), listeners, handler_nursery=nursery
        )


async def run_with_metrics(config: AgentConfig, run: Any) -> Any:  # noqa: ANN401 - run_agent and its result
    """Run `run(config)` (the agent), with `/metrics` served when `--metrics-listen` is set."""
    if not config.metrics_listen:
        return await run(config)
    metrics = AgentMetrics()
    _current.set(metrics)
    host, port = parse_metrics_listen(config.metrics_listen)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_metrics, host, port, metrics)
        result = await run(config)
        nursery.cancel_scope.cancel()
    return result
