"""The FakeBackend itself: shapes, directives, disconnect detection, process mode."""

import json
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.fake_backend import FakeBackend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


async def test_shapes(fake_backend: FakeBackend, client: httpx.AsyncClient) -> None:
    url = fake_backend.url
    with trio.fail_after(10):
        models = (await client.get(f"{url}/v1/models")).json()
        chat = (
            await client.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": []})
        ).json()
        emb = (
            await client.post(f"{url}/v1/embeddings", json={"model": "m", "input": ["a", "b"]})
        ).json()
        count = (
            await client.post(
                f"{url}/v1/messages/count_tokens",
                json={"model": "m", "messages": [{"content": "a b c"}]},
            )
        ).json()
        health = await client.get(f"{url}/health")
        bad = await client.post(f"{url}/v1/chat/completions", content=b"not json")
        tags = await client.get(f"{url}/api/tags")
    assert [m["id"] for m in models["data"]] == ["fake-model"]
    assert chat["model"] == "m"
    assert chat["usage"]["completion_tokens"] == 3
    assert len(emb["data"]) == 2
    assert "usage" in emb
    assert count == {"input_tokens": 3}
    assert health.status_code == 200
    assert bad.status_code == 400
    assert tags.status_code == 404
    assert [r.path for r in fake_backend.requests][:2] == ["/v1/models", "/v1/chat/completions"]


async def test_openai_only_and_ollama_modes(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    backend = FakeBackend(models=["q"], anthropic=False, ollama=True)
    url = await nursery.start(backend.run)
    with trio.fail_after(10):
        messages = await client.post(f"{url}/v1/messages", json={"model": "q"})
        models = await client.get(f"{url}/v1/models")
        tags = (await client.get(f"{url}/api/tags")).json()
    assert messages.status_code == 404
    assert models.status_code == 404
    assert [t["name"] for t in tags["models"]] == ["q"]


async def test_client_leaving_a_stall_is_recorded(
    fake_backend: FakeBackend, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        async with client.stream(
            "POST",
            f"{fake_backend.url}/v1/chat/completions",
            json={"stream": True, "fake": {"stall_after": 1}},
        ) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
        record = fake_backend.requests[-1]
        await record.done.wait()
    assert record.disconnected_at is not None
    assert record.finished_at is None


async def test_complete_response_is_recorded_as_finished(
    fake_backend: FakeBackend, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        response = await client.post(
            f"{fake_backend.url}/v1/messages", json={"stream": True, "fake": {"chunks": 2}}
        )
        record = fake_backend.requests[-1]
        await record.done.wait()
    assert record.finished_at is not None
    assert record.disconnected_at is None
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_crash_after_breaks_the_body(
    fake_backend: FakeBackend, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10), pytest.raises(httpx.RemoteProtocolError):
        await client.post(
            f"{fake_backend.url}/v1/chat/completions",
            json={"stream": True, "fake": {"crash_after": 1}},
        )


async def test_status_directive_uses_the_dialect(
    fake_backend: FakeBackend, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        openai = await client.post(
            f"{fake_backend.url}/v1/chat/completions", json={"fake": {"status": 429}}
        )
        anthropic = await client.post(
            f"{fake_backend.url}/v1/messages", json={"fake": {"status": 529}}
        )
    assert openai.status_code == 429
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert anthropic.status_code == 529
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "fake error 529"},
    }


async def test_process_mode(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "tests.fake_backend", "--models", "a,b"],
                cwd=REPO,
                stdout=-1,
                check=False,
            )  # -1: subprocess.PIPE
        )
        assert proc.stdout is not None
        first = b""
        while not first.endswith(b"\n"):
            first += await proc.stdout.receive_some(1)
        url = first.decode().strip().removeprefix("FAKE_BACKEND_URL=")
        assert first.decode().startswith("FAKE_BACKEND_URL=http://127.0.0.1:")
        put = await client.put(f"{url}/_control/models", json={"models": ["c"]})
        models = (await client.get(f"{url}/v1/models")).json()
        await client.post(f"{url}/v1/chat/completions", json={"model": "c"})
        log = (await client.get(f"{url}/_control/log")).json()
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    assert put.status_code == 200
    assert [m["id"] for m in models["data"]] == ["c"]
    assert [entry["path"] for entry in log] == ["/v1/models", "/v1/chat/completions"]
    assert log[1]["json"] == {"model": "c"}
    assert log[1]["finished_at"] is not None
    json.dumps(log)
