"""The worker endpoint: auth before upgrade, registration, hostile frames."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

import wire
from tests.relay.fake_worker import connect_worker

if TYPE_CHECKING:
    from tests.relay.conftest import RunningRelay

CHAT = {"model": "m1", "messages": []}


@pytest.fixture
def relay(any_front_relay: RunningRelay) -> RunningRelay:
    """Every test here runs on both fronts (the worker socket is framed by each)."""
    return any_front_relay


async def _rejected(url: str, secret: str | None) -> ConnectionRejected:
    headers = [] if secret is None else [(b"x-worker-secret", secret.encode())]
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return info.value


async def test_bad_or_missing_secret_is_401(relay) -> None:
    assert (await _rejected(relay.ws_url, "wrong")).status_code == 401
    assert (await _rejected(relay.ws_url, None)).status_code == 401


async def test_unknown_provider_is_404(relay) -> None:
    rejected = await _rejected(relay.ws_url + "?provider=elsewhere", "test-secret")
    assert rejected.status_code == 404


async def test_legacy_query_secret_accepted(relay) -> None:
    async with open_websocket_url(relay.ws_url + "?worker_secret=test-secret") as ws:
        await ws.send_message(
            wire.encode(wire.Register(worker_name="legacy", models=("m1",), max_concurrent=1))
        )
        ack = wire.decode_relay_frame(await ws.get_message())
    assert isinstance(ack, wire.RegisterAck)
    assert ack.protocol_version is None  # echoes the agent's (none)


async def test_repeated_failures_rate_limited_but_right_secret_still_works(relay) -> None:
    for _ in range(10):
        assert (await _rejected(relay.ws_url, "wrong")).status_code == 401
    limited = await _rejected(relay.ws_url, "wrong")
    assert limited.status_code == 429
    retry_after = dict(limited.headers)[b"retry-after"]
    assert 1 <= int(retry_after) <= 60
    async with connect_worker(relay.ws_url) as worker:
        assert worker.ack is not None


async def test_registration_sanitises_models(relay) -> None:
    async with connect_worker(
        relay.ws_url, models=[" a ", "", "b", "a", "  "], max_concurrent=0, name="  "
    ) as worker:
        ack = worker.ack
        state = relay.hub.workers[ack.worker_id]
    assert ack.models == ("a", "b")
    assert ack.protocol_version == wire.PROTOCOL_VERSION
    assert any("duplicate" in w for w in ack.warnings)
    assert any("empty" in w for w in ack.warnings)
    assert any("worker_name was empty" in w for w in ack.warnings)
    assert state.max_concurrent == 1


async def test_capabilities_are_echoed_only_when_announced(relay) -> None:
    async with connect_worker(relay.ws_url, capabilities=("drain", "future-thing")) as ours:
        assert ours.ack.capabilities == ("drain",)
    async with connect_worker(relay.ws_url) as upstream_like:
        assert upstream_like.ack.capabilities is None


async def _read_until_closed(ws) -> None:  # type: ignore[no-untyped-def]
    while True:
        await ws.get_message()


async def _close_reason(ws) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionClosed) as info:
        await _read_until_closed(ws)
    return info.value.reason.code, info.value.reason.reason or ""


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("not json", "JSON"),
        ('{"type":"teleport"}', "teleport"),
        ('{"type":"response_chunk","request_id":"x"}', "chunk"),
        ('{"type":"pong","current_load":"1"}', "current_load"),
        (b"\x00binary", "binary"),
    ],
)
async def test_protocol_error_closes_1002_naming_the_problem(relay, frame, expected) -> None:
    async with connect_worker(relay.ws_url) as worker:
        await worker.send_raw(frame)
        with trio.fail_after(5):
            code, reason = await _close_reason(worker.ws)
    assert code == 1002
    assert expected in reason
    assert relay.hub.stats.protocol_errors == 1
    assert not relay.hub.workers


async def test_second_register_is_a_protocol_error(relay) -> None:
    async with connect_worker(relay.ws_url) as worker:
        await worker.send(wire.Register(worker_name="again", models=("m1",), max_concurrent=1))
        with trio.fail_after(5):
            code, reason = await _close_reason(worker.ws)
    assert code == 1002
    assert "register" in reason.lower()


async def test_version_mismatch_closes_1002_naming_both(relay) -> None:
    async with open_websocket_url(
        relay.ws_url, extra_headers=[(b"x-worker-secret", b"test-secret")]
    ) as ws:
        await ws.send_message(
            wire.encode(
                wire.Register(
                    worker_name="w", models=("m1",), max_concurrent=1, protocol_version="1999-v0"
                )
            )
        )
        with trio.fail_after(5):
            code, reason = await _close_reason(ws)
    assert code == 1002
    assert "1999-v0" in reason
    assert wire.PROTOCOL_VERSION in reason


async def test_protocol_error_requeues_the_workers_requests(relay, nursery) -> None:
    async with connect_worker(relay.ws_url, name="hostile") as hostile:

        async def misbehave() -> None:
            await hostile.recv_request()
            await hostile.send_raw("{garbage")

        async def rescue() -> None:
            async with connect_worker(relay.ws_url, name="good") as good:
                await good.reply(await good.recv_request(), '{"rescued":true}')

        nursery.start_soon(misbehave)
        nursery.start_soon(rescue)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.json() == {"rescued": True}


async def test_frame_over_max_frame_bytes_closes_only_that_worker(start_relay) -> None:
    relay = await start_relay(max_frame_bytes=4096)
    async with connect_worker(relay.ws_url, models=["other"]) as bystander:
        async with connect_worker(relay.ws_url) as big:
            await big.send(wire.ResponseChunk(request_id="x", chunk="y" * 10_000))
            with trio.fail_after(5):
                code, _ = await _close_reason(big.ws)
        assert code == 1009
        assert list(relay.hub.workers) == [bystander.ack.worker_id]


async def test_silent_worker_is_dropped_after_heartbeat_timeout(start_relay, nursery) -> None:
    relay = await start_relay(heartbeat_interval=0.05, heartbeat_timeout=0.3)
    async with open_websocket_url(
        relay.ws_url, extra_headers=[(b"x-worker-secret", b"test-secret")]
    ) as ws:
        await ws.send_message(
            wire.encode(wire.Register(worker_name="frozen", models=("m1",), max_concurrent=1))
        )
        # Read (so the socket stays healthy) but never answer a ping.
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            await _read_until_closed(ws)
    assert info.value.reason.code == 1001
    assert relay.hub.stats.heartbeat_timeouts == 1


async def test_answered_pings_keep_worker_alive(start_relay) -> None:
    """A worker that answers every ping outlives several heartbeat timeouts.

    Measured by the relay's own ping stamps, not by a window on the test's clock.
    """
    relay = await start_relay(heartbeat_interval=0.05, heartbeat_timeout=0.3)
    async with connect_worker(relay.ws_url) as worker:
        stamps: list[int] = []
        with trio.fail_after(10):
            while not stamps or stamps[-1] - stamps[0] < 3 * 300:
                message = wire.decode_relay_frame(await worker.ws.get_message())
                assert isinstance(message, wire.Ping), message
                stamps.append(message.timestamp_unix_ms)
                await worker.send(
                    wire.Pong(current_load=0, timestamp_unix_ms=message.timestamp_unix_ms)
                )
        assert worker.ack.worker_id in relay.hub.workers


async def test_error_frame_for_a_request_becomes_502(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.send(
                wire.Error(request_id=request.request_id, code="boom", message="backend fell over")
            )

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert "backend fell over" in response.json()["error"]["message"]


async def test_models_update_routes_at_once_and_draining_stops_routing(relay, nursery) -> None:
    async with connect_worker(relay.ws_url, models=["old"], capabilities=("drain",)) as worker:
        await worker.send(wire.ModelsUpdate(models=("new",), current_load=0))

        async def serve() -> None:
            await worker.reply(await worker.recv_request(), '{"n":1}')

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json={"model": "new"})
        assert response.json() == {"n": 1}
        await worker.send(wire.ModelsUpdate(models=("new",), current_load=0, draining=True))
        async with connect_worker(relay.ws_url, models=["x"]):
            pass  # round trip: the update was read
        state = relay.hub.workers[worker.ack.worker_id]
        assert state.draining
        models = (await relay.client.get("/v1/models")).json()["data"]
        assert [m["id"] for m in models] == ["new"]
