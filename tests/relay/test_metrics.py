"""GET /metrics: Prometheus text that parses, per relay, and moves with traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import wire
from relay.core import Relay
from relay.metrics import render
from relay.worker_hub import Ticket
from tests.relay.conftest import make_config
from tests.relay.fake_worker import FakeWorker, connect_worker

if TYPE_CHECKING:
    import httpx

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    with trio.fail_after(10):
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape_samples(relay: Relay) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(render(relay.registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def answer(worker: FakeWorker, count: int) -> None:
    for _ in range(count):
        request = await worker.recv_request()
        await worker.send(
            wire.ResponseComplete(
                request_id=request.request_id,
                status_code=200,
                headers={"content-type": "application/json"},
                body="{}",
                token_counts=wire.TokenCounts(prompt_tokens=7, completion_tokens=11),
            )
        )


async def test_metrics_parse_and_move_with_traffic(relay, nursery) -> None:
    before = await scrape(relay.client)
    assert value(before, "modelrelay_workers_connected") == 0
    assert value(before, "modelrelay_requests_total", model="m1", status_class="2xx") == 0
    assert value(before, "modelrelay_build_info", version=relay.server.relay.version) == 1

    async with connect_worker(relay.ws_url, name="gpu-1") as worker:
        nursery.start_soon(answer, worker, 3)
        with trio.fail_after(10):
            for _ in range(3):
                assert (await relay.client.post("/v1/chat/completions", json=CHAT)).is_success
            await relay.client.post("/v1/chat/completions", json={"model": "nope"})
        after = await scrape(relay.client)

    assert value(after, "modelrelay_requests_total", model="m1", status_class="2xx") == 3
    assert value(after, "modelrelay_tokens_total", model="m1", direction="in") == 21
    assert value(after, "modelrelay_tokens_total", model="m1", direction="out") == 33
    assert value(after, "modelrelay_request_duration_seconds_count", model="m1") == 3
    assert value(after, "modelrelay_request_duration_seconds_bucket", model="m1", le="+Inf") == 3
    assert value(after, "modelrelay_time_to_first_byte_seconds_count", model="m1") == 3
    assert value(after, "modelrelay_request_duration_seconds_sum", model="m1") > 0
    assert value(after, "modelrelay_rejected_requests_total") == 1  # the unknown model
    assert value(after, "modelrelay_workers_connected") == 1
    assert value(after, "modelrelay_workers_registered_total") == 1
    labels = {"worker": "worker-1", "worker_name": "gpu-1"}
    assert value(after, "modelrelay_worker_requests_served_total", **labels) == 3
    assert value(after, "modelrelay_worker_max_concurrent", **labels) == 1
    assert ("modelrelay_worker_in_flight", tuple(sorted(labels.items()))) in after
    assert value(after, "modelrelay_process_open_fds") > 0


async def test_queue_depth_in_flight_and_timeouts(start_memory_relay, autojump_clock) -> None:
    relay = start_memory_relay(queue_timeout=30)
    async with relay.worker() as worker:
        first = relay.start(json_body=CHAT)
        held = await worker.recv_request()  # the worker's one slot is busy
        queued = relay.start(json_body=CHAT)
        await trio.testing.wait_all_tasks_blocked()
        assert len(relay.hub.queue) == 1
        during = _scrape_samples(relay.relay)
        await queued.finished.wait()  # the queued one times out
        assert queued.response().status == 504
        await worker.reply(held, "{}")
        await first.finished.wait()
        assert first.response().status == 200
        after = _scrape_samples(relay.relay)

    assert value(during, "modelrelay_queue_depth", model="m1") == 1
    assert value(during, "modelrelay_in_flight", model="m1") == 1
    assert value(during, "modelrelay_worker_in_flight", worker="worker-1", worker_name="fake") == 1
    assert value(after, "modelrelay_queue_depth", model="m1") == 0
    assert value(after, "modelrelay_relay_errors_total", model="m1", cause="timeout") == 1
    assert value(after, "modelrelay_requests_total", model="m1", status_class="5xx") == 1
    assert value(after, "modelrelay_requests_total", model="m1", status_class="2xx") == 1


async def test_a_client_that_leaves_counts_as_cancelled(memory_relay) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=CHAT)
        with trio.fail_after(5):
            await worker.recv_request()  # on the worker, never answered
            exchange.hang_up()
            await worker.recv_cancel()
            await exchange.finished.wait()
        samples = _scrape_samples(memory_relay.relay)
    assert value(samples, "modelrelay_requests_total", model="m1", status_class="cancelled") == 1
    assert value(samples, "modelrelay_in_flight", model="m1") == 0


async def test_each_relay_has_its_own_registry(start_relay) -> None:
    one = await start_relay()
    two = await start_relay()
    with trio.fail_after(10):
        await one.client.post("/v1/chat/completions", content=b"{bad")
    first, second = await scrape(one.client), await scrape(two.client)
    assert value(first, "modelrelay_rejected_requests_total") == 1
    assert value(second, "modelrelay_rejected_requests_total") == 0


async def test_key_metrics_never_show_secrets(start_relay) -> None:
    relay = await start_relay(admin_token="t", require_api_keys=True)
    auth = {"authorization": "Bearer t"}
    with trio.fail_after(10):
        created = (await relay.client.post("/admin/keys", json={"name": "n"}, headers=auth)).json()
        await relay.client.post(
            "/v1/chat/completions",
            json={"model": "none"},
            headers={"authorization": f"Bearer {created['key']}"},
        )
        text = (await relay.client.get("/metrics")).text
    assert created["key"] not in text
    samples = await scrape(relay.client)
    assert value(samples, "modelrelay_api_keys", state="active") == 1
    assert (
        value(samples, "modelrelay_key_requests_total", key_id=created["id"], status_class="4xx")
        == 1
    )


async def test_scrape_grows_with_models_not_with_requests(tmp_path) -> None:
    """Twenty models, a thousand requests and a queue of a hundred: a scrape's
    size is set by the models and buckets, never by the traffic.

    Counted in series, not timed (a scrape costs about 1 ms per model here,
    docs in relay/metrics.py; the series count is what that cost follows).
    """

    def traffic(relay: Relay, per_model: int) -> None:
        for m in range(20):
            model = f"model-{m}"
            for i in range(per_model):
                relay.stats.started(model, None)
                relay.stats.finished(model, None, status=200, duration=i / 10, ttfb=i / 100)

    light = Relay.from_config(make_config(tmp_path))
    traffic(light, 1)
    heavy = Relay.from_config(make_config(tmp_path))
    traffic(heavy, 50)
    for i in range(100):
        heavy.stats.started("model-0", None)
        heavy.hub.queue.push(Ticket(request_id=f"r{i}", model="model-0", arrival=0.0))
    light_samples, heavy_samples = _scrape_samples(light), _scrape_samples(heavy)
    assert value(heavy_samples, "modelrelay_queue_depth", model="model-0") == 100
    assert (
        value(heavy_samples, "modelrelay_requests_total", model="model-3", status_class="2xx") == 50
    )
    assert heavy_samples.keys() == light_samples.keys()
    per_model = [key for key in heavy_samples if ("model", "model-7") in key[1]]
    assert len(per_model) < 100  # the histograms' exported buckets dominate
