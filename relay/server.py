"""`RelayServer`: the root nursery of a relay process.

It builds the state (`Relay`), serves it (`relay.front`, or
`relay.front.hypercorn` with ``--http-front hypercorn``) inside its own nursery, and shuts down by
deadline: stop routing (new requests get 503), tell workers, wait for
in-flight work until `drain_timeout`, cancel what is left with reason
`server_shutdown`, then stop the listener.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import TYPE_CHECKING, cast

import attrs
import hypercorn.config
import trio

import wire
from mrcommon.limits import raise_open_file_limit
from relay import front
from relay.announce import announce_settings
from relay.app import create_app
from relay.core import Relay
from relay.front import hypercorn as hypercorn_front
from relay.proxies import ClientApp, install_client_log_filter

if TYPE_CHECKING:
    from relay.app import RelayApp
    from relay.config import RelayConfig

__all__ = ["RelayServer", "run_relay"]

log = logging.getLogger("relay.server")


def _hypercorn_config(config: RelayConfig) -> hypercorn.config.Config:
    cfg = hypercorn.config.Config()
    cfg.bind = [config.listen]
    cfg.accesslog = None  # the relay logs one line per request itself
    cfg.loglevel = "WARNING"  # Hypercorn's "Running on ..." at INFO (trap 7)
    cfg.websocket_max_message_size = config.max_frame_bytes
    cfg.graceful_timeout = 2.0  # the relay drains before it stops Hypercorn (trap 4)
    cfg.keep_alive_timeout = config.keep_alive_timeout
    cfg.websocket_ping_interval = None  # liveness is the protocol's heartbeat
    return cfg


@attrs.define(eq=False)
class RelayServer:
    """Owns the relay's services; `run()` until drained or cancelled."""

    config: RelayConfig
    relay: Relay = attrs.field(init=False)
    url: str = ""
    _stop_http: trio.Event = attrs.field(factory=trio.Event)
    _nursery: trio.Nursery | None = None
    _services: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def __attrs_post_init__(self) -> None:
        self.relay = Relay.from_config(self.config)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `drain()` finishes; `task_status.started(url)` once listening."""
        files = raise_open_file_limit()
        # The real client (--trusted-proxies) and its user agent, for every route and log.
        app = cast("RelayApp", ClientApp(create_app(self.relay), self.config.trusted_proxies))
        install_client_log_filter()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._run_services)
            serve = front.serve if self.config.http_front == "builtin" else hypercorn_front.serve
            urls = await nursery.start(
                partial(
                    serve,
                    app,
                    _hypercorn_config(self.config),
                    shutdown_trigger=self._stop_http.wait,
                )
            )
            self.url = urls[0]
            log.info(
                "relay listening",
                extra={
                    "url": self.url,
                    "worker_url": self.url.replace("http", "ws", 1) + "/v1/worker/connect",
                    "provider": self.config.provider,
                    "http_front": self.config.http_front,
                    "open_files_limit": files,
                },
            )
            announce_settings(self.config)
            task_status.started(self.url)

    async def _run_services(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The relay's background services (key store); stopped at the end of the drain."""
        with self._services:
            await self.relay.run_services(task_status=task_status)

    def start_drain(self) -> None:
        if self._nursery is not None and not self.relay.hub.draining:
            self._nursery.start_soon(self.drain)

    async def drain(self) -> None:
        """Graceful shutdown, bounded by `drain_timeout`."""
        relay = self.relay
        timeout = self.config.drain_timeout
        log.info(
            "relay draining",
            extra={"in_flight": len(relay.inflight), "drain_timeout_s": timeout},
        )
        relay.hub.begin_drain(timeout)
        with trio.move_on_after(timeout) as waited:
            await relay.inflight.wait_idle()
        if waited.cancelled_caught:
            log.warning(
                "drain timeout: cancelling what is still in flight",
                extra={"in_flight": len(relay.inflight)},
            )
            relay.inflight.cancel_all(wire.CancelReason.SERVER_SHUTDOWN)
            with trio.move_on_after(2):
                await relay.inflight.wait_idle()
        log.info("relay stopped")
        self._stop_http.set()
        self._services.cancel()


async def run_relay(config: RelayConfig) -> int:
    """Run a relay until a signal: the first drains, a second exits at once.

    Returns:
        The process exit code: 0, also when a second signal cut the drain
        short (the operator asked it to stop; a non-zero code would make a
        `Restart=on-failure` unit start it again), like the agent.
    """
    server = RelayServer(config)
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if not server.relay.hub.draining:
                        log.info(
                            "signal received: draining",
                            extra={"signal": signal.Signals(signum).name},
                        )
                        server.start_drain()
                    else:
                        log.warning(
                            "second signal: exiting now",
                            extra={"signal": signal.Signals(signum).name},
                        )
                        nursery.cancel_scope.cancel()

        nursery.start_soon(on_signals)
        await server.run()
        nursery.cancel_scope.cancel()
    return 0
