"""Relay shutdown and slow clients."""

from __future__ import annotations

import trio
import trio.testing

import wire
from tests.relay.fake_worker import connect_worker

CHAT = {"model": "m1", "messages": []}


async def test_drain_finishes_in_flight_refuses_new_and_tells_workers(start_relay, nursery) -> None:
    relay = await start_relay(drain_timeout=10)
    stopped = trio.Event()

    async with connect_worker(relay.ws_url) as worker:
        results = {}

        async def in_flight() -> None:
            results["in_flight"] = await relay.client.post("/v1/chat/completions", json=CHAT)

        nursery.start_soon(in_flight)
        with trio.fail_after(5):
            request = await worker.recv_request()

        async def drain() -> None:
            await relay.server.drain()
            stopped.set()

        nursery.start_soon(drain)
        with trio.fail_after(5):
            shutdown = await worker.recv()
        assert isinstance(shutdown, wire.GracefulShutdown)
        assert shutdown.drain_timeout_secs == 10
        refused = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        health = await relay.client.get("/health")
        # 503 at once, while the in-flight request still runs: a balancer
        # stops sending new work before the listener closes.
        assert health.status_code == 503
        assert health.json()["status"] == "draining"
        assert not stopped.is_set()
        await worker.reply(request, '{"finished":true}')
        with trio.fail_after(5):
            await stopped.wait()
    assert results["in_flight"].json() == {"finished": True}


async def test_drain_timeout_cancels_with_server_shutdown(start_relay, nursery) -> None:
    relay = await start_relay(drain_timeout=0.2)
    async with connect_worker(relay.ws_url) as worker:
        results = {}

        async def in_flight() -> None:
            results["r"] = await relay.client.post("/v1/chat/completions", json=CHAT)

        with trio.fail_after(5):
            async with trio.open_nursery() as n:
                n.start_soon(in_flight)
                await worker.recv_request()
                nursery.start_soon(relay.server.drain)
                assert isinstance(await worker.recv(), wire.GracefulShutdown)
                cancel = await worker.recv_cancel()
                await worker.send(
                    wire.ResponseComplete(request_id=cancel.request_id, status_code=499)
                )
    assert cancel.reason == wire.CancelReason.SERVER_SHUTDOWN
    assert results["r"].status_code == 503


async def test_slow_client_is_cut_off_without_stalling_others(start_relay, nursery) -> None:
    relay = await start_relay(client_buffer_bytes=256 * 1024)
    chunk = "data: " + "x" * 65536 + "\n\n"
    cut_off = trio.Event()
    async with connect_worker(relay.ws_url, max_concurrent=2) as worker:

        async def flood() -> None:
            request = await worker.recv_request()
            # Far more than the socket buffers and the bound can hold.
            for _ in range(400):
                await worker.send(wire.ResponseChunk(request_id=request.request_id, chunk=chunk))
            cancel = await worker.recv_cancel()
            assert cancel.request_id == request.request_id
            assert isinstance(cancel.reason, wire.OtherReason)
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=499))
            cut_off.set()
            # The worker is still in business for everyone else.
            other = await worker.recv_request()
            await worker.reply(other, '{"other":"fine"}')

        nursery.start_soon(flood)
        with trio.fail_after(20):
            async with relay.client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as stalled:
                assert stalled.status_code == 200
                # Never read: wait until the relay gives up on us.
                await cut_off.wait()
                await trio.testing.wait_all_tasks_blocked()  # the 499 was read
                assert relay.hub.workers[worker.ack.worker_id].in_flight == 0
                response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.json() == {"other": "fine"}


async def test_drain_grace_answers_health_503_and_still_serves(start_relay, nursery) -> None:
    """--drain-grace: the balancer sees 503 at once, clients are still served,
    and only then does the drain proper begin (workers told, new work refused)."""
    relay = await start_relay(drain_grace=3, drain_timeout=5)
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(relay.server.drain)
        with trio.fail_after(10):
            await trio.testing.wait_all_tasks_blocked()
            health = await relay.client.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "draining"

            async def answer() -> None:
                await worker.reply(await worker.recv_request(), '{"served":"in the grace"}')

            nursery.start_soon(answer)
            served = await relay.client.post("/v1/chat/completions", json=CHAT)
            assert served.json() == {"served": "in the grace"}
            # The grace over, the drain proper: the worker is told, the hub
            # refuses new work (and, nothing being in flight, the relay stops).
            shutdown = await worker.recv()
            assert isinstance(shutdown, wire.GracefulShutdown)
            assert relay.hub.draining
