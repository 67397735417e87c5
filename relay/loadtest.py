"""`relay loadtest`: point many concurrent chat requests at a relay and measure them.

An operator's tool, not a benchmark harness: it talks to any relay (or any
OpenAI-compatible endpoint) over http or https, as a client would, and
reports what clients would see: latency and time-to-first-token percentiles,
tokens per second, and errors by class. A live progress line goes to stderr;
the report to stdout (text, or one JSON object with `--json`).

Concurrency is `-c` trio tasks, each sending one request at a time until `-n`
requests have started or `--duration` seconds have passed. Every request has
its own timeout; nothing is retried.
"""

from __future__ import annotations

import json
import math
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "LoadTest",
    "Outcome",
    "Report",
    "percentile",
    "progress_printer",
    "render_text",
    "run_loadtest",
]

PERCENTILES = (50, 90, 95, 99)


@attrs.frozen
class LoadTest:
    """What to send, where, how often."""

    url: str
    model: str
    requests: int | None = 100
    concurrency: int = 8
    stream: bool = False
    duration: float | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    prompt: str = "Say hello in one short sentence."
    max_tokens: int = 64
    timeout: float = 120.0
    verify: bool | str = True  # False, True, or a CA bundle path


@attrs.frozen
class Outcome:
    """One request: its latency, first-token time and tokens, or its error class."""

    latency: float
    ttft: float | None = None
    tokens: int = 0
    error: str | None = None


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted `values` (non-empty)."""
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


@attrs.define
class Report:
    """Everything measured so far; `summary()` turns it into the report."""

    config: LoadTest
    outcomes: list[Outcome] = attrs.field(factory=list)
    started: float = attrs.field(factory=time.monotonic)
    finished: float | None = None

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (percentiles in milliseconds).

        Percentile fields are None when no request succeeded: a latency of
        failures would describe error paths, not the relay.
        """
        ok = [o for o in self.outcomes if o.error is None]
        errors: dict[str, int] = {}
        for o in self.outcomes:
            if o.error is not None:
                errors[o.error] = errors.get(o.error, 0) + 1
        elapsed = max(self.elapsed, 1e-9)
        tokens = sum(o.tokens for o in ok)

        def pcts(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            values.sort()
            doc = {f"p{p}": round(percentile(values, p) * 1000, 2) for p in PERCENTILES}
            doc["max"] = round(values[-1] * 1000, 2)
            return doc

        return {
            "url": self.config.url,
            "model": self.config.model,
            "stream": self.config.stream,
            "concurrency": self.config.concurrency,
            "requests": len(self.outcomes),
            "succeeded": len(ok),
            "failed": len(self.outcomes) - len(ok),
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(len(self.outcomes) / elapsed, 2),
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 2),
            "latency_ms": pcts([o.latency for o in ok]),
            "ttft_ms": pcts([o.ttft for o in ok if o.ttft is not None]),
            "errors": dict(sorted(errors.items())),
        }

    def progress_line(self) -> str:
        done = len(self.outcomes)
        failed = sum(o.error is not None for o in self.outcomes)
        total = self.config.requests
        of = f"/{total}" if total is not None and self.config.duration is None else ""
        rate = done / max(self.elapsed, 1e-9)
        return f"{done}{of} done, {failed} failed, {self.elapsed:.1f} s, {rate:.1f} req/s"


def _is_tls(exc: BaseException) -> bool:
    """Whether a TLS failure (certificate, handshake) is anywhere in `exc`'s chain."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(item):
            return True
        stack += [item.__cause__, item.__context__]
        if isinstance(item, BaseExceptionGroup):
            stack += list(item.exceptions)
    return False


def _error_class(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "tls_error" if _is_tls(exc) else "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection_lost"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return f"client_error:{type(exc).__name__}"


def _body(config: LoadTest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [{"role": "user", "content": config.prompt}],
        "max_tokens": config.max_tokens,
        "stream": config.stream,
    }
    if config.stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _one(client: httpx.AsyncClient, config: LoadTest) -> Outcome:
    start = time.monotonic()
    ttft: float | None = None
    try:
        with trio.fail_after(config.timeout):
            async with client.stream("POST", "/v1/chat/completions", json=_body(config)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    return Outcome(time.monotonic() - start, error=f"http_{resp.status_code}")
                if not config.stream:
                    data = await resp.aread()
                    latency = time.monotonic() - start
                    try:
                        usage = json.loads(data).get("usage") or {}
                    except ValueError:
                        return Outcome(latency, error="bad_response")
                    return Outcome(latency, latency, int(usage.get("completion_tokens") or 0))
                pieces = 0
                usage_tokens: int | None = None
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # event names, keepalive comments, blank lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        return Outcome(time.monotonic() - start, error="bad_stream")
                    if "error" in event:
                        return Outcome(time.monotonic() - start, error="stream_error")
                    for choice in event.get("choices") or ():
                        if (choice.get("delta") or {}).get("content"):
                            pieces += 1
                            if ttft is None:
                                ttft = time.monotonic() - start
                    if event.get("usage"):
                        usage_tokens = event["usage"].get("completion_tokens")
                latency = time.monotonic() - start
                return Outcome(latency, ttft, usage_tokens if usage_tokens is not None else pieces)
    except trio.TooSlowError:
        return Outcome(time.monotonic() - start, error="timeout")
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return Outcome(time.monotonic() - start, error=_error_class(exc))


async def run_loadtest(
    config: LoadTest, *, on_progress: Callable[[Report], None] | None = None
) -> Report:
    """Run the load test to its end; returns the report (also when every request failed)."""
    headers = {"user-agent": "modelrelay-loadtest"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    verify: bool | ssl.SSLContext = (
        config.verify
        if isinstance(config.verify, bool)
        else (ssl.create_default_context(cafile=config.verify))
    )
    limits = httpx.Limits(
        max_connections=config.concurrency, max_keepalive_connections=config.concurrency
    )
    report = Report(config)
    remaining = config.requests
    async with httpx.AsyncClient(
        base_url=config.url.rstrip("/"),
        headers=headers,
        verify=verify,
        limits=limits,
        timeout=httpx.Timeout(config.timeout, connect=min(10.0, config.timeout)),
    ) as client:

        async def worker() -> None:
            nonlocal remaining
            while True:
                if remaining is not None:
                    if remaining <= 0:
                        return
                    remaining -= 1
                report.add(await _one(client, config))

        async def progress() -> None:
            while True:
                await trio.sleep(0.5)
                if on_progress is not None:
                    on_progress(report)

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(config.duration if config.duration else math.inf):
                async with trio.open_nursery() as workers:
                    for _ in range(config.concurrency):
                        workers.start_soon(worker)
                    nursery.start_soon(progress)
            nursery.cancel_scope.cancel()
    report.finished = time.monotonic()
    if on_progress is not None:
        on_progress(report)
    return report


def render_text(summary: dict[str, Any]) -> str:
    """The human report (the caller has checked that something succeeded)."""
    mode = "streamed" if summary["stream"] else "not streamed"
    lines = [
        f"{summary['requests']} requests to {summary['url']} (model {summary['model']}, "
        f"{mode}, concurrency {summary['concurrency']})",
        f"  succeeded {summary['succeeded']}, failed {summary['failed']}, "
        f"in {summary['elapsed_s']} s ({summary['requests_per_s']} req/s)",
        f"  tokens: {summary['completion_tokens']} completion tokens, "
        f"{summary['tokens_per_s']} tokens/s",
    ]
    for name, label in (("latency_ms", "latency"), ("ttft_ms", "first token")):
        values = summary[name]
        if values:
            cells = "  ".join(f"{k} {v:.1f}" for k, v in values.items())
            lines.append(f"  {label} (ms): {cells}")
    if summary["errors"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in summary["errors"].items()))
    return "\n".join(lines)


def progress_printer(stream: Any = None) -> Callable[[Report], None]:  # noqa: ANN401 - a text stream
    """A live progress line: rewritten in place on a terminal, one line every 5 s otherwise."""
    out = stream or sys.stderr
    tty = out.isatty()
    last = [0.0]

    def show(report: Report) -> None:
        if tty:
            out.write("\r\x1b[K" + report.progress_line())
            if report.finished is not None:
                out.write("\n")
        elif report.finished is not None or report.elapsed - last[0] >= 5:
            last[0] = report.elapsed
            out.write(report.progress_line() + "\n")
        out.flush()

    return show
